"""A small HTTP/1.1 client for Connect unary calls: POST one body, read one response.

Why not httpx for these: a batch of events is one POST, and httpx spends over a
millisecond of CPU on each here (URL and header models, h11's state machine, anyio),
this client a tenth of that (bench/bench_http.py) — at 1000 events per request, the
difference was more than the upb floor of an event.
This client does what a unary call needs and nothing else: keep-alive connections,
plain or TLS; a request with Content-Length; a response delimited by Content-Length,
chunked encoding or the end of the connection. ConnectTransport keeps httpx for server
streaming and for proxies.

What a server sends is bounded, whoever the server is: the head (MAX_HEAD_BYTES), a
successful body (the caller's `max_body`, also once gzip is inflated: a gzip bomb is
inflated no further), an error body (a few KiB: it is only quoted, or parsed as a Connect
error); the rest is never read and the connection is closed. Anything that is not
well-formed HTTP/1.1 (RFC 9112, strictly) raises HTTPProtocolError, and the connection
is closed. The caller's timeout covers all of it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from pug.transports.base import ERROR_BODY_LIMIT, QUOTE_BODY_LIMIT, ResponseTooLarge

# The longest status line plus headers a response may have (a Connect error's details
# travel in the body, not in headers); trailers of a chunked body get as much.
MAX_HEAD_BYTES = 64 * 1024
# Interim responses (100 Continue, 103 Early Hints) accepted before the real one.
MAX_INTERIM_RESPONSES = 8
_READ_SIZE = 64 * 1024

# RFC 9112, strictly: a three-digit status, header names that are tokens, values without
# control characters (but tab), chunk sizes in hex (16 digits at most: no negative, no
# `0x`, no `_`, no whitespace before the size). Checked on the head decoded as latin-1,
# where `[0-9]` still means ASCII digits only (`2²0` is no status).
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_HEADER_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):([^\x00-\x08\x0a-\x1f\x7f]*)")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")


class HTTPProtocolError(Exception):
    """The response is not HTTP/1.x, or the connection ended in the middle of it."""


class BodyTooLarge(HTTPProtocolError, ResponseTooLarge):
    """A successful response's body is over the caller's limit (the rest is not read)."""


class _NothingReceived(Exception):
    """A reused connection failed before any byte of the response arrived: the server
    had closed it while idle, so the request is sent again on a new connection."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes  # of an error answer: at most its first ERROR_BODY_LIMIT/QUOTE_BODY_LIMIT bytes
    complete: bool = True  # False: an error answer's body was longer than what was read


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

    async def post(
        self, path: str, headers: Iterable[tuple[str, str]], body: bytes, *, max_body: int
    ) -> Response:
        """POST `body` to `path`. A 200's body over `max_body` bytes (as sent, or once
        decompressed) raises BodyTooLarge; an error answer's body is read up to a few KiB
        (Response.complete). Raises OSError (ssl.SSLError included) or HTTPProtocolError;
        a connection that failed, was cancelled or was not read to its end is closed."""
        lines = [f"POST {path} HTTP/1.1", f"host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"content-length: {len(body)}\r\n\r\n")
        request = "\r\n".join(lines).encode("latin-1") + body
        async with self._slots:
            while True:
                connection, reused = await self._connection()
                self._busy.add(connection)
                try:
                    response, keep = await _exchange(connection, request, reused, max_body)
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


async def _exchange(
    connection: _Connection, request: bytes, reused: bool, max_body: int
) -> tuple[Response, bool]:
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
    interim = 0
    while 100 <= status < 200:  # an interim response (100 Continue): the real one follows
        interim += 1
        if interim > MAX_INTERIM_RESPONSES:
            raise HTTPProtocolError(f"more than {MAX_INTERIM_RESPONSES} interim responses")
        head = await _read_until(reader, b"\r\n\r\n", "the response's headers are too long")
        version, status, headers = _parse_head(head)
    keep = version == "1" and "close" not in headers.get("connection", "").lower()
    limit, cut = body_limit(status, headers.get("content-type"), max_body)
    body, complete = await _read_body(reader, headers, status, limit, cut)
    encoding = headers.get("content-encoding")
    if encoding is not None and encoding.lower() != "identity":
        body, complete = _decode(body, complete, encoding, limit, cut)
    return Response(status, headers, body, complete), keep and complete


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """The minor version ("0" or "1"), status and headers of a response head (status line
    + header lines + the blank line)."""
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise HTTPProtocolError(f"not an HTTP/1.x response: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        header = _HEADER_LINE.fullmatch(line)
        if header is None:
            raise HTTPProtocolError(f"malformed header line: {line[:80]!r}")
        name = header[1].lower()
        value = header[2].strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return match[1], int(match[2]), headers


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], status: int, limit: int, cut: bool
) -> tuple[bytes, bool]:
    """The body (at most `limit` bytes) and whether it is whole. Over `limit`: BodyTooLarge,
    or with `cut` the first `limit` bytes (the rest is left unread)."""
    if status in (204, 304):
        return b"", True
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.lower() != "chunked":
            raise HTTPProtocolError(f"unsupported transfer-encoding: {coding[:40]!r}")
        return await _read_chunked(reader, limit, cut)
    length_text = headers.get("content-length")
    if length_text is None:  # delimited by the end of the connection
        return await read_bounded(lambda: reader.read(_READ_SIZE), limit, cut)
    if not (length_text.isdigit() and length_text.isascii() and len(length_text) <= 18):
        raise HTTPProtocolError(f"bad content-length: {length_text[:40]!r}")
    length = int(length_text)
    if length <= limit:
        return await _read_exactly(reader, length), True
    if not cut:
        raise BodyTooLarge(f"the response is {length} bytes, over the limit of {limit}")
    return await _read_exactly(reader, limit), False


async def _read_chunked(reader: asyncio.StreamReader, limit: int, cut: bool) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await _read_until(reader, b"\r\n", "a chunk size line is too long")
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise HTTPProtocolError(f"bad chunk size: {line[:-2][:20]!r}")
        size = int(match[1], 16)
        if size == 0:
            break
        if total + size > limit:
            if not cut:
                raise BodyTooLarge(f"the response is over the limit of {limit} bytes")
            parts.append(await _read_exactly(reader, limit - total))
            return b"".join(parts), False
        parts.append(await _read_exactly(reader, size))
        total += size
        if await _read_exactly(reader, 2) != b"\r\n":
            raise HTTPProtocolError("a chunk does not end with CRLF")
    trailers = 0  # nothing a unary call needs: skipped, bounded like headers
    while (line := await _read_until(reader, b"\r\n", "a trailer is too long")) != b"\r\n":
        trailers += len(line)
        if trailers > MAX_HEAD_BYTES:
            raise HTTPProtocolError("the response's trailers are too long")
    return b"".join(parts), True


def body_limit(status: int, content_type: str | None, max_body: int) -> tuple[int, bool]:
    """How many bytes of a response's body to read (`max_body` of a 200, a few KiB of an
    error) and whether to cut the body there rather than fail with BodyTooLarge."""
    if status == 200:
        return max_body, False
    if content_type is not None and content_type.lower().startswith("application/json"):
        return ERROR_BODY_LIMIT, True  # a Connect error: its details are wanted
    return QUOTE_BODY_LIMIT, True  # only quoted: a few KiB are plenty


async def read_bounded(
    read: Callable[[], Awaitable[bytes]], limit: int, cut: bool
) -> tuple[bytes, bool]:
    """What `read` gives until it gives b"" (the end), and whether that is whole. Over
    `limit`: BodyTooLarge, or with `cut` the first `limit` bytes (the rest is left unread).
    Also how ConnectTransport reads a body through httpx."""
    parts: list[bytes] = []
    total = 0
    while chunk := await read():
        total += len(chunk)
        if total > limit:
            if not cut:
                raise BodyTooLarge(f"the response is over the limit of {limit} bytes")
            parts.append(chunk[: len(chunk) - (total - limit)])
            return b"".join(parts), False
        parts.append(chunk)
    return b"".join(parts), True


def decode_body(body: bytes, complete: bool, encoding: str, limit: int, cut: bool) -> bytes:
    """`body` decompressed (gzip; `identity`), at most `limit` bytes of output: a gzip bomb
    is never inflated whole. Over `limit`: BodyTooLarge, or with `cut` the first `limit`
    bytes. Raises HTTPProtocolError for another encoding or a body that is not gzip (for
    `cut`, an error body only quoted: whatever could be decoded, maybe nothing)."""
    return _decode(body, complete, encoding, limit, cut)[0]


def _decode(
    body: bytes, complete: bool, encoding: str, limit: int, cut: bool
) -> tuple[bytes, bool]:
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body, complete
    if coding not in ("gzip", "x-gzip"):
        if cut:
            return b"", complete
        raise HTTPProtocolError(f"unsupported content-encoding: {encoding[:40]!r}")
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while data:  # one gzip member after another (RFC 1952 allows several)
            inflater = zlib.decompressobj(wbits=31)
            chunk = inflater.decompress(data, limit - size + 1)
            size += len(chunk)
            if size > limit:
                if not cut:
                    raise BodyTooLarge(
                        f"the response is over the limit of {limit} bytes once decompressed"
                    )
                out.append(chunk[: len(chunk) - (size - limit)])
                return b"".join(out), False
            out.append(chunk)
            if not inflater.eof:
                if cut:  # the start of an error body: what there is
                    return b"".join(out), False
                raise HTTPProtocolError("the response says gzip but is cut short")
            data = inflater.unused_data
    except zlib.error:
        if cut:
            return b"".join(out), False
        raise HTTPProtocolError("the response says gzip but is not") from None
    return b"".join(out), complete


async def _read_until(reader: asyncio.StreamReader, separator: bytes, too_long: str) -> bytes:
    try:
        return await reader.readuntil(separator)
    except asyncio.IncompleteReadError:
        raise HTTPProtocolError("the server closed the connection mid-response") from None
    except asyncio.LimitOverrunError:
        raise HTTPProtocolError(too_long) from None


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
