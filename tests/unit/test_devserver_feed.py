"""The dev server's page feed: the byte-bounded store, the batched and sampled updates a page
reads, rejections with the rule and event they name; and the catalog the page shows."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from pug.devserver.catalog import catalog
from pug.devserver.feed import SAMPLE, Feed, Filter
from pug.errors import PugError
from pug.proto.common.v1 import PropertyValue
from pug.proto.sdk.events.v1 import BatchCreateRequest, Event
from pug.testing import FakePug
from pug.transports.base import BATCH_CREATE


def batch(*events: tuple[str, str], start: int = 0) -> bytes:
    return bytes(
        BatchCreateRequest(
            events=[
                Event(
                    event_id=f"0190a5f0-0000-7000-8000-{start + n:012d}",
                    distinct_id=distinct_id,
                    kind=kind,
                    session_id="0190a5f0-0000-7000-8000-aaaaaaaaaaaa",
                    occur_time=datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC),
                    custom_properties={"n": PropertyValue(int_value=start + n)},
                )
                for n, (distinct_id, kind) in enumerate(events)
            ]
        )
    )


def accept(feed: Feed, body: bytes) -> None:
    """What the dispatcher tells the feed of a batch the fake accepted."""
    feed(BATCH_CREATE, body, None, FakePug().handle_batch(body)[1])


def parse(message: bytes) -> tuple[str, dict[str, Any]]:
    """An SSE message's event name and JSON data."""
    lines = message.decode().splitlines()
    assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
    return lines[0].removeprefix("event: "), json.loads(lines[1].removeprefix("data: "))


def test_an_event_is_recorded_as_the_server_stores_it() -> None:
    feed = Feed()
    accept(feed, batch(("user_1", "a.b")))
    feed("sdk.profiles.v1.ProfilesService/Identify", b"", None, [])  # not an event batch
    [entry] = feed.recent(Filter())
    assert entry == {
        "type": "event",
        "seq": 1,
        "received": entry["received"],
        "event_id": "0190a5f0-0000-7000-8000-000000000000",
        "kind": "a.b",
        "distinct_id": "user_1",
        "occur_time": "2026-01-02T03:04:05.678000Z",
        "session_id": "0190a5f0-0000-7000-8000-aaaaaaaaaaaa",
        "cookieless": False,
        "properties": {"n": 0},
        "auto_properties": {},
    }
    assert feed.stats()["received"] == 1


def test_a_refused_batch_names_the_rule_and_the_event() -> None:
    body = batch(("user_1", "ok.kind"), ("user_2", "Not A Kind"))
    with pytest.raises(PugError) as refused:
        FakePug().handle(BATCH_CREATE, body)
    feed = Feed()
    feed(BATCH_CREATE, body, refused.value, [])
    [entry] = feed.recent(Filter())
    assert entry["type"] == "rejected"
    assert entry["code"] == "invalid_argument"
    assert entry["batch_size"] == 2
    [violation] = entry["violations"]
    assert violation["field"] == "events[1].kind"
    assert violation["rule_id"] == "string.pattern"
    assert violation["event"] == 1
    assert list(entry["events"]) == ["1"]
    assert entry["events"]["1"]["kind"] == "Not A Kind"
    assert feed.stats()["rejected"] == 1
    # A filter shows a rejection when one of its events matches.
    assert len(feed.recent(Filter(distinct_id="user_2"))) == 1
    assert feed.recent(Filter(distinct_id="user_3")) == []


def test_the_store_keeps_its_byte_bound_dropping_the_oldest() -> None:
    feed = Feed(max_bytes=20_000)
    for n in range(100):
        accept(feed, batch(("user", "k.k"), start=n))
    stats = feed.stats()
    assert stats["received"] == 100
    assert 0 < stats["held_bytes"] <= 20_000
    assert stats["dropped"] == 100 - stats["held"]
    assert [e["properties"]["n"] for e in feed.recent(Filter(), limit=3)] == [99, 98, 97]


def test_an_update_past_the_sample_size_sends_the_newest_and_counts_all() -> None:
    feed = Feed()
    stream = feed.updates(Filter(kind="k.k"))
    assert parse(next(stream))[1]["entries"] == []  # the snapshot
    events = [("u", "k.k")] * (SAMPLE + 70) + [("u", "other")] * 5
    accept(feed, batch(*events))
    name, update = parse(next(stream))
    assert name == "tick"
    assert update["matched"] == SAMPLE + 70
    assert update["sampled"] is True
    assert [e["properties"]["n"] for e in update["entries"]] == list(
        range(SAMPLE + 69, 69, -1)
    )  # the newest first
    assert update["stats"]["received"] == SAMPLE + 75
    assert update["skipped"] == 0


def test_a_page_behind_the_store_is_told_what_it_missed() -> None:
    feed = Feed(max_bytes=20_000)
    stream = feed.updates(Filter())
    next(stream)
    accept(feed, batch(*[("u", "k.k")] * 100))
    _, update = parse(next(stream))
    assert update["skipped"] == feed.stats()["dropped"] > 0
    assert update["matched"] == feed.stats()["held"]


def test_a_quiet_stream_writes_keep_alives_and_clear_restarts_pages() -> None:
    feed = Feed()
    stream = feed.updates(Filter(), keepalive=0.01)
    next(stream)
    assert next(stream) == b": keep-alive\n\n"
    accept(feed, batch(("u", "k.k")))
    assert parse(next(stream))[0] == "tick"
    feed.clear()
    name, data = parse(next(stream))
    assert name == "cleared"
    assert data["stats"]["received"] == data["stats"]["held"] == 0
    feed.close()
    assert list(stream) == []


def test_the_catalog_describes_each_well_known_event_and_its_fields() -> None:
    purchase = catalog()["purchase"]
    assert purchase["class"] == "pug.events.Purchase"
    assert purchase["description"] == (
        "A user completed a purchase and an order was placed (sent once payment is confirmed)."
    )
    assert purchase["fields"][1:3] == [
        {"name": "amount", "wire": "amount", "type": "float", "required": False, "rules": "> 0.0"},
        {"name": "currency", "wire": "currency", "type": "str", "required": False,
         "rules": "pattern ^[A-Z]{3}\\Z"},
    ]  # fmt: skip
    [duration] = [f for f in catalog()["chat_call_left"]["fields"] if f["name"] == "duration"]
    assert (duration["type"], duration["rules"]) == ("duration (seconds)", "≥ 0.0 s")
