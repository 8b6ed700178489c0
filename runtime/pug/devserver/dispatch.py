"""What both dev servers do with one call: check the key, answer from the fake, print
what arrived; and what the fake took is stored once batches stop coming (`IdleSettler`)."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeAlias, cast

from pug._wire.reader import Timestamp, Value, WireEvent
from pug.errors import PugError, error_for
from pug.testing import FakePug
from pug.testing.fake.ingest import _HELD_BYTES, Arrival, entry_of
from pug.testing.fake.server import service_methods
from pug.transports.base import BATCH_CREATE

# (method, request body, the error answered or None, the events a BatchCreate accepted),
# after each unary call.
Watcher: TypeAlias = Callable[[str, bytes, "PugError | None", list[Arrival]], None]


class KeyCheck:
    """The real server's key rules: `sdk.*` takes `pub_` and `prv_` keys, `shared.*` only
    `prv_`; a fixed key, when given, is the only one accepted."""

    def __init__(self, fixed: str | None = None) -> None:
        self.fixed = fixed

    def __call__(self, method: str, key: str | None) -> None:
        if not key:
            raise error_for("unauthenticated", "x-api-key header not present")
        if self.fixed is not None:
            ok = key == self.fixed
        else:
            ok = key.startswith("prv_") or (key.startswith("pub_") and method.startswith("sdk."))
        if not ok:
            raise error_for("unauthenticated", "invalid API key")


# Custom-property entries printed, by their bytes: '"key": value' as JSON writes it in a
# dict. Bounded in bytes (entries and texts held, and what Python spends on the two objects
# and the slot, as the scanner's caches count it; emptied when full) and per entry.
_FRAGMENTS_BYTES = 1 << 20
_FRAGMENT_MAX_BYTES = 256


# Events printed a second at most by default: more than a terminal shows anyone. The rest
# are counted, and the count printed when the second ends.
LINES_PER_SECOND = 1000


class EventPrinter:
    """One readable line per received event (`event_line`), and the JSONL file if asked
    for: each batch is one write to each (the dev server must keep up with the SDK; a
    print and a flush per event cost more than reading the event), the file opened once.
    A line is made from its event's custom-property entries, each turned into JSON once
    (an entry repeats from event to event), without reading the event whole.

    At most `lines_per_second` events are printed a second (0: all); past it, a line
    after the second says how many were not. The JSONL file gets every event."""

    def __init__(
        self,
        out: IO[str],
        jsonl: Path | None,
        *,
        lines_per_second: int = LINES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self._jsonl = None if jsonl is None else jsonl.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._fragments: dict[bytes, str] = {}
        self._fragments_size = 0
        self.lines_per_second = lines_per_second
        self._clock = clock
        self._second = -math.inf  # when the current second began
        self._printed = 0  # events printed in it
        self._unprinted = 0  # events not printed in it
        self._timer: threading.Timer | None = None

    def __call__(self, events: list[Arrival]) -> None:
        if not events:
            return
        shown = self._admit(events) if self.lines_per_second > 0 else events
        lines = self._lines(shown)
        records = (
            None
            if self._jsonl is None
            else "".join([_json(_record(e.event())) + "\n" for e in events])
        )
        with self._lock:
            if lines:
                self.out.write(lines)
                self.out.flush()
            if self._jsonl is not None and records is not None:
                self._jsonl.write(records)
                self._jsonl.flush()

    def _admit(self, events: list[Arrival]) -> list[Arrival]:
        """The events of a batch printed within this second's budget; the rest counted,
        and told when the second ends (at the next batch, or by a timer if none comes)."""
        with self._lock:
            now = self._clock()
            if now - self._second >= 1.0:
                self._tell_unprinted()
                self._second, self._printed = now, 0
            shown = events[: max(0, self.lines_per_second - self._printed)]
            self._printed += len(shown)
            if len(shown) < len(events):
                self._unprinted += len(events) - len(shown)
                if self._timer is None:
                    self._timer = threading.Timer(self._second + 1.0 - now, self._second_ended)
                    self._timer.daemon = True
                    self._timer.start()
            return shown

    def _second_ended(self) -> None:
        with self._lock:
            self._tell_unprinted()

    def _tell_unprinted(self) -> None:
        """The line of the events not printed in the second that ended (lock held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unprinted:
            self.out.write(
                f"... {self._unprinted:,} more events not printed (at most "
                f"{self.lines_per_second:,} a second: --lines-per-second)\n"
            )
            self.out.flush()
            self._unprinted = 0

    def _lines(self, events: list[Arrival]) -> str:
        """A line per event, `event_line(event.event())`, from the entries' JSON kept by
        their bytes. One loop, its names bound once: printing every event, it runs for
        each."""
        known, fragment = self._fragments.get, self._fragment
        lines: list[str] = []
        for event in events:
            entries = event.custom
            if entries is None:  # read whole (not the SDK's layout, or a key sent twice)
                lines.append(event_line(event.event()) + "\n")
                continue
            parts = list(map(known, entries))
            if None in parts:  # an entry not printed lately
                parts = [
                    fragment(e) if p is None else p for p, e in zip(parts, entries, strict=True)
                ]
            kind, distinct_id = event.kind, event.distinct_id
            if not (kind.isprintable() and distinct_id.isprintable()):
                kind, distinct_id = escape(kind), escape(distinct_id)
            lines.append(
                f"{kind:<24} {distinct_id:<16} {{{', '.join(cast('list[str]', parts))}}}\n"
            )
        return "".join(lines)

    def _fragment(self, entry: bytes) -> str:
        key, value = entry_of(entry)
        text = f"{_json_text(key)}: {_json_value(value)}"
        if len(entry) <= _FRAGMENT_MAX_BYTES:
            if self._fragments_size > _FRAGMENTS_BYTES:
                self._fragments.clear()
                self._fragments_size = 0
            self._fragments[entry] = text
            self._fragments_size += len(entry) + len(text) + _HELD_BYTES
        return text

    def close(self) -> None:
        with self._lock:
            self._tell_unprinted()
            if self._jsonl is not None:
                self._jsonl.close()
                self._jsonl = None


# json.dumps with an argument builds an encoder per call; this one is built once.
_json = json.JSONEncoder(default=str).encode
_json_text = json.encoder.encode_basestring_ascii  # a str as `_json` writes it, in C
_JSON_CONSTANTS = {True: "true", False: "false", None: "null"}


def _json_value(value: Value) -> str:
    """A property value as `_json` writes it in a dict, without its Python-level calls
    for the common ones (a value among a new event's properties is written once)."""
    if isinstance(value, bool) or value is None:
        return _JSON_CONSTANTS[value]
    if isinstance(value, str):
        return _json_text(value)
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return repr(value)
    return _json(_plain_value(value))


def event_line(event: WireEvent) -> str:
    """The line printed for one event: kind, distinct id, custom properties as JSON."""
    kind, distinct_id = escape(event.kind or ""), escape(event.distinct_id or "")
    return f"{kind:<24} {distinct_id:<16} {_json(_plain(event.custom_properties))}"


def _record(event: WireEvent) -> dict[str, object]:
    """One event's JSONL record."""
    when = event.occur_time
    return {
        "event_id": event.event_id,
        "kind": event.kind,
        "distinct_id": event.distinct_id,
        "occur_time": None if when is None else when.to_datetime().isoformat(),
        "properties": _plain(event.custom_properties),
    }


def _plain(props: dict[str, Value]) -> dict[str, object]:
    """Property values as JSON takes them: timestamps as ISO 8601 (UTC)."""
    return {k: _plain_value(v) for k, v in props.items()}


def _plain_value(value: Value) -> object:
    return value.to_datetime().isoformat() if type(value) is Timestamp else value


def escape(text: str) -> str:
    """`text` safe to print on a terminal line: each control or other unprintable character
    (escape sequences, `\\r`, newlines, bidi overrides) written as its Python escape (`\\x1b`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# Seconds without a batch before what the fake took is stored: a burst's batches come
# back to back, milliseconds apart.
SETTLE_WHEN_IDLE = 0.02


class IdleSettler:
    """Stores what the fake took (`FakePug.settle`) once no batch has been taken for
    `idle` seconds, in its own thread (started with the first batch). Storing an event (its
    duplicate check, its owner) is a third of the dev server's work on it and no part of
    the answer: a burst's batches are answered without it, and the pause after the burst
    stores them. A read stores first, as does a batch past what may wait (the fake's
    bound), so nothing is ever missing."""

    def __init__(self, fake: FakePug, idle: float = SETTLE_WHEN_IDLE) -> None:
        self._fake = fake
        self._idle = idle
        self._changed = threading.Condition()
        self._taking = 0  # batches being taken now
        self._last = 0.0  # when the last one was taken (time.monotonic())
        self._unsettled = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="pug-dev-settle", daemon=True)

    @contextlib.contextmanager
    def taking(self) -> Iterator[None]:
        """Around taking one batch."""
        with self._changed:
            self._taking += 1
            if self._thread.ident is None and not self._stopped:
                self._thread.start()
        try:
            yield
        finally:
            with self._changed:
                self._taking -= 1
                self._last = time.monotonic()
                self._unsettled = True
                self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        if self._thread.ident is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while self._wait_for_pause():
            self._fake.settle()

    def _wait_for_pause(self) -> bool:
        """Wait until batches were taken and none for `idle` seconds: False once stopped."""
        with self._changed:
            while not self._stopped:
                if not self._unsettled or self._taking:
                    self._changed.wait()
                    continue
                left = self._last + self._idle - time.monotonic()
                if left <= 0:
                    self._unsettled = False
                    return True
                self._changed.wait(left)
            return False


class Dispatch:
    """What both servers do with one call: check the key, answer from the fake, print."""

    def __init__(self, fake: FakePug, keys: KeyCheck, printer: EventPrinter) -> None:
        self.fake = fake
        self.settler = IdleSettler(fake)
        self.keys = keys
        self.printer = printer
        # Called after every unary call the key check let through, answered or refused:
        # (method, request body, the error answered or None, the events a BatchCreate
        # accepted). The page's feed is one.
        self.watchers: list[Watcher] = []
        # Every RPC of the generated service definitions → whether it streams (the fake
        # finds its routes the same way).
        self.methods = {path: m.streams for path, m in service_methods().items()}

    def unary(self, method: str, key: str | None, body: bytes) -> bytes:
        self._check(method, key, stream=False)
        events: list[Arrival] = []
        try:
            if method == BATCH_CREATE:
                with self.settler.taking():
                    answer, events = self.fake.handle_batch(body)
            else:
                answer = self.fake.handle(method, body)
        except PugError as exc:
            self._tell(method, body, exc, events)
            raise
        self.printer(events)
        self._tell(method, body, None, events)
        return answer

    def _tell(
        self, method: str, body: bytes, error: PugError | None, events: list[Arrival]
    ) -> None:
        for watcher in self.watchers:
            watcher(method, body, error, events)

    def stream(self, method: str, key: str | None, body: bytes) -> list[bytes]:
        self._check(method, key, stream=True)
        return self.fake.handle_stream(method, body)

    def _check(self, method: str, key: str | None, *, stream: bool) -> None:
        if self.methods.get(method) is not stream:
            raise error_for("unimplemented", f"unknown method {method}")
        self.keys(method, key)
