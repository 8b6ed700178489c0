"""A small HTTP/1.1 client for Connect unary calls: POST one body, read one response.

Why not httpx for these: a batch of events is one POST, and httpx spends over a
millisecond of CPU on each here (URL and header models, h11's state machine, anyio),
this client a tenth of that (bench/bench_http.py) — at 1000 events per request, the
difference was more than the upb floor of an event.
This client does what a unary call needs and nothing else: keep-alive connections,
plain or TLS; a request with Content-Length; a response delimited by Content-Length,
chunked encoding or the end of the connection. ConnectTransport keeps httpx for server
streaming and for proxies.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

# The longest status line plus headers a response may have (a Connect error's details
# travel in the body, not in headers).
MAX_HEAD_BYTES = 64 * 1024


class HTTPProtocolError(Exception):
    """The response is not HTTP/1.x, or the connection ended in the middle of it."""


class _NothingReceived(Exception):
    """A reused connection failed before any byte of the response arrived: the server
    had closed it while idle, so the request is sent again on a new connection."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes


@dataclass(eq=False)  # kept in a set by identity
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        # The server closes idle connections; its FIN has usually arrived by now.
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class ConnectionPool:
    """Keep-alive connections to one origin, at most `max_connections` at once."""

    def __init__(
        self, host: str, port: int, *, tls: ssl.SSLContext | None, max_connections: int
    ) -> None:
        self.host = host
        self.port = port
        self._tls = tls
        self._host_header = (f"[{host}]" if ":" in host else host) + f":{port}"
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._slots = asyncio.Semaphore(max_connections)

    async def post(self, path: str, headers: Iterable[tuple[str, str]], body: bytes) -> Response:
        """POST `body` to `path`. Raises OSError (ssl.SSLError included) or
        HTTPProtocolError; a cancelled call closes its connection."""
        lines = [f"POST {path} HTTP/1.1", f"host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"content-length: {len(body)}\r\n\r\n")
        request = "\r\n".join(lines).encode("latin-1") + body
        async with self._slots:
            while True:
                connection, reused = await self._connection()
                self._busy.add(connection)
                try:
                    response, keep = await _exchange(connection, request, reused)
                except _NothingReceived:
                    continue  # a stale connection (closed in _exchange): try a new one
                except BaseException:
                    connection.close()  # its state is unknown: never reuse it
                    raise
                finally:
                    self._busy.discard(connection)
                if keep:
                    self._idle.append(connection)
                else:
                    connection.close()
                return response

    async def _connection(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable():
                return connection, True
            connection.close()
        reader, writer = await asyncio.open_connection(
            self.host,
            self.port,
            ssl=self._tls,
            server_hostname=self.host if self._tls is not None else None,
            limit=MAX_HEAD_BYTES,
        )
        return _Connection(reader, writer), False

    async def aclose(self) -> None:
        """Close every connection and wait (briefly) until each has been released."""
        connections = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for connection in connections:
            connection.close()
        for connection in connections:
            try:
                await asyncio.wait_for(connection.writer.wait_closed(), 1.0)
            except (OSError, TimeoutError):
                connection.writer.transport.abort()


async def _exchange(connection: _Connection, request: bytes, reused: bool) -> tuple[Response, bool]:
    """Send `request`, read the response; also whether the connection may be reused."""
    reader, writer = connection.reader, connection.writer
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError) as exc:
        nothing = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
        if reused and nothing:
            connection.close()
            raise _NothingReceived from exc
        if isinstance(exc, asyncio.IncompleteReadError):
            raise HTTPProtocolError("the server closed the connection mid-response") from None
        raise
    except asyncio.LimitOverrunError:
        raise HTTPProtocolError("the response's headers are too long") from None
    version, status, headers = _parse_head(head)
    while 100 <= status < 200:  # an interim response (100 Continue): the real one follows
        head = await _read_until(reader, b"\r\n\r\n")
        version, status, headers = _parse_head(head)
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if status in (204, 304):
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit():
            raise HTTPProtocolError(f"bad content-length: {length!r}")
        body = await _read_exactly(reader, int(length))
    else:  # delimited by the end of the connection
        body = await reader.read()
        keep = False
    if headers.get("content-encoding", "").lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error):
            raise HTTPProtocolError("the response says gzip but is not") from None
    return Response(status, headers, body), keep


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """The version, status and headers of a response head (status line + header lines)."""
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise HTTPProtocolError(f"not an HTTP/1.x response: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise HTTPProtocolError(f"malformed header line: {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return version, int(code), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await _read_until(reader, b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HTTPProtocolError(f"bad chunk size: {size_text[:20]!r}") from None
        if size == 0:
            while await _read_until(reader, b"\r\n") != b"\r\n":
                pass  # trailers: nothing a unary call needs
            return b"".join(parts)
        parts.append(await _read_exactly(reader, size))
        if await _read_exactly(reader, 2) != b"\r\n":
            raise HTTPProtocolError("a chunk does not end with CRLF")


async def _read_until(reader: asyncio.StreamReader, separator: bytes) -> bytes:
    try:
        return await reader.readuntil(separator)
    except asyncio.IncompleteReadError:
        raise HTTPProtocolError("the server closed the connection mid-response") from None
    except asyncio.LimitOverrunError:
        raise HTTPProtocolError("a response line is too long") from None


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise HTTPProtocolError("the server closed the connection mid-response") from None


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Certificate verification on (with `ca_bundle`'s CAs instead of the default ones)."""
    context = ssl.create_default_context(cafile=ca_bundle)
    context.set_alpn_protocols(["http/1.1"])
    return context
