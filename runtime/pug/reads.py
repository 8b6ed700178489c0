"""How the generated read API (`pug.resources`) reaches the server.

Reads run on the client's worker loop, where the transport and its connections live:
`Pug` waits for the result in the caller's thread, `AsyncPug` awaits it without
blocking the caller's loop. Errors are raised as `PugError`; nothing is retried.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import betterproto2

from pug import answers
from pug._ingest.lifecycle import wait_for
from pug.errors import PugError, error_for

if TYPE_CHECKING:
    from pug._ingest.core import Core

M = TypeVar("M", bound=betterproto2.Message)
T = TypeVar("T")


class Caller(Protocol):
    """What a synchronous resource needs from its client."""

    def unary(self, method: str, request: betterproto2.Message, response: type[M],
              timeout: float | None) -> M: ...  # fmt: skip

    def stream(self, method: str, request: betterproto2.Message, response: type[M],
               timeout: float | None) -> Iterator[M]: ...  # fmt: skip


class AsyncCaller(Protocol):
    """What an asyncio resource needs from its client."""

    async def unary(self, method: str, request: betterproto2.Message, response: type[M],
                    timeout: float | None) -> M: ...  # fmt: skip

    def stream(self, method: str, request: betterproto2.Message, response: type[M],
               timeout: float | None) -> AsyncIterator[M]: ...  # fmt: skip


def build_request(cls: type[M], request: M | None, fields: Mapping[str, Any]) -> M:
    """The request: the one given, or one built from the keyword arguments that were set."""
    given = {k: v for k, v in fields.items() if v is not None}
    if request is not None:
        if given:
            raise TypeError(f"pass either request= or keyword arguments, not both: {sorted(given)}")
        return request
    return cls(**given)


def present(value: T | None, method: str, field: str) -> T:
    """An unwrapped response field; a response without it is the server's error."""
    if value is None:
        raise error_for("internal", f"{method} answered without {field}")
    return value


class _Stream:
    """A transport stream stepped from the caller's thread or loop: each step and the close
    run on the worker loop, one at a time (a close that came while a cancelled step is still
    unwinding would find the generator running)."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._lock = asyncio.Lock()  # bound to the worker loop when first waited on
        # Set on the worker loop; read by the caller once a step's result is back.
        self.finished = False

    async def next(self) -> tuple[bool, bytes]:
        """One step; (False, b"") at the end (StopAsyncIteration cannot cross futures)."""
        async with self._lock:
            if self.finished:
                return False, b""
            try:
                return True, await anext(self._stream)
            except StopAsyncIteration:
                self.finished = True
                return False, b""
            except BaseException:
                self.finished = True  # an error ends an async generator
                raise

    async def aclose(self) -> None:
        async with self._lock:
            if not self.finished:
                self.finished = True
                close = getattr(self._stream, "aclose", None)
                if close is not None:
                    await close()


class _Reads:
    def __init__(self, core: Core) -> None:
        self._core = core

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        try:
            worker = self._core.worker_for_reads()
        except PugError:
            coro.close()  # never awaited: close it so Python does not warn
            raise
        if threading.current_thread() is worker.thread:
            coro.close()
            raise PugError(
                "failed_precondition", "Pug reads cannot run inside on_error or before_send"
            )
        try:
            loop = worker.ready_loop()
        except PugError:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _timeout(self, timeout: float | None) -> float:
        return self._core.timeout if timeout is None else timeout

    def _open_stream(self, method: str, request: betterproto2.Message,
                     timeout: float | None) -> _Stream:  # fmt: skip
        t = self._timeout(timeout)
        return _Stream(self._core.transport.stream(method, bytes(request), timeout=t))

    def _close_stream(self, stream: _Stream) -> concurrent.futures.Future[None] | None:
        """Close a stream the caller left before its end, on the worker loop; None when there
        is nothing to close (the stream ended, or the client is closed and ends it)."""
        if stream.finished:
            return None
        try:
            return self._submit(stream.aclose())
        except PugError:
            return None


class SyncReads(_Reads):
    """`Caller` for `Pug`: blocks the calling thread until the worker loop answers."""

    def unary(self, method: str, request: betterproto2.Message, response: type[M],
              timeout: float | None) -> M:  # fmt: skip
        t = self._timeout(timeout)
        call = self._core.transport.unary(method, bytes(request), timeout=t)
        return answers.parse(response, wait_for(self._submit(call), None))

    def stream(self, method: str, request: betterproto2.Message, response: type[M],
               timeout: float | None) -> Iterator[M]:  # fmt: skip
        stream = self._open_stream(method, request, timeout)
        try:
            while True:
                more, data = wait_for(self._submit(stream.next()), None)
                if not more:
                    return
                yield answers.parse(response, data)
        finally:
            closing = self._close_stream(stream)
            if closing is not None:
                # Wait for it, so it is not still pending if the client closes next.
                with contextlib.suppress(Exception):
                    wait_for(closing, self._timeout(timeout))


class AsyncReads(_Reads):
    """`AsyncCaller` for `AsyncPug`: awaits the worker loop from the caller's loop."""

    async def unary(self, method: str, request: betterproto2.Message, response: type[M],
                    timeout: float | None) -> M:  # fmt: skip
        t = self._timeout(timeout)
        call = self._core.transport.unary(method, bytes(request), timeout=t)
        return answers.parse(response, await asyncio.wrap_future(self._submit(call)))

    async def stream(self, method: str, request: betterproto2.Message, response: type[M],
                     timeout: float | None) -> AsyncIterator[M]:  # fmt: skip
        stream = self._open_stream(method, request, timeout)
        try:
            while True:
                more, data = await asyncio.wrap_future(self._submit(stream.next()))
                if not more:
                    return
                yield answers.parse(response, data)
        finally:
            closing = self._close_stream(stream)
            if closing is not None:
                # Awaited, so it is not still pending if the client closes next.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(closing), self._timeout(timeout))
