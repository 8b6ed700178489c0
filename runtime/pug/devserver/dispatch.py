"""What both dev servers do with one call: check the key, answer from the fake, print
what arrived."""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeAlias

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


class EventPrinter:
    """One readable line per received event, and the JSONL file if asked for."""

    def __init__(self, out: IO[str], jsonl: Path | None) -> None:
        self.out = out
        self.jsonl = jsonl
        self._lock = threading.Lock()

    def __call__(self, method: str, body: bytes) -> None:
        if method != BATCH_CREATE:
            return
        from pug.proto.sdk.events.v1 import BatchCreateRequest

        for event in BatchCreateRequest.parse(body).events:
            props = {k: _plain(v) for k, v in event.custom_properties.items()}
            kind, distinct_id = escape(event.kind or ""), escape(event.distinct_id or "")
            line = f"{kind:<24} {distinct_id:<16} {json.dumps(props, default=str)}"
            record = {
                "event_id": event.event_id,
                "kind": event.kind,
                "distinct_id": event.distinct_id,
                "occur_time": event.occur_time.isoformat() if event.occur_time else None,
                "properties": props,
            }
            with self._lock:
                print(line, file=self.out, flush=True)
                if self.jsonl is not None:
                    with self.jsonl.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record, default=str) + "\n")


def escape(text: str) -> str:
    """`text` safe to print on a terminal line: each control or other unprintable character
    (escape sequences, `\\r`, newlines, bidi overrides) written as its Python escape (`\\x1b`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _plain(value: Any) -> object:
    for member in ("string_value", "int_value", "double_value", "bool_value", "timestamp_value"):
        found = getattr(value, member, None)
        if found is not None:
            return found.isoformat() if isinstance(found, datetime.datetime) else found
    return None


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
            answer = self.fake.handle(method, body)
        except PugError as exc:
            self._tell(method, body, exc)
            raise
        self.printer(method, body)
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
