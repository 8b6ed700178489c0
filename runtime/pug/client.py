"""`Pug` and `AsyncPug`: the clients a backend holds. Both wrap one `Core`.

pug = Pug(api_key="prv_…")
pug.track("user_42", Purchase(product_id="p1", amount=49.0, currency="USD"))
pug.identify("user_42", {"plan": "pro"})
pug.close()
"""

from __future__ import annotations

import datetime
import functools
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar, cast, overload

from pug._ingest.core import Core, OnError, Stats, TrackedEvent
from pug._wire.codegen_support import ENCODERS
from pug.config import BatchConfig, RetryPolicy
from pug.context import AddedProperties
from pug.event import PugEvent
from pug.transports.base import Transport
from pug.undelivered import Undelivered

if TYPE_CHECKING:
    import pug.resources as resources
    from pug._ingest.spool import Spool

logger = logging.getLogger("pug")

DEFAULT_BASE_URL = "https://api.pugs.dev"


TransportChoice = Transport | Literal["connect", "grpc"] | None
F = TypeVar("F", bound=Callable[..., Any])


def _api_key(api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get("PUG_API_KEY")
    if not key:
        raise ValueError("Pug needs an API key: pass api_key= or set PUG_API_KEY")
    if not isinstance(key, str) or not key.startswith("prv_"):
        # Never echo the key: say what is wrong with it, not what it is.
        raise ValueError("Pug needs a private API key (one that starts with 'prv_')")
    return key


def _transport(choice: TransportChoice, base_url: str, api_key: str, timeout: float) -> Transport:
    if choice is None or isinstance(choice, str):
        from pug.transports import make_transport

        return make_transport(choice or "connect", base_url, api_key)
    if not isinstance(choice, Transport):
        raise TypeError("transport must be 'connect', 'grpc' or a Transport instance")
    return choice


async def _flush_async(core: Core, timeout: float | None) -> bool:
    """`flush()` without blocking the caller's loop: True once delivered or dead-lettered
    in time."""
    import asyncio  # here: the caller's loop has imported it (Pug alone never needs it)

    try:
        return await asyncio.wait_for(asyncio.wrap_future(core.flush_future()), timeout)
    except TimeoutError:
        logger.warning("flush() timed out after %ss with events still queued", timeout)
        return False


class _Client:
    """What Pug and AsyncPug share: construction, track, bind, stats, repr."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        transport: TransportChoice = None,
        batch: BatchConfig | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        on_error: OnError | None = None,
        before_send: Callable[[TrackedEvent], TrackedEvent | None] | None = None,
        strict: bool = False,
        spool: str | os.PathLike[str] | Spool | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        key = _api_key(api_key)
        added = AddedProperties.of(properties) if properties else None  # a `$` key raises here
        self.base_url = base_url or os.environ.get("PUG_BASE_URL") or DEFAULT_BASE_URL
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        if spool is not None:
            from pug._ingest.spool import Spool  # only now: most clients have none

            if not isinstance(spool, Spool):
                spool = Spool(spool)
        self._core = Core(
            transport=_transport(transport, self.base_url, key, timeout),
            batch=batch or BatchConfig(),
            retry=retry or RetryPolicy(),
            timeout=timeout,
            on_error=on_error,
            before_send=before_send,
            strict=strict,
            spool=spool,
            properties=added,
        )

    @overload
    def track(
        self,
        event: PugEvent | str,
        properties: Mapping[str, Any] | None = None,
        /,
        *,
        distinct_id: str | None = None,
        timestamp: datetime.datetime | None = None,
        session_id: str | None = None,
    ) -> None: ...

    @overload
    def track(
        self,
        event: PugEvent | str,
        /,
        *,
        properties: Mapping[str, Any] | None,
        distinct_id: str | None = None,
        timestamp: datetime.datetime | None = None,
        session_id: str | None = None,
    ) -> None: ...

    @overload
    def track(
        self,
        distinct_id: str,
        event: PugEvent | str,
        /,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime.datetime | None = None,
        session_id: str | None = None,
    ) -> None: ...

    def track(
        self,
        first: Any,
        second: Any = None,
        /,
        properties: Mapping[str, Any] | None = None,
        *,
        distinct_id: str | None = None,
        timestamp: datetime.datetime | None = None,
        session_id: str | None = None,
    ) -> None:
        """Queue one event; returns at once and never raises (unless `strict=True` and the
        event is invalid).

        The forms, each typed (`typing.overload`):

        - `track(event)` and `track(event, properties)`: for the distinct id of the current
          `pug.context()` (or `distinct_id=` as a keyword);
        - `track(distinct_id, event)` and `track(distinct_id, event, properties)`.

        `event` is a typed event (`pug.events.Purchase(...)`, or a class of your own
        tracking plan) or a kind string (`"report.exported"`); `properties` are extra
        properties. `timestamp=` sets when it happened (default: now), `session_id=` a
        session other than the context's or the client's.

        Invalid input (no distinct id at all among it) is logged on the `pug` logger and
        dropped alone; `strict=True` raises `PugValidationError` instead."""
        second_type = type(second)  # exact types first: isinstance costs ~0.1 µs
        if (
            second_type is str
            or second_type in ENCODERS
            or (second is not None and second_type is not dict and isinstance(second, PugEvent))
        ):  # (distinct_id, event, ...)
            if distinct_id is not None:
                raise TypeError("track() got the distinct id twice (positional and keyword)")
            self._core.track(first, second, properties, timestamp, session_id)
            return
        if second is not None:  # (event, properties)
            if properties is not None:
                raise TypeError("track() got properties twice (positional and keyword)")
            properties = second
        self._core.track(distinct_id, first, properties, timestamp, session_id)

    def flushing(self, timeout: float = 5.0) -> Callable[[F], F]:
        """A decorator for a function after which events must be delivered (a serverless
        handler, a script's main, a CLI command): when it returns or raises, everything
        queued so far is flushed, waiting at most `timeout` seconds, and its result or
        exception passes through. Sync and async functions; an async one waits without
        blocking the loop."""
        core = self._core

        def decorate(func: F) -> F:
            if inspect.iscoroutinefunction(func):
                coroutine = cast(Callable[..., Awaitable[Any]], func)

                @functools.wraps(func)
                async def run_async(*args: Any, **kwargs: Any) -> Any:
                    try:
                        return await coroutine(*args, **kwargs)
                    finally:
                        await _flush_async(core, timeout)

                return cast(F, run_async)

            @functools.wraps(func)
            def run(*args: Any, **kwargs: Any) -> Any:
                try:
                    return func(*args, **kwargs)
                finally:
                    core.flush(timeout)

            return cast(F, run)

        return decorate

    def resend(self, items: Iterable[Undelivered]) -> None:
        """Queue again what `on_error` was handed, unchanged. Safe even if some of it did
        arrive (a request cut off by `close()`'s deadline): the server keeps one event per
        `event_id`. Returns at once, like `track()`."""
        self._core.resend(items)

    @property
    def session_id(self) -> str:
        """The UUIDv7 sent as `session_id` when a call does not give one."""
        return self._core.session_id

    def stats(self) -> Stats:
        """Counters: enqueued, sent, failed, dropped (queue full, invalid, by the server),
        retries, queue length."""
        return self._core.stats()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"


# The read facade (pug.resources) is generated on top of pug.reads: the properties below
# import both on first use, so this module never imports generated code at load time, nor
# betterproto2 (~40 ms) for a client that only tracks.


class Pug(_Client):
    """The synchronous client: `track`, `identify`, `flush` and `close` never block on the
    network except `flush` and `close`, which wait for delivery up to their timeout.
    Reads (`profiles`, `activity`, `insights`) wait for the server's answer."""

    @functools.cached_property
    def profiles(self) -> resources.Profiles:
        """People: get, list, delete, data-subject deletion."""
        from pug.reads import SyncReads
        from pug.resources import Profiles

        return Profiles(SyncReads(self._core))

    @functools.cached_property
    def activity(self) -> resources.Activity:
        """Event feeds, the event explorer, heatmaps, per-profile stats."""
        from pug.reads import SyncReads
        from pug.resources import Activity

        return Activity(SyncReads(self._core))

    @functools.cached_property
    def insights(self) -> resources.Insights:
        """Trends, funnels, retention, segments."""
        from pug.reads import SyncReads
        from pug.resources import Insights

        return Insights(SyncReads(self._core))

    def identify(
        self,
        external_id: str,
        traits: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | None = None,
        device_id: str | None = None,
    ) -> None:
        """Queue an identify (delivered with retries by the worker); never raises."""
        self._core.identify(external_id, traits, anonymous_id, device_id)

    def bind(self, distinct_id: str) -> BoundPug[Pug]:
        """A view of this client that tracks for one distinct id."""
        return BoundPug(self, distinct_id)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; True once it is delivered or dead-lettered."""
        return self._core.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush (one last attempt within `timeout`), dead-letter the rest, stop the worker."""
        self._core.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPug(_Client):
    """The asyncio client: `track` is the same non-blocking call; `identify`, `flush`,
    `close` and the reads are coroutines that wait without blocking the caller's loop."""

    @functools.cached_property
    def profiles(self) -> resources.AsyncProfiles:
        """People: get, list, delete, data-subject deletion."""
        from pug.reads import AsyncReads
        from pug.resources import AsyncProfiles

        return AsyncProfiles(AsyncReads(self._core))

    @functools.cached_property
    def activity(self) -> resources.AsyncActivity:
        """Event feeds, the event explorer, heatmaps, per-profile stats."""
        from pug.reads import AsyncReads
        from pug.resources import AsyncActivity

        return AsyncActivity(AsyncReads(self._core))

    @functools.cached_property
    def insights(self) -> resources.AsyncInsights:
        """Trends, funnels, retention, segments."""
        from pug.reads import AsyncReads
        from pug.resources import AsyncInsights

        return AsyncInsights(AsyncReads(self._core))

    async def identify(
        self,
        external_id: str,
        traits: Mapping[str, Any] | None = None,
        *,
        anonymous_id: str | None = None,
        device_id: str | None = None,
    ) -> bool:
        """Send an identify and wait for it: True if delivered, False if it was invalid or
        dead-lettered. Never raises."""
        import asyncio

        done = self._core.identify(external_id, traits, anonymous_id, device_id)
        return await asyncio.wrap_future(done)

    def bind(self, distinct_id: str) -> BoundPug[AsyncPug]:
        """A view of this client that tracks for one distinct id."""
        return BoundPug(self, distinct_id)

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; True once delivered or dead-lettered in time."""
        return await _flush_async(self._core, timeout)

    async def close(self, timeout: float | None = 10.0) -> None:
        """Flush (one last attempt within `timeout`), dead-letter the rest, stop the worker."""
        import asyncio

        await asyncio.to_thread(self._core.close, timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


ClientT = TypeVar("ClientT", Pug, AsyncPug)


class BoundPug(Generic[ClientT]):
    """`pug.bind("user_42")`: track for one distinct id without repeating it."""

    def __init__(self, client: ClientT, distinct_id: str) -> None:
        self.client: ClientT = client
        self.distinct_id = distinct_id

    def track(
        self,
        event: PugEvent | str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime.datetime | None = None,
        session_id: str | None = None,
    ) -> None:
        """`client.track(distinct_id, ...)` for the bound id."""
        self.client.track(
            self.distinct_id, event, properties, timestamp=timestamp, session_id=session_id
        )
