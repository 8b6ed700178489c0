"""The transport interface, and what the network transports share.

A transport sends one serialized request to a method (`sdk.events.v1.EventsService/
BatchCreate`) and returns the serialized response, or raises `PugError` with the
Connect code name. Connect (`connect.py`, the default) and gRPC (`grpc.py`) are the
network transports; the in-memory one is for tests. All methods run on the client's
worker loop.

Beside the interface: the SDK's user agent, how much of an answer a transport reads, the
API key check, and the bookkeeping of open server streams and of what a fork leaves behind.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol, runtime_checkable

from pug._version import __version__

BATCH_CREATE = "sdk.events.v1.EventsService/BatchCreate"
IDENTIFY = "sdk.profiles.v1.ProfilesSDKService/Identify"
USER_AGENT = f"pug-python/{__version__}"

# What a forked child inherited from its parent's worker (event loop, connections, HTTP
# clients): held here for the child's whole life, never finalized. Finalizing them would
# act on state the child shares with the parent: closing a connection's transport
# removes its socket from the epoll set both processes share (the parent then never sees
# its response), and a TLS close would write close_notify into the parent's session.
INHERITED_FROM_PARENT: list[object] = []

# How much of a response the transports read (memory and time stay bounded whatever a
# server, a proxy or a captive portal sends). Over the limit, a call fails with the
# transient `resource_exhausted` (what connect-go and gRPC report for a message over the
# receiver's maximum), without reading the rest.
# - Ingestion (`sdk.*`): a BatchCreateResponse is two counts and a map of drop reasons, an
#   IdentifyResponse is empty; 64 KiB is hundreds of times what Pug sends.
# - Reads (`shared.*`): pages of profiles, activity and insights; 16 MiB (4 times gRPC's
#   default maximum) by default, `max_response_bytes=` on the transports changes it.
INGEST_RESPONSE_LIMIT = 64 * 1024
READ_RESPONSE_LIMIT = 16 * 1024 * 1024
# Of an error answer's body: a Connect error (JSON, with its details) is read up to
# ERROR_BODY_LIMIT; any other body (a proxy's HTML page) only up to QUOTE_BODY_LIMIT, for
# the first QUOTE_CHARS characters the error message quotes.
ERROR_BODY_LIMIT = 64 * 1024
QUOTE_BODY_LIMIT = 4 * 1024
QUOTE_CHARS = 200


@runtime_checkable
class Transport(Protocol):
    """Send requests to Pug. Implementations raise `PugError` for every failure."""

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        """One request, one response; `timeout` in seconds."""
        ...

    def stream(self, method: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        """A server-streaming call: each response message, in order."""
        ...

    async def aclose(self) -> None:
        """Release connections; called on the worker loop when the client closes."""
        ...

    def reset_after_fork(self) -> None:
        """Forget connections inherited from the parent process: never close them, put
        them in INHERITED_FROM_PARENT."""
        ...


class ResponseTooLarge(Exception):
    """A response (or one message of a stream) is over the transport's limit."""


def response_limit(method: str, read_limit: int) -> int:
    """The most bytes a response to `method` may have."""
    return INGEST_RESPONSE_LIMIT if method.startswith("sdk.") else read_limit


def check_response_limit(max_response_bytes: int) -> int:
    if not isinstance(max_response_bytes, int) or max_response_bytes < 1:
        raise ValueError("max_response_bytes must be a positive int")
    return max_response_bytes


def check_api_key(api_key: object) -> str:
    """`api_key` if it can be sent as a header value (what both transports send it as);
    ValueError otherwise, never echoing it (it may be a secret with a stray character)."""
    if not isinstance(api_key, str) or not api_key:
        raise ValueError("api_key must be a non-empty str")
    if api_key.isascii() and api_key.isprintable() and " " not in api_key:
        return api_key
    if api_key != api_key.strip():
        raise ValueError(
            "api_key must be printable ASCII with no spaces: it starts or ends with "
            "whitespace (a newline read with it from a file?)"
        )
    raise ValueError("api_key must be printable ASCII with no spaces")


class OpenStreams:
    """A transport's server streams that have not ended, closed with the transport.

    The worker closes the transport last thing on its loop. A stream still open then (one a
    caller left without closing it, or whose close was still on its way) would otherwise be
    closed by a task the stopped loop never runs: "Task was destroyed but it is pending!".
    Streams are made on the caller's thread and closed on the worker's, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[AsyncGenerator[bytes, None]] = weakref.WeakSet()

    def add(self, stream: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        with self._lock:
            self._streams.add(stream)
        return stream

    async def aclose(self) -> None:
        with self._lock:
            streams, self._streams = list(self._streams), weakref.WeakSet()
        for stream in streams:
            # RuntimeError: a step of it is running (a read still in flight at close).
            with contextlib.suppress(Exception):
                await stream.aclose()

    def forget(self) -> None:
        """After a fork: the parent's streams are the parent's."""
        with self._lock:
            self._streams = weakref.WeakSet()
