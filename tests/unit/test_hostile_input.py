"""Hostile input costs only itself: a value whose conversion raises, a self-referencing or
10 000-deep dict, a time outside what the server can store, a 10 MiB key, properties that
are not a mapping. Each is left out (or refused) with a warning naming the key, quoting at
most 200 characters of it, and the rest of the event (and the batch) is delivered.
"""

from __future__ import annotations

import datetime
import enum
import gc
import logging
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from protoc_helpers import GoogleMessages
from pug import BatchConfig, Pug, PugError, RetryPolicy, TrackedEvent, Undelivered
from pug._wire import protobuf as pb
from pug.errors import ECHO_LIMIT
from pug.testing import InMemoryTransport

UTC = datetime.UTC
PLUS_14 = datetime.timezone(datetime.timedelta(hours=14))


class Color(str, enum.Enum):  # noqa: UP042 (what applications write)
    RED = "red"


class Level(int, enum.Enum):
    HIGH = 3


class BrokenStr(str):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class BrokenTz(datetime.tzinfo):
    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
        raise RuntimeError("no offset")

    def dst(self, dt: datetime.datetime | None) -> datetime.timedelta:
        raise RuntimeError("no dst")

    def tzname(self, dt: datetime.datetime | None) -> str:
        return "broken"


class EvilKey(str):
    """A key whose equality raises: any dict lookup that compares it fails."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing")

    def __hash__(self) -> int:
        return hash(str.__str__(self))


def self_referencing() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    return loop


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"d": value}
    return value


@pytest.fixture
def transport() -> InMemoryTransport:
    return InMemoryTransport()


@pytest.fixture
def pug(transport: InMemoryTransport) -> Iterator[Pug]:
    client = Pug(api_key="prv_test", transport=transport, batch=BatchConfig(max_wait=60.0))
    yield client
    client.close(2)


def delivered(pug: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages) -> list[Any]:
    assert pug.flush(5)
    batch = google_pb2["sdk.events.v1.BatchCreateRequest"]
    return [e for _, body in transport.requests for e in batch.FromString(body).events]


BAD_VALUES: dict[str, tuple[object, str]] = {
    "self-referencing dict": (self_referencing(), "cannot be written as JSON"),
    "10 000-deep dict": (deep(10_000), "cannot be written as JSON"),
    "tzinfo that raises": (datetime.datetime(2024, 1, 1, tzinfo=BrokenTz()), "RuntimeError"),
    "aware datetime.min at +14:00": (
        datetime.datetime.min.replace(tzinfo=PLUS_14),
        "outside the years 1 to 9999 in UTC",
    ),
    "aware datetime.max at -14:00": (
        datetime.datetime.max.replace(tzinfo=datetime.timezone(-datetime.timedelta(hours=14))),
        "outside the years 1 to 9999 in UTC",
    ),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_one_bad_value_costs_only_itself(
    pug: Pug,
    transport: InMemoryTransport,
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    value, why = BAD_VALUES[case]
    with caplog.at_level(logging.WARNING, logger="pug"):
        pug.track("user_1", "hostile.value", {"ok": 1, "bad": value, "also_ok": "yes"})
        pug.track("user_1", "hostile.value", {"ok": 2})  # a neighbour in the same batch
    events = delivered(pug, transport, google_pb2)
    assert [sorted(e.custom_properties) for e in events] == [["also_ok", "ok"], ["ok"]]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("property 'bad' left out: ")
    assert why in warning
    assert len(warning) < 400
    assert pug.stats().dropped_invalid == 0


def test_a_key_whose_equality_raises_is_left_out_alone(
    pug: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    pug.track("user_1", "hostile.key", {"ok": 1})  # puts the entry cache in the way
    pug.track("user_1", "hostile.key", {EvilKey("ok"): 1, "fine": True})
    events = delivered(pug, transport, google_pb2)
    assert [sorted(e.custom_properties) for e in events] == [["ok"], ["fine"]]


def test_subclasses_are_sent_as_the_value_they_hold_at_top_level_and_nested(
    pug: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    pug.track(
        "user_1",
        "hostile.enum",
        {"color": Color.RED, "level": Level.HIGH, "broken": BrokenStr("x"), "nested": [Color.RED]},
    )
    (event,) = delivered(pug, transport, google_pb2)
    props = event.custom_properties
    assert props["color"].string_value == "red"  # not "Color.RED"
    assert props["level"].int_value == 3
    assert props["broken"].string_value == "x"  # its __str__ is never called
    assert props["nested"].string_value == '["red"]'


def test_a_huge_key_is_quoted_at_most_200_characters(
    pug: Pug, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "k" * (10 * 1024 * 1024)
    with caplog.at_level(logging.WARNING, logger="pug"):
        pug.track("user_1", "hostile.key", {1: "not a str key", "$" + huge: 1})
        pug.track("user_1", huge, {})
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert all(len(m) < ECHO_LIMIT + 200 for m in messages), [len(m) for m in messages]
    assert messages[0] == "property 1 left out: keys must be strings, not int"
    assert messages[1].startswith("invalid event dropped: property key '$kkkk")
    assert messages[2].startswith("invalid event dropped: event 'kkkk")
    assert "encodes to 10485" in messages[2]
    assert "(10485763 characters)" in messages[1]


@pytest.mark.parametrize("properties", [["a", 1], "a=1", 42])
def test_properties_that_are_not_a_mapping_are_refused_plainly(
    pug: Pug, caplog: pytest.LogCaptureFixture, properties: object
) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        pug.track("user_1", "hostile.props", properties)  # type: ignore[arg-type]
        pug.track("user_1", "feature_used", properties)  # type: ignore[arg-type]
    expected = (
        "invalid event dropped: properties must be a mapping (a dict), "
        f"not {type(properties).__name__}"
    )
    assert [r.getMessage() for r in caplog.records] == [expected, expected]
    assert pug.stats().dropped_invalid == 2


def test_a_timestamp_outside_what_the_server_stores_is_refused_at_track(
    pug: Pug,
    transport: InMemoryTransport,
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        pug.track(
            "user_1",
            "hostile.time",
            {"n": 1},
            timestamp=datetime.datetime.min.replace(tzinfo=PLUS_14),
        )
        pug.track("user_1", "hostile.time", {"n": 2})
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("invalid event dropped: timestamp cannot be sent: ")
    assert "outside the years 1 to 9999 in UTC" in message
    assert [e.custom_properties["n"].int_value for e in delivered(pug, transport, google_pb2)] == [
        2
    ]


def test_a_str_subclass_distinct_id_is_accepted_cached_or_not(
    pug: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    class UserId(str):
        pass

    pug.track(UserId("user_7"), "hostile.id", {"n": 1})
    pug.track("user_7", "hostile.id", {"n": 2})
    pug.track(UserId("user_7"), "hostile.id", {"n": 3})
    events = delivered(pug, transport, google_pb2)
    assert [(e.distinct_id, e.custom_properties["n"].int_value) for e in events] == [
        ("user_7", 1),
        ("user_7", 2),
        ("user_7", 3),
    ]


def test_before_send_may_change_the_session_and_the_time(
    transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    session = str(uuid.UUID("01890000-0000-7000-8000-000000000001"))
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)

    def move(event: TrackedEvent) -> TrackedEvent:
        event.session_id = session
        event.occur_time = when
        return event

    pug = Pug(api_key="prv_test", transport=transport, before_send=move)
    try:
        pug.track("user_1", "hostile.hook", {"n": 1})
        (event,) = delivered(pug, transport, google_pb2)
    finally:
        pug.close(2)
    assert event.session_id == session
    assert event.occur_time.ToDatetime(tzinfo=UTC) == when


def test_an_identify_over_the_request_limit_is_refused_with_a_message(
    pug: Pug, transport: InMemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        pug.identify("user_1", {"blob": "x" * (2 * 1024 * 1024)})
        pug.identify("user_1", {"plan": "pro"})
    assert pug.flush(5)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("invalid identify dropped: identify encodes to 2097")
    assert message.endswith("-byte limit of one request: send fewer or smaller traits")
    assert [i.traits.fields["plan"].string_value for i in transport.identifies()] == ["pro"]


def retained_bytes(work: Callable[[], None]) -> int:
    """Bytes still allocated after `work` (the client alive): what its caches keep."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


class Discarding(InMemoryTransport):
    """Accepts every batch and keeps nothing (an InMemoryTransport records each request)."""

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        return pb.accept_all(request)


def test_caches_are_bounded_in_bytes_whatever_the_ids_and_kinds() -> None:
    # What stays allocated once everything is sent is what the client and encoder keep.
    pug = Pug(api_key="prv_test", transport=Discarding(), batch=BatchConfig(max_size=1000))

    def huge_ids() -> None:  # each event is refused (too large); its head must not stay
        for n in range(200):
            pug.track("u" * (1 << 20) + str(n), "too.big", {"n": 1})

    def many_kinds() -> None:  # one user, many kinds, long keys
        for n in range(40_000):
            pug.track("user_1", f"kind.{n}", {"k" * 600: n})
        assert pug.flush(10)

    pug.track("warm", "up", {"a": 1})  # the worker, the loop: not what is measured
    assert pug.flush(5)
    try:
        assert retained_bytes(huge_ids) < 4 * 1024 * 1024  # was 630 MB
        assert retained_bytes(many_kinds) < 8 * 1024 * 1024  # was 16 MB, growing with kinds
    finally:
        pug.close(1)


def test_large_events_dropped_for_a_full_queue_are_held_for_on_error_within_a_byte_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """150 events of 400 KB with the server down and an on_error that takes its time:
    memory stays within the queue's bound plus the share held for on_error; what does not
    fit is counted and logged, and the counts add up."""
    handed: list[int] = []
    slow = threading.Event()

    def on_error(error: PugError, items: list[Undelivered]) -> None:
        slow.wait(10)  # the first call holds the worker until the burst is over
        handed.append(len(items))

    transport = InMemoryTransport()
    transport.fail("unavailable", count=None)
    queue_bytes = 4 * 1024 * 1024
    pug = Pug(
        api_key="prv_test",
        transport=transport,
        batch=BatchConfig(max_size=10, max_wait=60, max_queue_bytes=queue_bytes),
        retry=RetryPolicy(base=60, cap=60),
        on_error=on_error,
    )
    # ~400 KB an event: 400 values of 1 000 characters (a value is cut at 1 024 bytes).
    props: dict[str, object] = {f"p{i}": "x" * 1000 for i in range(400)}
    gc.collect()
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="pug"):
            for n in range(150):  # 60 MB in all, 15 times the queue's bound
                pug.track("user_1", "big.event", {**props, "n": n})
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        slow.set()
    pug.close(5)
    stats = pug.stats()
    assert peak < queue_bytes * (1 + 1 / 8) + 4 * 1024 * 1024, peak  # was 60 MB
    lost = [
        r.getMessage() for r in caplog.records if "were not handed to on_error" in r.getMessage()
    ]
    assert lost, "the burst came faster than on_error took it"
    assert stats.enqueued == 150
    assert stats.sent + stats.failed + stats.dropped_queue_full == 150
    not_handed = sum(int(m.split()[0]) for m in lost)
    assert sum(handed) + not_handed == stats.failed + stats.dropped_queue_full
