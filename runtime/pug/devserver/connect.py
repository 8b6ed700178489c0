"""The dev server's Connect over HTTP/1.1: unary calls and server streams, on
`http.server`, with the bounds that keep a bad or hostile client from taking the machine
down: a request body's bytes (also once gzip is inflated), how long reading a request may
take, and how many connections are open at once. GET (and POST under /api/) go to the
page (`page`)."""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import socket
import struct
import sys
import threading
import time
import traceback
from email.message import Message
from typing import Any

from pug.devserver.dispatch import Dispatch, escape
from pug.devserver.page import Page
from pug.errors import PugError, error_for
from pug.transports._http11 import BodyTooLarge, HTTPProtocolError, decode_body

# Connect's HTTP status for each code (the Connect protocol's table).
_HTTP_STATUS = {
    "canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504,
    "not_found": 404, "already_exists": 409, "permission_denied": 403,
    "resource_exhausted": 429, "failed_precondition": 400, "aborted": 409,
    "out_of_range": 400, "unimplemented": 501, "internal": 500, "unavailable": 503,
    "data_loss": 500, "unauthenticated": 401,
}  # fmt: skip
_END_STREAM = 0x02
# How long a closing connection reads (and drops) what its client still sends.
_LINGER_SECONDS = 1.0


class Refusal(Exception):
    """A request refused before it reaches the fake: its HTTP status and Connect error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def body_length(headers: Message, bound: int) -> int:
    """The request body's length from `content-length`, refused when it is missing,
    malformed, contradicted or over `bound` (the body is then not read)."""
    if headers.get("transfer-encoding") is not None:
        raise Refusal(
            411, "unimplemented", "transfer-encoding is not supported: send content-length"
        )
    values = {v.strip() for h in headers.get_all("content-length") or () for v in h.split(",")}
    if not values:
        raise Refusal(411, "invalid_argument", "a POST needs a content-length")
    if len(values) > 1:
        raise Refusal(400, "invalid_argument", "conflicting content-length values")
    [value] = values
    if not (value.isascii() and value.isdigit()):
        raise Refusal(400, "invalid_argument", f"content-length is not a number: {value[:40]!r}")
    if len(value) > 18 or int(value) > bound:
        raise Refusal(
            413, "resource_exhausted", f"the body is over the dev server's limit of {bound} bytes"
        )
    return int(value)


def inflate(body: bytes, encoding: str, bound: int) -> bytes:
    """`body` decoded (gzip or identity), never inflated past `bound` bytes."""
    try:
        return decode_body(body, True, encoding, bound, False)
    except BodyTooLarge:
        raise Refusal(
            413, "resource_exhausted", f"the body is over {bound} bytes once decompressed"
        ) from None
    except HTTPProtocolError as exc:
        code = "unimplemented" if "unsupported" in str(exc) else "invalid_argument"
        raise Refusal(_HTTP_STATUS[code], code, str(exc).replace("response", "request")) from None


def unframe(body: bytes, bound: int) -> bytes:
    """The one message of a Connect streaming request's envelope (flags, length, message)."""
    if len(body) < 5:
        raise Refusal(400, "invalid_argument", "the request envelope is cut short")
    flags, length = struct.unpack_from(">BI", body)
    if length > bound:
        raise Refusal(
            413,
            "resource_exhausted",
            f"the message is over the dev server's limit of {bound} bytes",
        )
    if length != len(body) - 5:
        raise Refusal(
            400,
            "invalid_argument",
            f"the envelope says {length} bytes, the body has {len(body) - 5}",
        )
    return inflate(body[5:], "gzip", bound) if flags & 0x01 else body[5:]


class _TimedReader(io.RawIOBase):
    """The socket's reads, each allowed only until `deadline` (time.monotonic()): a
    request's head, or body, must arrive whole in time, not merely a byte now and then."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = float("inf")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took too long to arrive")
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer)
        except ConnectionResetError:  # the client is gone: as good as an end of file
            return 0


def connect_handler(
    dispatch: Dispatch, page: Page, *, max_body_bytes: int, idle_timeout: float
) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pug-devserver"
        # The head and the body are two writes: with Nagle on, the body would wait for
        # the client's delayed ACK of the head (40 ms a request on Linux).
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            self.rfile.close()
            self._reader = _TimedReader(self.connection)
            self.rfile = io.BufferedReader(self._reader)

        def handle_one_request(self) -> None:
            # The next request's head, from the end of the last one (or the connection's
            # start): silence and a trickle are cut alike.
            self._reader.deadline = time.monotonic() + idle_timeout
            super().handle_one_request()

        def parse_request(self) -> bool:
            if not super().parse_request():
                return False
            # The body gets its own window; writing the answer (or a long stream) is not
            # reading a request: a send only fails when the client stops reading for as long.
            self._reader.deadline = time.monotonic() + idle_timeout
            self.connection.settimeout(idle_timeout)
            return True

        def do_GET(self) -> None:
            page.get(self)

        def handle_expect_100(self) -> bool:
            if self.command == "POST":
                try:
                    body_length(self.headers, max_body_bytes)
                except Refusal as refusal:
                    self._refuse(refusal, close=True)
                    return False
            return super().handle_expect_100()

        def do_POST(self) -> None:
            method = self.path.lstrip("/").split("?")[0]
            try:
                length = body_length(self.headers, max_body_bytes)
            except Refusal as refusal:
                self._refuse(refusal, close=True)  # the body is not read: nothing else is
                return
            body = self.rfile.read(length)
            self.connection.settimeout(idle_timeout)
            if len(body) < length:
                self.close_connection = True  # the client left mid-body
                return
            if page.post(self):
                return
            try:
                body = inflate(body, self.headers.get("content-encoding", ""), max_body_bytes)
                key = self.headers.get("x-api-key")
                content_type = self.headers.get("content-type", "")
                if content_type == "application/connect+proto":
                    self._stream(method, key, unframe(body, max_body_bytes))
                elif content_type == "application/proto":
                    self._reply(200, "application/proto", dispatch.unary(method, key, body))
                else:
                    raise error_for("unknown", f"unsupported content type {content_type!r}")
            except Refusal as refusal:
                self._refuse(refusal, close=False)
            except PugError as exc:
                self._refuse(Refusal(_HTTP_STATUS.get(exc.code, 500), exc.code, exc.message))

        def _stream(self, method: str, key: str | None, request: bytes) -> None:
            try:
                messages = dispatch.stream(method, key, request)
                end: dict[str, object] = {}
            except PugError as exc:
                if exc.code == "unauthenticated" or exc.code == "unimplemented":
                    raise
                messages, end = [], {"error": {"code": exc.code, "message": exc.message}}
            parts = [struct.pack(">BI", 0, len(m)) + m for m in messages]
            trailer = json.dumps(end).encode()
            parts.append(struct.pack(">BI", _END_STREAM, len(trailer)) + trailer)
            self._reply(200, "application/connect+proto", b"".join(parts))

        def _refuse(self, refusal: Refusal, *, close: bool = False) -> None:
            error = json.dumps({"code": refusal.code, "message": refusal.message}).encode()
            self.close_connection = self.close_connection or close
            self._reply(refusal.status, "application/json", error)

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            if self.close_connection:
                self.send_header("connection", "close")
            # Head and body in one write (one send): http.server writes its buffered
            # head at end_headers(), then the body apart; a second send for every batch.
            self._headers_buffer.append(b"\r\n" + body)  # type: ignore[attr-defined]
            self.flush_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class ConnectServer(http.server.ThreadingHTTPServer):
    """The HTTP server, at most `max_connections` connections open at once: one more is
    answered 503 (Connect `unavailable`) and closed. A client's failure is one line on
    stderr, never a traceback."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        max_connections: int,
        linger_bytes: int,
    ) -> None:
        self.max_connections = max_connections
        self.linger_bytes = linger_bytes
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = len(self._open) >= self.max_connections
            if not full:
                self._open.add(request)
        if full:
            self._turn_away(request)
        else:
            super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        # Before the close: a client that sees its connection end sees its slot free.
        with self._lock:
            self._open.discard(request)
        try:
            request.shutdown(socket.SHUT_WR)
            # What the client still sends (a refused body) is read and dropped for a moment:
            # closing with it unread would reset the connection, and the client could lose
            # the answer that refused it.
            deadline, dropped = time.monotonic() + _LINGER_SECONDS, 0
            while dropped < self.linger_bytes and (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                chunk = request.recv(65536)
                if not chunk:
                    break
                dropped += len(chunk)
        except OSError:
            pass
        self.close_request(request)

    def _turn_away(self, request: socket.socket) -> None:
        error = json.dumps(
            {"code": "unavailable", "message": f"over {self.max_connections} connections"}
        ).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(error)}\r\nconnection: close\r\n\r\n"
        )
        request.setblocking(False)  # never wait on this client: the accept loop is shared
        with contextlib.suppress(OSError):
            request.recv(65536)  # what it sent already: unread, the close would be a reset
        with contextlib.suppress(OSError):
            request.send(head.encode() + error)
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exception()
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc and exc.__traceback__ else None
        place = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
        print(
            f"pug devserver: dropped a connection from {client_address[0]}: "
            f"{type(exc).__name__}{place}: {escape(str(exc))[:200]}",
            file=sys.stderr,
            flush=True,
        )
