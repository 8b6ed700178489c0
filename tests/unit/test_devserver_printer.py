"""The dev server's printer: one line per event, written once per batch (to the terminal
and the JSONL file), the file opened once."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

from pug._wire.reader import Timestamp, WireEvent
from pug.devserver.dispatch import EventPrinter, event_line


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _event(kind: str, distinct_id: str | None, **custom: object) -> WireEvent:
    return WireEvent(
        event_id=str(uuid.UUID(int=7)),
        kind=kind,
        distinct_id=distinct_id,
        occur_time=Timestamp(1_714_979_289, 5_000),
        session_id=None,
        cookieless=distinct_id is None,
        auto_properties={},
        custom_properties=dict(custom),  # type: ignore[arg-type]
    )


def test_a_batch_is_one_write_of_one_line_per_event(tmp_path: Path) -> None:
    out = _Writes()
    jsonl = tmp_path / "events.jsonl"
    printer = EventPrinter(out, jsonl)
    when = Timestamp(0, 1_000)
    printer([_event("a", "u1", n=1), _event("b", None, t=when), _event("a", "u1", n=1)])
    printer([_event("c", "u2")])
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
    assert records[0] == {
        "event_id": str(uuid.UUID(int=7)),
        "kind": "a",
        "distinct_id": "u1",
        "occur_time": "2024-05-06T07:08:09.000005+00:00",
        "properties": {"n": 1},
    }


def test_the_jsonl_file_is_opened_once_and_appended_to(tmp_path: Path) -> None:
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text('{"earlier": true}\n')
    printer = EventPrinter(io.StringIO(), jsonl)
    printer([_event("a", "u1")])
    assert len(jsonl.read_text().splitlines()) == 2  # appended, and flushed per batch
    jsonl.unlink()
    printer([_event("b", "u1")])  # to the file opened at start (a reopened one: a new file)
    printer.close()
    assert not jsonl.exists()


def test_a_repeated_event_prints_its_own_line() -> None:
    """Lines are reused for events sharing their values, never for another event's."""
    shared = {"n": 1}
    first = _event("a", "u1")._replace(custom_properties=shared)
    other_kind = first._replace(kind="b")
    out = io.StringIO()
    EventPrinter(out, None)([first, other_kind, first])
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["a", "b", "a"]
    assert event_line(other_kind).startswith("b ")
