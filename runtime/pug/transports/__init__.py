"""Network transports: Connect over HTTP/1.1 (the default) and gRPC with grpclib."""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from pug._version import __version__
from pug.transport import Transport

USER_AGENT = f"pug-python/{__version__}"


@dataclass(frozen=True)
class BaseURL:
    """A checked `base_url`: scheme, host, port and an optional path prefix."""

    scheme: str
    host: str
    port: int
    prefix: str  # "" or "/something", no trailing slash

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_base_url(base_url: str) -> BaseURL:
    """Check `base_url` (`https://host[:port][/prefix]` or `http://…`); ValueError if bad."""
    if not isinstance(base_url, str) or not base_url:
        raise ValueError("base_url must be a non-empty string like https://api.example.com")
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    if not parts.hostname:
        raise ValueError(f"base_url has no host: {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"base_url must not have a query or fragment: {base_url!r}")
    if parts.username or parts.password:
        raise ValueError("base_url must not carry credentials; pass api_key instead")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"base_url has an invalid port: {base_url!r}") from None
    return BaseURL(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


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


def make_transport(name: str, base_url: str, api_key: str) -> Transport:
    """The transport named `name` ("connect" or "grpc") for `base_url`."""
    if name == "connect":
        from pug.transports.connect import ConnectTransport

        return ConnectTransport(base_url, api_key)
    if name == "grpc":
        from pug.transports.grpc import GrpcTransport

        return GrpcTransport(base_url, api_key)
    raise ValueError(f"unknown transport {name!r}: use 'connect', 'grpc' or a Transport")
