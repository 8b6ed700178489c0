"""The HTTP/1.1 client under ConnectTransport's unary calls, against scripted raw servers.

The e2e suite (test_transports_e2e.py) runs it against connectrpc on uvicorn, plain and
TLS. Here a bare TCP server on 127.0.0.1 answers with exactly the bytes a test scripts,
to cover what a well-behaved server rarely does: chunked bodies, `Connection: close`,
bodies delimited by the end of the connection, idle connections closed under the
client, truncated and non-HTTP answers, no answer at all. Each test checks what the
server received, byte for byte, and on how many connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from pug import BatchConfig, Pug, PugError
from pug._wire import protobuf as pb
from pug.transports._url import parse_base_url
from pug.transports.base import BATCH_CREATE
from pug.transports.connect import ConnectTransport, uses_proxy
from servers import RecordingHTTPServer

KEY = "prv_http11"
BODY = b"\x0a\x03abc"  # any bytes: the client does not look into them
DELIVERY = 3.0  # seconds; everything here is delivered in well under one


@dataclass
class Request:
    connection: int  # which accepted connection (0, 1, ...)
    head: bytes  # request line and headers, up to and including the blank line
    body: bytes


# What a scripted server sends for the n-th request overall: raw bytes to write, then
# whether to close the connection. None: close without answering.
Script = Callable[[int, Request], tuple[bytes, bool] | None]


@dataclass
class RawServer:
    """Accepts connections on 127.0.0.1 and answers each request as `script` says."""

    script: Script
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> RawServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn, index), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket, index: int) -> None:
        with conn:
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                request = Request(index, head + b"\r\n\r\n", buffer[:length])
                buffer = buffer[length:]
                with self._lock:
                    self.requests.append(request)
                    n = len(self.requests) - 1
                answer = self.script(n, request)
                if answer is None:
                    return
                data, close = answer
                conn.sendall(data)
                if close:
                    return


def ok(body: bytes = b"", *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "content-type: application/proto", *extra]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in extra):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def calls(url: str, count: int, timeout: float = 5.0, **options: object) -> list[bytes | PugError]:
    """`count` unary calls in a row on one transport (one loop), each's answer or error."""

    async def run() -> list[bytes | PugError]:
        transport = ConnectTransport(url, KEY, **options)  # type: ignore[arg-type]
        out: list[bytes | PugError] = []
        try:
            for _ in range(count):
                try:
                    out.append(await transport.unary(BATCH_CREATE, BODY, timeout=timeout))
                except PugError as error:
                    out.append(error)
        finally:
            await transport.aclose()
        return out

    return asyncio.run(run())


@pytest.fixture
def serve() -> Iterator[Callable[[Script], RawServer]]:
    servers: list[RawServer] = []

    def start(script: Script) -> RawServer:
        server = RawServer(script).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def test_the_request_on_the_wire(serve: Callable[[Script], RawServer]) -> None:
    server = serve(lambda n, r: (ok(b"\x08\x01"), False))
    (answer,) = calls(server.url + "/base path", 1, timeout=2.5)
    assert answer == b"\x08\x01"
    (request,) = server.requests
    port = server.url.rsplit(":", 1)[1]
    lines = request.head.decode().split("\r\n")
    assert lines[0] == f"POST /base%20path/{BATCH_CREATE} HTTP/1.1"
    assert lines[1] == f"host: 127.0.0.1:{port}"
    assert sorted(lines[2:-2]) == sorted(
        [
            f"x-api-key: {KEY}",
            "connect-protocol-version: 1",
            f"user-agent: pug-python/{__import__('pug').__version__}",
            "content-type: application/proto",
            "connect-timeout-ms: 2500",
            f"content-length: {len(BODY)}",
        ]
    )
    assert lines[-2:] == ["", ""]
    assert request.body == BODY


def test_keep_alive_reuses_one_connection(serve: Callable[[Script], RawServer]) -> None:
    server = serve(lambda n, r: (ok(b"%d" % n), False))
    assert calls(server.url, 3) == [b"0", b"1", b"2"]
    assert [r.connection for r in server.requests] == [0, 0, 0]


def test_chunked_body_with_extensions_and_trailers(serve: Callable[[Script], RawServer]) -> None:
    chunked = b"4;note=x\r\nabcd\r\n3\r\nefg\r\n0\r\ngrpc-status: 0\r\n\r\n"
    server = serve(lambda n, r: (ok(chunked, "transfer-encoding: chunked"), False))
    assert calls(server.url, 2) == [b"abcdefg", b"abcdefg"]
    assert [r.connection for r in server.requests] == [0, 0]  # the whole body was read


def test_connection_close_is_honoured(serve: Callable[[Script], RawServer]) -> None:
    server = serve(lambda n, r: (ok(b"x", "connection: close"), True))
    assert calls(server.url, 2) == [b"x", b"x"]
    assert [r.connection for r in server.requests] == [0, 1]


def test_body_delimited_by_the_end_of_the_connection(
    serve: Callable[[Script], RawServer],
) -> None:
    answer = b"HTTP/1.0 200 OK\r\ncontent-type: application/proto\r\n\r\nuntil-eof"
    server = serve(lambda n, r: (answer, True))
    assert calls(server.url, 2) == [b"until-eof", b"until-eof"]
    assert [r.connection for r in server.requests] == [0, 1]


def test_idle_connection_closed_by_the_server_is_replaced(
    serve: Callable[[Script], RawServer],
) -> None:
    # The server answers the first request, then drops the connection when the second
    # arrives on it without answering (its idle timeout raced the client). The request
    # is sent again on a new connection; the caller sees one success.
    server = serve(lambda n, r: None if n == 1 else (ok(b"%d" % n), False))
    assert calls(server.url, 2) == [b"0", b"2"]
    assert [r.connection for r in server.requests] == [0, 0, 1]
    assert server.requests[1].body == server.requests[2].body == BODY


def test_a_new_connection_that_answers_nothing_fails(
    serve: Callable[[Script], RawServer],
) -> None:
    server = serve(lambda n, r: None)
    (error,) = calls(server.url, 1)
    assert isinstance(error, PugError)
    assert error.code == "unavailable"
    assert error.message.startswith("connection failed: ")
    assert len(server.requests) == 1  # not sent again: only a reused connection is retried


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP/1.x response: 'SSH-2.0-OpenSSH_9.2'"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", "mid-response"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n", "bad content-length: 'ten'"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 3\r\n\r\nabc", "gzip"),
    ],
)
def test_a_broken_response_is_unavailable(
    serve: Callable[[Script], RawServer], answer: bytes, message: str
) -> None:
    server = serve(lambda n, r: (answer, True))
    (error,) = calls(server.url, 1)
    assert isinstance(error, PugError)
    assert error.code == "unavailable"
    assert message in error.message


def test_no_answer_times_out_and_the_connection_is_not_reused(
    serve: Callable[[Script], RawServer],
) -> None:
    release = threading.Event()

    def script(n: int, r: Request) -> tuple[bytes, bool] | None:
        if n == 0:
            release.wait(5)  # holds its connection open, silent, past the timeout
            return None
        return ok(b"late"), False

    server = serve(script)
    try:
        first, second = calls(server.url, 2, timeout=0.2)
    finally:
        release.set()
    assert isinstance(first, PugError)
    assert first.code == "deadline_exceeded"
    assert second == b"late"
    assert [r.connection for r in server.requests] == [0, 1]


def test_interim_responses_are_skipped(serve: Callable[[Script], RawServer]) -> None:
    server = serve(lambda n, r: (b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final"), False))
    assert calls(server.url, 2) == [b"final", b"final"]


def test_a_configured_proxy_carries_unary_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    with RecordingHTTPServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        (answer,) = calls("http://pug.invalid:8080", 1)
    assert answer == pb.accept_all(BODY)  # what the proxy passed on
    # A forward proxy is asked for the absolute URL.
    assert proxy.paths == [f"http://pug.invalid:8080/{BATCH_CREATE}"]


@pytest.mark.parametrize(
    ("env", "url", "proxied"),
    [
        ({}, "https://api.pug.dev", False),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.pug.dev", True),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://api.pug.dev", False),
        ({"ALL_PROXY": "http://proxy:3128"}, "http://api.pug.dev", True),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "pug.dev"}, "https://api.pug.dev", False),
    ],
)
def test_which_urls_go_through_a_proxy(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, proxied: bool
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert uses_proxy(parse_base_url(url)) is proxied


@pytest.mark.parametrize("key", ["prv_a\r\nx-evil: 1", "prv_ key", "prv_clé"])
def test_a_key_that_cannot_be_a_header_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII") as raised:
        ConnectTransport("http://127.0.0.1:1", key)
    assert key not in str(raised.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_leaves_the_parents_connection_alone(
    serve: Callable[[Script], RawServer],
) -> None:
    server = serve(lambda n, r: (ok(b"\x08\x01"), False))  # accepted=1: one event a request
    pug = Pug(api_key=KEY, base_url=server.url, batch=BatchConfig(max_size=1))
    try:
        pug.track("parent", "before.fork")
        assert pug.flush(DELIVERY)  # the parent now holds an idle keep-alive connection
        pid = os.fork()
        if pid == 0:  # the child: its own connection; the parent's objects are dropped
            code = 1
            try:
                pug.track("child", "in.child")
                code = 0 if pug.flush(DELIVERY) else 2
                gc.collect()  # whatever the child let go of is finalized now
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

        pug.track("parent", "after.fork")
        assert pug.flush(DELIVERY)
    finally:
        pug.close(DELIVERY)
    # The parent's second request went out on its first connection, untouched by the child
    # (had the child closed it, or removed it from the epoll set both processes share, the
    # parent would have waited out its timeout and reconnected).
    assert [r.connection for r in server.requests] == [0, 1, 0]
