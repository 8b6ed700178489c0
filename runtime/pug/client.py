"""`Pug` and `AsyncPug`: the clients a backend holds. Both wrap one `Core`.

pug = Pug(api_key="prv_…")
pug.track("user_42", Purchase(product_id="p1", amount=49.0, currency="USD"))
pug.identify("user_42", {"plan": "pro"})
pug.close()
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, Self, TypeVar

from pug._ingest.core import Core, OnError, Stats, TrackedEvent
from pug._ingest.spool import Spool
from pug.config import BatchConfig, RetryPolicy
from pug.event import PugEvent
from pug.reads import AsyncReads, SyncReads
from pug.transports.base import Transport
from pug.undelivered import Undelivered

if TYPE_CHECKING:
    import pug.resources as resources

DEFAULT_BASE_URL = "https://api.pugs.dev"


TransportChoice = Transport | Literal["connect", "grpc"] | None


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
    ) -> None:
        key = _api_key(api_key)
        self.base_url = base_url or os.environ.get("PUG_BASE_URL") or DEFAULT_BASE_URL
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self._core = Core(
            transport=_transport(transport, self.base_url, key, timeout),
            batch=batch or BatchConfig(),
            retry=retry or RetryPolicy(),
            timeout=timeout,
            on_error=on_error,
            before_send=before_send,
            strict=strict,
            spool=spool if spool is None or isinstance(spool, Spool) else Spool(spool),
        )

    def track(
        self,
        distinct_id: str,
        event: PugEvent | str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: datetime.datetime | None = None,
        session_id: str | None = None,
    ) -> None:
        """Queue one event; returns at once and never raises (unless `strict=True` and the
        event is invalid). `event` is a typed event or a kind string; `properties` are
        extra properties. Invalid input is logged on the `pug` logger and dropped alone."""
        self._core.track(distinct_id, event, properties, timestamp, session_id)

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
# import it on first use, so this module never imports generated code at load time.


class Pug(_Client):
    """The synchronous client: `track`, `identify`, `flush` and `close` never block on the
    network except `flush` and `close`, which wait for delivery up to their timeout.
    Reads (`profiles`, `activity`, `insights`) wait for the server's answer."""

    @functools.cached_property
    def profiles(self) -> resources.Profiles:
        """People: get, list, delete, data-subject deletion."""
        from pug.resources import Profiles

        return Profiles(SyncReads(self._core))

    @functools.cached_property
    def activity(self) -> resources.Activity:
        """Event feeds, the event explorer, heatmaps, per-profile stats."""
        from pug.resources import Activity

        return Activity(SyncReads(self._core))

    @functools.cached_property
    def insights(self) -> resources.Insights:
        """Trends, funnels, retention, segments."""
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
        from pug.resources import AsyncProfiles

        return AsyncProfiles(AsyncReads(self._core))

    @functools.cached_property
    def activity(self) -> resources.AsyncActivity:
        """Event feeds, the event explorer, heatmaps, per-profile stats."""
        from pug.resources import AsyncActivity

        return AsyncActivity(AsyncReads(self._core))

    @functools.cached_property
    def insights(self) -> resources.AsyncInsights:
        """Trends, funnels, retention, segments."""
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
        done = self._core.identify(external_id, traits, anonymous_id, device_id)
        return await asyncio.wrap_future(done)

    def bind(self, distinct_id: str) -> BoundPug[AsyncPug]:
        """A view of this client that tracks for one distinct id."""
        return BoundPug(self, distinct_id)

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; True once delivered or dead-lettered in time."""
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._core.flush_future()), timeout)
        except TimeoutError:
            return False

    async def close(self, timeout: float | None = 10.0) -> None:
        """Flush (one last attempt within `timeout`), dead-letter the rest, stop the worker."""
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
