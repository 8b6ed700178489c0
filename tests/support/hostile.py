"""Scripted hostile servers on 127.0.0.1, for the transport tests and the client's.

- `Hostile`: a raw HTTP/1.1 server whose `handler` answers each request by writing
  whatever it likes to the socket (endless bodies, gzip bombs, malformed HTTP, captive
  portals). Handlers for the common modes are below (`HTTP_HANDLERS`).
- `H2Server`: gRPC over h2c (the h2 library) whose `script` answers each request.

Both record what they received (`requests`: the raw head and body, and when it came, by
the monotonic clock) and let a test wait for the n-th request (`wait_for_requests`).
tests/conftest.py gives the `hostile` fixture (a started `Hostile`, stopped after the test).
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

if TYPE_CHECKING:
    from protoc_helpers import GoogleMessages

MIB = 1024 * 1024
GIB = 1024 * MIB
ZEROS = bytes(64 * 1024)
HTML_BLOCK = b"<p>overloaded</p>\n" * 3641  # ~64 KiB of a proxy's error page


@dataclass(frozen=True)
class Received:
    """One request as a server read it."""

    head: bytes  # HTTP/1.1: the request line and headers; gRPC: b""
    body: bytes  # as sent (gzip-compressed if the client compressed it)
    at: float  # time.monotonic() when it had been read whole
    connection: int  # the index of the connection it came on
    headers: dict[str, str] = field(default_factory=dict)  # gRPC: the request's headers

    def message(self) -> bytes:
        """The request's protobuf message: gzip undone (HTTP), gRPC's framing taken off."""
        if self.head:
            lines = self.head.lower().split(b"\r\n")
            return gzip.decompress(self.body) if b"content-encoding: gzip" in lines else self.body
        flags, length = struct.unpack(">BI", self.body[:5])
        assert flags == 0, "a compressed gRPC request"
        return self.body[5 : 5 + length]


def events_of(received: Received, messages: GoogleMessages) -> list[Any]:
    """The events of a BatchCreate request `received`, decoded with Google's protobuf."""
    batch: Any = messages["sdk.events.v1.BatchCreateRequest"].FromString(received.message())
    return list(batch.events)


class _Recorder:
    """What both servers share: a listener on 127.0.0.1, the threads they start, the
    requests received, and a wait for the n-th."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._received = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _record(self, received: Received) -> int:
        with self._received:
            self.requests.append(received)
            self._received.notify_all()
            return len(self.requests) - 1

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until `count` requests have been received; False if `timeout` passed."""
        with self._received:
            return self._received.wait_for(lambda: len(self.requests) >= count, timeout)


# --- a scripted raw HTTP/1.1 server ----------------------------------------------------------

# Answers the n-th request (the raw head and body it read) on `conn`, writing whatever it
# likes; returns whether the connection stays open for another request.
Handler = Callable[[socket.socket, int, bytes], bool]


class Hostile(_Recorder):
    """Accepts connections on 127.0.0.1 and lets `handler` answer each request."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.heads: list[bytes] = []
        self.connection_of: list[int] = []  # request n came on connection i
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self._conns: list[socket.socket] = []

    def __enter__(self) -> Hostile:
        self._start(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        index = 0
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            self._start(self._serve, conn, index)
            index += 1

    def _serve(self, conn: socket.socket, index: int) -> None:
        with conn, contextlib.suppress(OSError):
            buffer = b""
            while not self.stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:  # the client left mid-request
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                with self._lock:
                    self.heads.append(head)
                    self.connection_of.append(index)
                n = self._record(Received(head, body, time.monotonic(), index))
                if not self.handler(conn, n, head + b"\r\n\r\n" + body):
                    return


def request_message(request: bytes) -> bytes:
    """The protobuf message of a raw request as a Handler gets it (gzip undone)."""
    request_head, _, body = request.partition(b"\r\n\r\n")
    return Received(request_head, body, 0.0, 0).message()


def head(status: str, *headers: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode("latin-1")


def answer(data: bytes, keep: bool = True) -> Handler:
    """A handler that sends `data` to every request."""

    def send(conn: socket.socket, n: int, request: bytes) -> bool:
        conn.sendall(data)
        return keep

    return send


def endless(start: bytes, block: bytes, stop_after: float = 15.0) -> Handler:
    """Sends `start`, then `block` again and again until the client hangs up."""

    def send(conn: socket.socket, n: int, request: bytes) -> bool:
        conn.sendall(start)
        deadline = time.monotonic() + stop_after
        while time.monotonic() < deadline:
            conn.sendall(block)  # OSError once the client has closed: the server ends
        return False

    return send


def trickle(start: bytes, byte: bytes, every: float) -> Handler:
    """Sends `start`, then one byte every `every` seconds: never an end."""

    def send(conn: socket.socket, n: int, request: bytes) -> bool:
        conn.sendall(start)
        for _ in range(int(15 / every)):
            time.sleep(every)
            conn.sendall(byte)
        return False

    return send


_BOMB: bytes | None = None


def gzip_bomb() -> bytes:
    """1 MiB of gzip that inflates to 1 GiB of zeros (one member, a valid trailer)."""
    global _BOMB
    if _BOMB is None:
        zeros = bytes(MIB)
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
        crc = 0
        for _ in range(1024):
            crc = zlib.crc32(zeros, crc)
        end = deflate.flush(zlib.Z_FINISH)
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        _BOMB = header + block * 1024 + end + struct.pack("<II", crc, GIB & 0xFFFFFFFF)
    return _BOMB


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _gzip_bomb_answer(status: str, content_type: str) -> Handler:
    def send(conn: socket.socket, n: int, request: bytes) -> bool:
        bomb = gzip_bomb()
        conn.sendall(
            head(
                status,
                f"content-type: {content_type}",
                "content-encoding: gzip",
                f"content-length: {len(bomb)}",
            )
            + bomb
        )
        return True

    return send


# What a hostile server does, by mode; the tests pair each with the error it must become.
HTTP_HANDLERS: dict[str, Handler] = {
    "content-length of 1 GiB": endless(
        head("200 OK", "content-type: application/proto", f"content-length: {GIB}"), ZEROS
    ),
    "endless chunked 200": endless(
        head("200 OK", "content-type: application/proto", "transfer-encoding: chunked"),
        chunk(ZEROS),
    ),
    "endless 200 delimited by the end of the connection": endless(
        b"HTTP/1.0 200 OK\r\ncontent-type: application/proto\r\n\r\n", ZEROS
    ),
    "gzip bomb (1 MiB to 1 GiB)": _gzip_bomb_answer("200 OK", "application/proto"),
    "100 MiB 503 page": endless(
        head("503 Service Unavailable", "content-type: text/html", f"content-length: {100 * MIB}"),
        HTML_BLOCK,
    ),
    "endless chunked 503 page": endless(
        head("503 Service Unavailable", "content-type: text/html", "transfer-encoding: chunked"),
        chunk(HTML_BLOCK),
    ),
    "endless Connect error JSON": endless(
        head(
            "503 Service Unavailable",
            "content-type: application/json",
            "transfer-encoding: chunked",
        ),
        chunk(b'{"code": "unavailable", "message": "' + b"x" * 65536),
    ),
    "gzip bomb as a 503 page": _gzip_bomb_answer("503 Service Unavailable", "text/html"),
    "headers one byte at a time": trickle(b"HTTP/1.1 200 OK\r\n", b"x", 0.05),
    "body one byte at a time": trickle(
        head("200 OK", "content-type: application/proto", "content-length: 100"), b"x", 0.05
    ),
    "endless headers": endless(b"HTTP/1.1 200 OK\r\n", b"x-filler: " + b"y" * 1000 + b"\r\n"),
    "endless trailers": endless(
        head("200 OK", "content-type: application/proto", "transfer-encoding: chunked") + b"0\r\n",
        b"x-trailer: " + b"z" * 1000 + b"\r\n",
    ),
    "endless 100 Continue": endless(b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
}


# --- gRPC: a scripted HTTP/2 server --------------------------------------------------------


class H2Call:
    """One HTTP/2 connection of H2Server: the script's handle on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.requests: dict[int, dict[str, str]] = {}
        self.bodies: dict[int, bytes] = {}  # what each stream's request sent (gRPC-framed)
        self.ended: list[int] = []
        self.reset: set[int] = set()
        self.closed = False

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def pump(self, timeout: float | None) -> None:
        """Read what the client sent (waiting up to `timeout`) and act on it."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                self.requests[event.stream_id] = dict(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                stream_id = event.stream_id
                self.bodies[stream_id] = self.bodies.get(stream_id, b"") + event.data
                # Give the window back, so requests larger than 64 KiB come whole.
                self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.ended.append(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self.reset.add(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closed = True
        self.flush()


# Answers the request on `stream_id` of `call` (its headers and body are in the call).
Script = Callable[[H2Call, int], None]


class H2Server(_Recorder):
    """gRPC over h2c on 127.0.0.1; `script(call, stream_id)` answers each request."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script

    def __enter__(self) -> H2Server:
        self._start(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        index = 0
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._start(self._serve, sock, index)
            index += 1

    def _serve(self, sock: socket.socket, index: int) -> None:
        with sock, contextlib.suppress(OSError, h2.exceptions.ProtocolError):
            call = H2Call(sock)
            call.conn.initiate_connection()
            call.flush()
            deadline = time.monotonic() + 15
            while not call.closed and time.monotonic() < deadline:
                call.pump(0.1)
                while call.ended:
                    stream_id = call.ended.pop(0)
                    body = call.bodies.get(stream_id, b"")
                    headers = call.requests.get(stream_id, {})
                    self._record(Received(b"", body, time.monotonic(), index, headers))
                    self.script(call, stream_id)


def grpc_message(call: H2Call, stream_id: int) -> bytes:
    """The request message of a stream (the gRPC framing taken off; uncompressed)."""
    return Received(b"", call.bodies.get(stream_id, b""), 0.0, 0).message()


def grpc_answer(message: bytes) -> Script:
    """Answers every request with `message` and status OK."""

    def script(call: H2Call, stream_id: int) -> None:
        call.conn.send_headers(
            stream_id, [(":status", "200"), ("content-type", "application/grpc")]
        )
        call.conn.send_data(stream_id, struct.pack(">BI", 0, len(message)) + message)
        call.conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
        call.flush()

    return script


def grpc_endless_message(declared: int) -> Script:
    """Answers with a message that says it is `declared` bytes long, and sends zeros for as
    long as the client's flow-control window lets it (grpclib opens it as it buffers)."""

    def script(call: H2Call, stream_id: int) -> None:
        call.conn.send_headers(
            stream_id, [(":status", "200"), ("content-type", "application/grpc")]
        )
        call.conn.send_data(stream_id, struct.pack(">BI", 0, declared))
        call.flush()
        block = bytes(16384)
        deadline = time.monotonic() + 10
        while stream_id not in call.reset and not call.closed and time.monotonic() < deadline:
            if call.conn.local_flow_control_window(stream_id) >= len(block):
                call.conn.send_data(stream_id, block)
                call.flush()
            else:
                call.pump(0.05)

    return script


def grpc_refusal(status: int, message: str, pushback: str | None) -> Script:
    """A trailers-only gRPC error; its message may quote the request's headers (`{headers}`)."""

    def script(call: H2Call, stream_id: int) -> None:
        headers = [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", str(status)),
            ("grpc-message", message.format(headers=call.requests.get(stream_id))),
        ]
        if pushback is not None:
            headers.append(("grpc-retry-pushback-ms", pushback))
        call.conn.send_headers(stream_id, headers, end_stream=True)
        call.flush()

    return script
