"""The dev server's page feed: what arrived (accepted events and refused batches), kept in a
byte-bounded store of recent entries, and read by each page in batched, sampled updates.

`Feed` is a `Dispatch` watcher. It keeps the events a batch brought as the fake took them
(`pug.testing.fake.ingest.Arrival`: an event's bytes and the fields a filter needs): an
event is read whole and turned into JSON only when a page is sent it, so a burst of
50 000 events/s costs the feed an append per event. A refused batch is read with
`pug._wire.reader.read_batch`, to show the events its violations name. The store holds the
newest entries up to `max_bytes` (estimated from their wire size); the oldest are dropped
first, and counted.

A page reads the feed through `Feed.updates(...)`, a generator of server-sent-event
messages: a snapshot of the newest matching entries, then one message per tick (at most
every `TICK` seconds) with what arrived since the last. Past `SAMPLE` entries in a tick only
the newest `SAMPLE` are sent, with the counts of all of them: the page says it samples. A
slow page blocks only its own generator; it never holds a backlog, as each tick starts
from the store's newest entry (what it skipped is counted and it is told).
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pug._wire.reader import Timestamp, Value, WireEvent, read_batch
from pug.errors import PugError
from pug.testing.fake.ingest import Arrival
from pug.transports.base import BATCH_CREATE

MAX_BYTES = 8 * 1024 * 1024  # the store's bound (estimated bytes held): ~5 000 events
TICK = 0.15  # seconds between two updates sent to a page
SAMPLE = 50  # entries sent a page per update at most (the newest)
SNAPSHOT = 200  # entries sent a page when it connects
KEEPALIVE = 15.0  # seconds of quiet after which a stream writes a comment
# What holding an entry costs, from its wire bytes: a refused batch's events are held
# decoded (the tuples, dicts and strings of each WireEvent; measured with tracemalloc, an
# event held 1 279 B for 182 wire bytes (no custom property), 1 581 B for 231 (3), 3 050 B
# for 510 (12)); an accepted event as an Arrival (its bytes, the strings of its id, kind
# and distinct id, and one bytes object per custom entry).
_BYTES_PER_WIRE_BYTE = 6
_BYTES_PER_EVENT = 300
_ARRIVAL_BYTES_PER_WIRE_BYTE = 3
_ARRIVAL_BYTES = 400
_EVENT_INDEX = re.compile(r"^events\[(\d+)\]")


@dataclass(frozen=True)
class Violation:
    """One rule a refused batch broke: the field path, the rule id, the server's message,
    and the index of the event it names (None for a rule of the whole batch)."""

    field: str
    rule_id: str
    message: str
    event: int | None


@dataclass(frozen=True)
class Rejection:
    """A batch the server refused, and why (`events` is empty if its body did not decode)."""

    code: str
    message: str
    violations: list[Violation]
    events: list[WireEvent]


class Entry(NamedTuple):
    seq: int
    received: float  # time.time()
    item: Arrival | Rejection
    size: int  # estimated bytes held


_new_entry = tuple.__new__  # Entry(...) without its Python-level __new__: one per event


class Filter(NamedTuple):
    """What a page asked to see: exact distinct id and kind, each None for any."""

    distinct_id: str | None = None
    kind: str | None = None

    def matches(self, item: Arrival | WireEvent | Rejection) -> bool:
        if isinstance(item, Rejection):
            return (self.distinct_id is None and self.kind is None) or any(
                self.matches(e) for e in item.events
            )
        return (self.distinct_id is None or item.distinct_id == self.distinct_id) and (
            self.kind is None or item.kind == self.kind
        )


class Feed:
    """The store of recent entries, filled by `Dispatch.watchers`, read by the pages."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: deque[Entry] = deque()
        self._bytes = 0
        self._seq = 0  # the newest entry's
        self.received = 0  # events accepted since the last clear
        self.rejected = 0  # batches refused since the last clear
        self.dropped = 0  # entries dropped from the store to keep it in its bound
        self._generation = 0  # bumped by clear(): pages start over
        self._changed = threading.Condition()
        self._closed = False

    # ---- filled by the dispatcher ----------------------------------------------------

    def __call__(
        self, method: str, body: bytes, error: PugError | None, accepted: list[Arrival]
    ) -> None:
        if method != BATCH_CREATE:
            return
        if error is None:
            each = _ARRIVAL_BYTES + _ARRIVAL_BYTES_PER_WIRE_BYTE * len(body) // max(
                len(accepted), 1
            )
            self._add(accepted, each, accepted=len(accepted))
            return
        try:
            events = read_batch(body)
        except ValueError:
            events = []
        size = _BYTES_PER_WIRE_BYTE * len(body) + _BYTES_PER_EVENT * len(events)
        rejection = Rejection(error.code, error.message, _violations(error), events)
        self._add([rejection], size, accepted=0)

    def _add(self, items: Sequence[Arrival | Rejection], each: int, *, accepted: int) -> None:
        """Append `items`, each held at an estimated `each` bytes; the oldest dropped past
        the bound."""
        now = time.time()
        new_entry = _new_entry
        with self._changed:
            seq = self._seq
            self._entries.extend(
                [new_entry(Entry, (seq + i, now, item, each)) for i, item in enumerate(items, 1)]
            )
            self._seq = seq + len(items)
            self._bytes += each * len(items)
            while self._bytes > self.max_bytes and self._entries:
                self._bytes -= self._entries.popleft().size
                self.dropped += 1
            self.received += accepted
            self.rejected += len(items) - accepted
            self._changed.notify_all()

    def clear(self) -> None:
        """Forget every entry and count; every page starts over."""
        with self._changed:
            self._entries.clear()
            self._bytes = self.received = self.rejected = self.dropped = 0
            self._generation += 1
            self._changed.notify_all()

    def close(self) -> None:
        """End every page's stream (the server is stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    # ---- read by the pages -----------------------------------------------------------

    def stats(self) -> dict[str, int]:
        with self._changed:
            return self._stats()

    def _stats(self) -> dict[str, int]:
        return {
            "received": self.received,
            "rejected": self.rejected,
            "held": len(self._entries),
            "held_bytes": self._bytes,
            "max_bytes": self.max_bytes,
            "dropped": self.dropped,
        }

    def _newest(self, since: int, want: Filter, limit: int) -> tuple[list[Entry], int]:
        """The newest `limit` matching entries after seq `since` (newest first), and how
        many matched in all. Called with the lock held."""
        found: list[Entry] = []
        matched = 0
        for entry in reversed(self._entries):
            if entry.seq <= since:
                break
            if want.matches(entry.item):
                matched += 1
                if len(found) < limit:
                    found.append(entry)
        return found, matched

    def updates(
        self, want: Filter, *, tick: float = TICK, keepalive: float = KEEPALIVE
    ) -> Iterator[bytes]:
        """A page's stream, as server-sent-event messages: `snapshot`, then `tick`s;
        `cleared` when the feed is cleared; a keep-alive comment after `keepalive` s of
        quiet (so that no idle timeout closes a page's stream). Ends when the feed closes."""
        with self._changed:
            generation = self._generation
            entries, matched = self._newest(0, want, SNAPSHOT)
            cursor = self._seq
            stats = self._stats()
        yield _message("snapshot", _update(entries, matched, stats))
        quiet_since = time.monotonic()
        while True:
            started = time.monotonic()
            with self._changed:
                self._changed.wait_for(
                    functools.partial(self._moved, cursor, generation),
                    timeout=max(0.0, quiet_since + keepalive - started),
                )
                if self._closed:
                    return
                if self._generation != generation:
                    generation, cursor = self._generation, self._seq
                    message = _message("cleared", {"stats": self._stats()})
                elif self._seq != cursor:
                    skipped = self._entries[0].seq - 1 - cursor if self._entries else 0
                    entries, matched = self._newest(cursor, want, SAMPLE)
                    cursor = self._seq
                    update = _update(entries, matched, self._stats())
                    update["skipped"] = max(0, skipped)  # dropped before this page saw them
                    message = _message("tick", update)
                else:
                    message = b": keep-alive\n\n"
            yield message
            quiet_since = time.monotonic()
            # Batching: what arrives during the rest of the tick goes in the next update.
            rest = tick - (time.monotonic() - started)
            if rest > 0:
                with self._changed:
                    self._changed.wait_for(lambda: self._closed, timeout=rest)

    def _moved(self, cursor: int, generation: int) -> bool:
        """Something for a page whose last update was at `cursor`, in `generation`."""
        return self._closed or self._seq != cursor or self._generation != generation

    def recent(self, want: Filter, limit: int = SNAPSHOT) -> list[dict[str, Any]]:
        """The newest matching entries as JSON-ready records (newest first)."""
        with self._changed:
            entries, _ = self._newest(0, want, limit)
        return [record(e) for e in entries]


def _violations(error: PugError) -> list[Violation]:
    out = []
    for detail in error.details or []:
        if not isinstance(detail, dict):
            continue
        field = str(detail.get("field", ""))
        index = _EVENT_INDEX.match(field)
        out.append(
            Violation(
                field,
                str(detail.get("rule_id", "")),
                str(detail.get("message", "")),
                int(index.group(1)) if index else None,
            )
        )
    return out


def _update(entries: list[Entry], matched: int, stats: dict[str, int]) -> dict[str, Any]:
    return {
        "entries": [record(e) for e in entries],
        "matched": matched,  # matching entries since the last update (or in the store)
        "sampled": matched > len(entries),
        "stats": stats,
    }


def _message(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# ---- entries as JSON-ready records ---------------------------------------------------------


def record(entry: Entry) -> dict[str, Any]:
    """An entry as the page shows it."""
    received = _iso(entry.received)
    if isinstance(entry.item, Rejection):
        rejection = entry.item
        named = {v.event for v in rejection.violations if v.event is not None}
        return {
            "type": "rejected",
            "seq": entry.seq,
            "received": received,
            "code": rejection.code,
            "message": rejection.message,
            "batch_size": len(rejection.events),
            "violations": [
                {"field": v.field, "rule_id": v.rule_id, "message": v.message, "event": v.event}
                for v in rejection.violations
            ],
            # The events the violations name, by their index in the batch.
            "events": {
                str(i): event_record(rejection.events[i])
                for i in sorted(named)
                if i < len(rejection.events)
            },
        }
    event = entry.item.event()
    return {"type": "event", "seq": entry.seq, "received": received, **event_record(event)}


def event_record(event: WireEvent) -> dict[str, Any]:
    """One event's fields and properties, as the server stores them."""
    return {
        "event_id": event.event_id,
        "kind": event.kind,
        "distinct_id": event.distinct_id,
        "occur_time": _timestamp(event.occur_time) if event.occur_time else None,
        "session_id": event.session_id,
        "cookieless": bool(event.cookieless),
        "properties": {k: _plain(v) for k, v in event.custom_properties.items()},
        "auto_properties": {k: _plain(v) for k, v in event.auto_properties.items()},
    }


def _plain(value: Value) -> object:
    if isinstance(value, Timestamp):
        return _timestamp(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    return value


def _timestamp(when: Timestamp) -> str:
    try:
        return when.to_datetime().isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError):
        return f"{when.seconds}s {when.nanos}ns (out of range)"


def _iso(seconds: float) -> str:
    when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
