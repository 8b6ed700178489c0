"""InMemoryTransport: a transport that keeps every request in memory and can be told to
fail, for tests and benchmarks (`pug.testing` re-exports it; `pug.testing.FakePug` is an
in-memory Pug server built on it).

    transport = InMemoryTransport()
    pug = Pug(api_key="prv_test", transport=transport)
    pug.track("u1", Purchase(product_id="p1", amount=9.5))
    pug.flush()
    assert transport.events()[0].kind == "purchase"
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pug._wire import protobuf as pb
from pug.errors import PugError, error_for
from pug.transports.base import BATCH_CREATE, IDENTIFY

Handler = Callable[[str, bytes], bytes]
StreamHandler = Callable[[str, bytes], list[bytes]]


@dataclass
class _Failure:
    code: str
    message: str
    remaining: int | None  # None: until recover()


class InMemoryTransport:
    """A `Transport` that keeps what it receives in memory.

    - `requests`: (method, body) of every request that succeeded, in order;
      `attempts`: every request, failed ones included.
    - `fail(code, count=n)`: the next n requests raise `PugError(code)`; `count=None`
      fails until `recover()`. `latency` seconds are waited per request (a request
      whose timeout is shorter fails with `deadline_exceeded`).
    - `handler(method, body) -> response bytes` answers requests; the default accepts
      every event of a batch.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        stream_handler: StreamHandler | None = None,
        latency: float = 0.0,
    ) -> None:
        self.handler = handler
        self.stream_handler = stream_handler
        self.latency = latency
        self.requests: list[tuple[str, bytes]] = []
        self.attempts: list[tuple[str, bytes]] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self.closed = False

    def fail(self, code: str, *, count: int | None = 1, message: str = "injected failure") -> None:
        """Make the next `count` requests raise `PugError(code, message)` (`count=None`:
        every request until `recover()`). A permanent code (`permission_denied`,
        `invalid_argument`, ...) sends the events to `on_error`; a transient one
        (`unavailable`, ...) makes the client retry."""
        with self._lock:
            self._failures.append(_Failure(code, message, count))

    def recover(self) -> None:
        """Forget every injected failure: requests succeed again."""
        with self._lock:
            self._failures.clear()

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        await self._attempt(method, request, timeout)
        if self.handler is not None:
            return self.handler(method, request)
        if method == BATCH_CREATE:
            return pb.accept_all(request)
        return b""

    async def stream(self, method: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        await self._attempt(method, request, timeout)
        if self.stream_handler is None:
            raise PugError("unimplemented", f"no stream handler for {method}")
        for message in self.stream_handler(method, request):
            yield message

    async def _attempt(self, method: str, request: bytes, timeout: float) -> None:
        """Record the attempt; wait the latency; raise an injected failure."""
        if self.latency:
            await asyncio.sleep(min(self.latency, timeout))
            if self.latency > timeout:
                with self._lock:
                    self.attempts.append((method, request))
                raise PugError("deadline_exceeded", "the in-memory transport's latency")
        with self._lock:
            self.attempts.append((method, request))
            if self._failures:
                failure = self._failures[0]
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.pop(0)
                raise error_for(failure.code, failure.message)
            self.requests.append((method, request))

    async def aclose(self) -> None:
        self.closed = True

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    # Decoded views, through the generated stubs.
    def batches(self) -> list[list[Any]]:
        """The events of each BatchCreate request that succeeded, as protobuf Events."""
        from pug.proto.sdk.events.v1 import BatchCreateRequest

        with self._lock:
            bodies = [body for method, body in self.requests if method == BATCH_CREATE]
        return [BatchCreateRequest.parse(body).events for body in bodies]

    def events(self) -> list[Any]:
        """Every event delivered, in order, as `pug.proto.sdk.events.v1.Event`."""
        return [event for batch in self.batches() for event in batch]

    def identifies(self) -> list[Any]:
        """Every identify delivered, as `pug.proto.sdk.profiles.v1.IdentifyRequest`."""
        from pug.proto.sdk.profiles.v1 import IdentifyRequest

        with self._lock:
            bodies = [body for method, body in self.requests if method == IDENTIFY]
        return [IdentifyRequest.parse(body) for body in bodies]
