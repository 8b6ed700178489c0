"""The dev server's printer: one line per event, written once per batch (to the terminal
and the JSONL file), the file opened once; a line made from the event's property entries
is the line of the event read whole."""

from __future__ import annotations

import datetime
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

from pug import BatchConfig, Pug
from pug.devserver.dispatch import EventPrinter, event_line
from pug.testing import FakePug, InMemoryTransport
from pug.testing.fake.ingest import Arrival
from pug.transports.base import BATCH_CREATE

from tests.support.wire_batches import ld, vi

_SESSION = b"0190a5f0-0000-7000-8000-aaaaaaaaaaaa"


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _tracked(*calls: tuple[str, str, dict[str, Any]]) -> list[Arrival]:
    """What FakePug accepts of the batch the SDK sends for these track() calls."""
    transport = InMemoryTransport()
    pug = Pug(api_key="prv_test", transport=transport, batch=BatchConfig(max_size=1000))
    for distinct_id, kind, properties in calls:
        pug.track(distinct_id, kind, properties)
    pug.close()
    fake = FakePug()
    return [a for m, b in transport.requests if m == BATCH_CREATE for a in fake.handle_batch(b)[1]]


def _written(*events: bytes) -> list[Arrival]:
    """What FakePug accepts of a batch written by hand (not the SDK's layout)."""
    return FakePug().handle_batch(b"".join(ld(1, e) for e in events))[1]


def _cookieless(event_id: str, kind: str, **custom: bytes) -> bytes:
    entries = b"".join(ld(3, ld(1, k.encode()) + ld(2, v)) for k, v in custom.items())
    occur = ld(6, vi(1, 1_714_979_289) + vi(2, 5_000))
    return ld(1, event_id.encode()) + ld(5, kind.encode()) + occur + vi(8, 1) + entries


def test_a_batch_is_one_write_of_one_line_per_event(tmp_path: Path) -> None:
    out = _Writes()
    jsonl = tmp_path / "events.jsonl"
    printer = EventPrinter(out, jsonl)
    tracked = _tracked(("u1", "a", {"n": 1}), ("u1", "a", {"n": 1}))
    cookieless = _written(
        _cookieless("0190a5f0-0000-7000-8000-000000000007", "b", t=ld(5, vi(2, 1_000)))
    )
    printer([tracked[0], cookieless[0], tracked[1]])
    printer(_tracked(("u2", "c", {})))
    printer.close()
    assert out.writes == 2
    assert out.getvalue().splitlines() == [
        f"{'a':<24} {'u1':<16} " + '{"n": 1}',
        f"{'b':<24} {'':<16} " + '{"t": "1970-01-01T00:00:00.000001+00:00"}',
        f"{'a':<24} {'u1':<16} " + '{"n": 1}',
        f"{'c':<24} {'u2':<16} " + "{}",
    ]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["kind"] for r in records] == ["a", "b", "a", "c"]
    assert records[1] == {
        "event_id": "0190a5f0-0000-7000-8000-000000000007",
        "kind": "b",
        "distinct_id": None,
        "occur_time": "2024-05-06T07:08:09.000005+00:00",
        "properties": {"t": "1970-01-01T00:00:00.000001+00:00"},
    }


def test_a_line_from_the_entries_is_the_line_of_the_event_read_whole() -> None:
    """Every value the SDK sends, entries that repeat across events of other kinds and
    users, and text a terminal must not interpret (escaped)."""
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)
    values: dict[str, Any] = {
        "text": "héllo \"quoted\" \\ back", "empty": "", "long": "x" * 1024, "emoji": "🐶",
        "int": 3, "negative": -(2**63), "big": 2**63 - 1, "zero": 0, "true": True,
        "false": False, "float": 0.1, "whole": 2.0, "tiny": 5e-324, "huge": 1.7e308,
        "minus_zero": -0.0, "when": when, "\x1b[31mred": "\x1b[0m\r\n",
    }  # fmt: skip
    calls = [
        ("user_1", "order.completed", values),
        ("user_2", "page.viewed", values),
        ("\x1b]0;title\x07", "order.completed", {"int": 3, "text": "other"}),
        ("user_1", "order.completed", dict(reversed(values.items()))),
    ]
    arrivals = _tracked(*calls)
    out = io.StringIO()
    EventPrinter(out, None)(arrivals)
    assert all(a.custom is not None for a in arrivals)  # printed from their entries
    assert out.getvalue().splitlines() == [event_line(a.event()) for a in arrivals]
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_a_key_sent_twice_prints_as_the_server_keeps_it() -> None:
    """The last value, in the first one's place (a map entry replaced): read whole."""
    occur = ld(6, vi(1, 1_714_979_289))
    twice = (
        ld(1, b"0190a5f0-0000-7000-8000-000000000001") + occur + ld(4, b"u1") + ld(5, b"a")
        + ld(7, _SESSION)
        + ld(3, ld(1, b"k") + ld(2, vi(2, 1))) + ld(3, ld(1, b"j") + ld(2, vi(2, 2)))
        + ld(3, ld(1, b"k") + ld(2, vi(2, 3)))
    )  # fmt: skip
    (arrival,) = _written(twice)
    assert arrival.custom is None
    out = io.StringIO()
    EventPrinter(out, None)([arrival])
    assert out.getvalue() == f"{'a':<24} {'u1':<16} " + '{"k": 3, "j": 2}\n'


def test_the_jsonl_file_is_opened_once_and_appended_to(tmp_path: Path) -> None:
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text('{"earlier": true}\n')
    printer = EventPrinter(io.StringIO(), jsonl)
    printer(_tracked(("u1", "a", {})))
    assert len(jsonl.read_text().splitlines()) == 2  # appended, and flushed per batch
    jsonl.unlink()
    printer(_tracked(("u1", "b", {})))  # to the file opened at start (a reopened one: a new file)
    printer.close()
    assert not jsonl.exists()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_past_its_lines_a_second_the_printer_counts_and_says_how_many_it_did_not_print(
    tmp_path: Path,
) -> None:
    out, clock, jsonl = io.StringIO(), _Clock(), tmp_path / "events.jsonl"
    printer = EventPrinter(out, jsonl, lines_per_second=3, clock=clock)
    events = _tracked(*[(f"u{n}", "k.k", {"n": n}) for n in range(12)])
    printer(events[:5])  # 3 printed, 2 not
    printer(events[5:7])  # the same second: none printed
    clock.now += 1.0
    printer(events[7:9])  # a new second: the count of the last one first
    printer(events[9:12])  # 1 printed, 2 not: told at close
    printer.close()
    said = "more events not printed (at most 3 a second: --lines-per-second)"
    assert out.getvalue().splitlines() == [
        *[event_line(e.event()) for e in events[:3]],
        f"... 4 {said}",
        *[event_line(e.event()) for e in events[7:10]],
        f"... 2 {said}",
    ]
    assert len(jsonl.read_text().splitlines()) == 12  # the file gets every event


class _Told(io.StringIO):
    """Sets `told` when a count of events not printed is written."""

    def __init__(self) -> None:
        super().__init__()
        self.told = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if "more events" in text:
            self.told.set()
        return written


def test_the_count_is_told_when_the_second_ends_without_another_batch() -> None:
    out = _Told()
    printer = EventPrinter(out, None, lines_per_second=1)
    started = time.monotonic()
    printer(_tracked(("u1", "k.k", {}), ("u2", "k.k", {})))
    assert out.told.wait(10)
    assert time.monotonic() - started >= 1.0  # when its second ended, not before
    assert out.getvalue().splitlines()[1:] == [
        "... 1 more events not printed (at most 1 a second: --lines-per-second)"
    ]
    printer.close()
    assert len(out.getvalue().splitlines()) == 2  # told once


def test_zero_lines_a_second_prints_every_event() -> None:
    out = io.StringIO()
    events = _tracked(*[(f"u{n}", "k.k", {}) for n in range(2000)])
    EventPrinter(out, None, lines_per_second=0)(events)
    assert len(out.getvalue().splitlines()) == 2000
