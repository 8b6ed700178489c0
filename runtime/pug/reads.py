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

from pug.errors import PugError, error_for

if TYPE_CHECKING:
    from pug._core import Core

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


def _parse(response: type[M], data: bytes) -> M:
    try:
        return response.parse(data)
    except Exception as exc:
        raise error_for("internal", f"unreadable {response.__name__}: {exc}") from None


async def _next(stream: AsyncIterator[bytes]) -> tuple[bool, bytes]:
    """One step of a stream; (False, b"") at its end (StopAsyncIteration cannot cross futures)."""
    try:
        return True, await anext(stream)
    except StopAsyncIteration:
        return False, b""


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
        return asyncio.run_coroutine_threadsafe(coro, worker.loop)

    def _timeout(self, timeout: float | None) -> float:
        return self._core.timeout if timeout is None else timeout

    def _open_stream(self, method: str, request: betterproto2.Message,
                     timeout: float | None) -> AsyncIterator[bytes]:  # fmt: skip
        return self._core.transport.stream(method, bytes(request), timeout=self._timeout(timeout))

    def _close_stream(self, stream: AsyncIterator[bytes]) -> None:
        close = getattr(stream, "aclose", None)
        if close is not None:
            with contextlib.suppress(PugError):  # the client closed: the loop ends it anyway
                self._submit(close())


class SyncReads(_Reads):
    """`Caller` for `Pug`: blocks the calling thread until the worker loop answers."""

    def unary(self, method: str, request: betterproto2.Message, response: type[M],
              timeout: float | None) -> M:  # fmt: skip
        t = self._timeout(timeout)
        call = self._core.transport.unary(method, bytes(request), timeout=t)
        return _parse(response, self._submit(call).result())

    def stream(self, method: str, request: betterproto2.Message, response: type[M],
               timeout: float | None) -> Iterator[M]:  # fmt: skip
        stream = self._open_stream(method, request, timeout)
        try:
            while True:
                more, data = self._submit(_next(stream)).result()
                if not more:
                    return
                yield _parse(response, data)
        finally:
            self._close_stream(stream)


class AsyncReads(_Reads):
    """`AsyncCaller` for `AsyncPug`: awaits the worker loop from the caller's loop."""

    async def unary(self, method: str, request: betterproto2.Message, response: type[M],
                    timeout: float | None) -> M:  # fmt: skip
        t = self._timeout(timeout)
        call = self._core.transport.unary(method, bytes(request), timeout=t)
        return _parse(response, await asyncio.wrap_future(self._submit(call)))

    async def stream(self, method: str, request: betterproto2.Message, response: type[M],
                     timeout: float | None) -> AsyncIterator[M]:  # fmt: skip
        stream = self._open_stream(method, request, timeout)
        try:
            while True:
                more, data = await asyncio.wrap_future(self._submit(_next(stream)))
                if not more:
                    return
                yield _parse(response, data)
        finally:
            self._close_stream(stream)
