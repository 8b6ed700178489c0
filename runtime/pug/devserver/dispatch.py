"""What both dev servers do with one call: check the key, answer from the fake, print
what arrived."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeAlias

from pug._wire.reader import Timestamp, Value, WireEvent
from pug.errors import PugError, error_for
from pug.testing import FakePug
from pug.testing.fake.server import service_methods
from pug.transports.base import BATCH_CREATE

# (method, request body, the error answered or None), after each unary call.
Watcher: TypeAlias = Callable[[str, bytes, "PugError | None"], None]


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


# Lines kept for events that repeat: bounded in entries (each one event's, its line at most
# a few times the event's bytes, which the reader bounds for events it shares).
_LINES_MAX = 1024


class EventPrinter:
    """One readable line per received event (`event_line`), and the JSONL file if asked
    for: each batch is one write to each (the dev server must keep up with the SDK; a
    print and a flush per event cost more than reading the event), the file opened once."""

    def __init__(self, out: IO[str], jsonl: Path | None) -> None:
        self.out = out
        self._jsonl = None if jsonl is None else jsonl.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._lines: dict[int, tuple[WireEvent, str]] = {}

    def __call__(self, events: list[WireEvent]) -> None:
        if not events:
            return
        lines = "".join([self._line(e) for e in events])
        records = (
            None if self._jsonl is None else "".join([_json(_record(e)) + "\n" for e in events])
        )
        with self._lock:
            self.out.write(lines)
            self.out.flush()
            if self._jsonl is not None and records is not None:
                self._jsonl.write(records)
                self._jsonl.flush()

    def _line(self, event: WireEvent) -> str:
        """`event_line`, made once for events that share their kind, distinct id and
        properties (`read_batch` gives them the same objects)."""
        custom = event.custom_properties
        seen = self._lines.get(id(custom))
        # `first` holds its dict, so an id found here is still that dict's.
        if seen is not None:
            first, line = seen
            if (
                first.custom_properties is custom
                and first.kind is event.kind
                and (first.distinct_id is event.distinct_id)
            ):
                return line
        line = event_line(event) + "\n"
        if len(self._lines) >= _LINES_MAX:
            self._lines.clear()
        self._lines[id(custom)] = (event, line)
        return line

    def close(self) -> None:
        with self._lock:
            if self._jsonl is not None:
                self._jsonl.close()
                self._jsonl = None


# json.dumps with an argument builds an encoder per call; this one is built once.
_json = json.JSONEncoder(default=str).encode


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
    return {k: v.to_datetime().isoformat() if type(v) is Timestamp else v for k, v in props.items()}


def escape(text: str) -> str:
    """`text` safe to print on a terminal line: each control or other unprintable character
    (escape sequences, `\\r`, newlines, bidi overrides) written as its Python escape (`\\x1b`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Dispatch:
    """What both servers do with one call: check the key, answer from the fake, print."""

    def __init__(self, fake: FakePug, keys: KeyCheck, printer: EventPrinter) -> None:
        self.fake = fake
        self.keys = keys
        self.printer = printer
        # Called after every unary call the key check let through, answered or refused:
        # (method, request body, the error answered or None). The page's feed is one.
        self.watchers: list[Watcher] = []
        # Every RPC of the generated service definitions → whether it streams (the fake
        # finds its routes the same way).
        self.methods = {path: m.streams for path, m in service_methods().items()}

    def unary(self, method: str, key: str | None, body: bytes) -> bytes:
        self._check(method, key, stream=False)
        try:
            if method == BATCH_CREATE:
                answer, events = self.fake.handle_batch(body)
            else:
                answer, events = self.fake.handle(method, body), []
        except PugError as exc:
            self._tell(method, body, exc)
            raise
        self.printer(events)
        self._tell(method, body, None)
        return answer

    def _tell(self, method: str, body: bytes, error: PugError | None) -> None:
        for watcher in self.watchers:
            watcher(method, body, error)

    def stream(self, method: str, key: str | None, body: bytes) -> list[bytes]:
        self._check(method, key, stream=True)
        return self.fake.handle_stream(method, body)

    def _check(self, method: str, key: str | None, *, stream: bool) -> None:
        if self.methods.get(method) is not stream:
            raise error_for("unimplemented", f"unknown method {method}")
        self.keys(method, key)
