"""Network transports: Connect over HTTP/1.1 (the default) and gRPC with grpclib."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import threading
import urllib.parse
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from pug._version import __version__
from pug.transport import Transport

USER_AGENT = f"pug-python/{__version__}"

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
# Characters of a caller's input (a bad base_url) that an error message shows.
ECHO_CHARS = 200


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


@dataclass(frozen=True)
class BaseURL:
    """A checked `base_url`: scheme, host, port and an optional path prefix."""

    scheme: str
    host: str  # ASCII: a DNS name (IDNA-encoded), an IPv4 or an IPv6 address
    port: int
    prefix: str  # "" or "/something", no trailing slash

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")


def display_url(url: str) -> str:
    """`url` as an error message may show it: `user:password@` and any query or fragment
    replaced by `[redacted]`, cut to ECHO_CHARS characters, quoted."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = len(rest)
    for mark in "?#":
        found = rest.find(mark)
        if 0 <= found < end:
            end = found
    if end < len(rest):  # a query may hold a key (`?api_key=…`)
        rest = rest[: end + 1] + "[redacted]"
    at = rest.rfind("@", 0, end)
    if at >= 0:  # credentials (however malformed the rest)
        rest = "[redacted]" + rest[at:]
    shown = scheme + sep + rest
    if len(shown) > ECHO_CHARS:
        return f"{shown[:ECHO_CHARS]!r}… ({len(shown)} characters)"
    return repr(shown)


def parse_base_url(base_url: str) -> BaseURL:
    """Check `base_url` (`https://host[:port][/prefix]` or `http://…`); ValueError if bad.

    Checked here, once, rather than failing at every request: the scheme (http or https),
    a host that can be resolved as given (a DNS name that IDNA can encode, an IPv4 or IPv6
    address), a port from 1 to 65535, no credentials, query or fragment, no control
    characters. Messages show the URL without credentials (display_url).
    """
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError("base_url must be a non-empty string like https://api.example.com")
    url = base_url.strip()
    shown = display_url(url)
    for index, char in enumerate(url):
        if not char.isprintable():  # a space is printable: refused in the host, quoted in the path
            raise ValueError(
                f"base_url must not contain control characters (one at index {index}): {shown}"
            )
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": an unbalanced or bad [address]
        raise ValueError(f"base_url has an invalid IPv6 address: {shown}") from None
    if parts.scheme not in ("http", "https") or not url.lower().startswith(parts.scheme + "://"):
        raise ValueError(f"base_url must start with http:// or https://, got {shown}")
    if "@" in parts.netloc:
        raise ValueError(
            f"base_url must not carry credentials (user:password@); pass api_key instead: {shown}"
        )
    if "?" in url or "#" in url:
        raise ValueError(f"base_url must not have a query or fragment: {shown}")
    if not parts.hostname:
        raise ValueError(f"base_url has no host: {shown}")
    # The port's text, read here: what urlsplit accepts (`+1`, ` 1`) varies by version.
    after_host = parts.netloc.rpartition("]")[2] if parts.netloc.startswith("[") else parts.netloc
    _, colon, port_text = after_host.partition(":")
    if not colon or not port_text:
        port = 443 if parts.scheme == "https" else 80
    elif (
        port_text.isdigit()
        and port_text.isascii()
        and len(port_text) <= 5
        and 0 < int(port_text) < 65536
    ):
        port = int(port_text)
    else:
        raise ValueError(f"base_url has an invalid port (1 to 65535): {shown}")
    return BaseURL(
        parts.scheme, _host(parts.netloc, parts.hostname, shown), port, parts.path.rstrip("/")
    )


def _host(netloc: str, hostname: str, shown: str) -> str:
    """The host in the ASCII form that DNS, TLS (SNI) and the Host header use."""
    if netloc.startswith("["):
        try:
            if "%" in hostname:  # a zone (`%eth0`): a Pug server is not link-local
                raise ValueError(hostname)
            ipaddress.IPv6Address(hostname)
        except ValueError:
            raise ValueError(f"base_url has an invalid IPv6 address: {shown}") from None
        return hostname
    try:
        ascii_host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(
            f"base_url's host is not a valid domain name (IDNA cannot encode it): {shown}"
        ) from None
    if not _HOST_NAME.fullmatch(ascii_host) or len(ascii_host) > 254:
        raise ValueError(f"base_url's host is not a valid domain name or address: {shown}")
    return ascii_host


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
