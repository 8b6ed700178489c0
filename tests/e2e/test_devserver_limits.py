"""The dev server's bounds against bad and hostile clients: body sizes (on the wire and
inflated), Content-Length, the connection cap, the idle timeout, terminal escaping, the
listening address, and no traceback for a client's fault. Raw sockets, exact answers."""

from __future__ import annotations

import datetime
import gzip
import http.client
import io
import json
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pug import Pug, PugError
from pug.devserver import DevServer
from pug.devserver.server import MAX_BODY_BYTES
from pug.proto.common.v1 import PropertyValue
from pug.proto.sdk.events.v1 import BatchCreateRequest, BatchCreateResponse, Event

BATCH = "/sdk.events.v1.EventsService/BatchCreate"
LIST = "/shared.profiles.v1.ProfilesService/List"


@pytest.fixture
def server() -> Iterator[DevServer]:
    with DevServer(out=io.StringIO()) as running:
        yield running


def connect(server: DevServer) -> socket.socket:
    return socket.create_connection(server._http.server_address[:2], timeout=10)


def head(path: str = BATCH, length: int | None = None, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: dev", "x-api-key: prv_dev"]
    lines.append(f"content-type: {headers.pop('content_type', 'application/proto')}")
    if length is not None:
        lines.append(f"content-length: {length}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Answer:
    def __init__(self, sock: socket.socket) -> None:
        response = http.client.HTTPResponse(sock)
        response.begin()
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()
        self.sock = sock

    @property
    def error(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)

    def closed(self) -> bool:
        """Whether the server closed the connection after this answer."""
        return self.sock.recv(1) == b""


def exchange(server: DevServer, raw: bytes) -> Answer:
    sock = connect(server)
    sock.sendall(raw)
    return Answer(sock)


def batch(distinct_id: str = "user_1", **properties: str) -> bytes:
    event = Event(
        event_id="0190a5f0-0000-7000-8000-000000000001",
        distinct_id=distinct_id,
        kind="limits.sent",
        session_id="0190a5f0-0000-7000-8000-000000000002",
        occur_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        custom_properties={k: PropertyValue(string_value=v) for k, v in properties.items()},
    )
    return bytes(BatchCreateRequest(events=[event]))


# ---- 1. the body's size ---------------------------------------------------------------------


@pytest.mark.parametrize("client", ["head-only", "expect-100", "sends-1MiB-anyway"])
def test_a_body_over_the_bound_is_refused_413_unread(server: DevServer, client: str) -> None:
    extra = {"expect": "100-continue"} if client == "expect-100" else {}
    # The answer comes without the server waiting for the body; a client that sends some
    # anyway still reads it (the server drops what it sends, then closes: not a reset).
    body = bytes(1024 * 1024) if client == "sends-1MiB-anyway" else b""
    answer = exchange(server, head(length=MAX_BODY_BYTES + 1, **extra) + body)
    assert answer.status == 413
    assert answer.error == {
        "code": "resource_exhausted",
        "message": "the body is over the dev server's limit of 4194304 bytes",
    }
    assert answer.headers["connection"] == "close"
    assert answer.closed()
    assert server.fake.events() == []


def test_expect_100_continue_within_the_bound_is_answered_100_then_200(
    server: DevServer,
) -> None:
    body = batch()
    sock = connect(server)
    sock.sendall(head(length=len(body), expect="100-continue"))
    assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    answer = Answer(sock)
    assert answer.status == 200
    assert BatchCreateResponse.parse(answer.body).accepted == 1


def test_a_body_at_the_bound_is_read() -> None:
    body = batch(pad="x" * 100)
    with DevServer(out=io.StringIO(), max_body_bytes=len(body)) as tight:
        answer = exchange(tight, head(length=len(body)) + body)
        assert answer.status == 200
        assert BatchCreateResponse.parse(answer.body).accepted == 1
        answer = exchange(tight, head(length=len(body) + 1) + body + b"\0")
        assert answer.status == 413


# ---- 2. gzip and the streaming envelope -----------------------------------------------------


@pytest.mark.parametrize(
    "bomb",
    [
        gzip.compress(bytes(1_000_000)) * 100,  # 100 MB of zeros (gzip members follow each other)
        gzip.compress(bytes(8_000_000)),  # one member, twice the bound
    ],
    ids=["100MB-in-100-members", "8MB-in-one"],
)
def test_a_gzip_bomb_is_refused_not_inflated(server: DevServer, bomb: bytes) -> None:
    assert len(bomb) < 200_000
    answer = exchange(server, head(length=len(bomb), content_encoding="gzip") + bomb)
    assert answer.status == 413
    assert answer.error == {
        "code": "resource_exhausted",
        "message": "the body is over 4194304 bytes once decompressed",
    }
    assert server.fake.events() == []
    # Refused after the body was read whole: the connection serves the next request.
    body = batch()
    answer.sock.sendall(head(length=len(body)) + body)
    assert Answer(answer.sock).status == 200


def test_a_gzip_body_within_the_bound_is_accepted(server: DevServer) -> None:
    body = gzip.compress(batch())
    answer = exchange(server, head(length=len(body), content_encoding="gzip") + body)
    assert answer.status == 200
    assert BatchCreateResponse.parse(answer.body).accepted == 1


@pytest.mark.parametrize(
    ("body", "encoding", "status", "error"),
    [
        (b"not gzip at all", "gzip", 400,
         {"code": "invalid_argument", "message": "the request says gzip but is not"}),
        (gzip.compress(b"x" * 1000, mtime=0)[:20], "gzip", 400,
         {"code": "invalid_argument", "message": "the request says gzip but is cut short"}),
        (b"abc", "br", 501,
         {"code": "unimplemented", "message": "unsupported content-encoding: 'br'"}),
    ],
)  # fmt: skip
def test_a_bad_encoding_is_a_connect_error(
    server: DevServer, body: bytes, encoding: str, status: int, error: object
) -> None:
    answer = exchange(server, head(length=len(body), content_encoding=encoding) + body)
    assert (answer.status, answer.error) == (status, error)


def envelope(message: bytes, flags: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">BI", flags, len(message) if length is None else length) + message


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"\x00\x00\x00", 400,
         {"code": "invalid_argument", "message": "the request envelope is cut short"}),
        (envelope(b"abc", length=10), 400,
         {"code": "invalid_argument", "message": "the envelope says 10 bytes, the body has 3"}),
        (envelope(b"", length=0xFFFFFFFF), 413,
         {"code": "resource_exhausted",
          "message": "the message is over the dev server's limit of 4194304 bytes"}),
        (envelope(b"garbage", flags=1), 400,
         {"code": "invalid_argument", "message": "the request says gzip but is not"}),
    ],
)  # fmt: skip
def test_a_bad_streaming_envelope_is_a_connect_error(
    server: DevServer, body: bytes, status: int, error: object
) -> None:
    raw = head(LIST, len(body), content_type="application/connect+proto") + body
    answer = exchange(server, raw)
    assert (answer.status, answer.error) == (status, error)


def test_a_gzip_enveloped_stream_request_is_answered(server: DevServer) -> None:
    def call(body: bytes) -> Answer:
        return exchange(
            server, head(LIST, len(body), content_type="application/connect+proto") + body
        )

    answer = call(envelope(gzip.compress(b""), flags=1))
    assert answer.status == 200
    # One (empty) page of profiles, then the end of the stream: as for the plain request.
    assert answer.body == envelope(b"\x12\x00") + envelope(b"{}", flags=2)
    assert call(envelope(b"")).body == answer.body


# ---- 3. Content-Length ----------------------------------------------------------------------


def invalid(message: str) -> dict[str, str]:
    return {"code": "invalid_argument", "message": message}


@pytest.mark.parametrize(
    ("lengths", "status", "error"),
    [
        ([], 411, invalid("a POST needs a content-length")),
        (["-1"], 400, invalid("content-length is not a number: '-1'")),
        (["ten"], 400, invalid("content-length is not a number: 'ten'")),
        (["5", "6"], 400, invalid("conflicting content-length values")),
        (["5, 6"], 400, invalid("conflicting content-length values")),
        (["9" * 40], 413, {"code": "resource_exhausted",
                           "message": "the body is over the dev server's limit of 4194304 bytes"}),
    ],
)  # fmt: skip
def test_a_bad_content_length_is_an_http_error(
    server: DevServer, lengths: list[str], status: int, error: object
) -> None:
    raw = head().replace(
        b"\r\n\r\n", b"".join(b"\r\ncontent-length: " + n.encode() for n in lengths)
    )
    answer = exchange(server, raw + b"\r\n\r\nhello")
    assert (answer.status, answer.error) == (status, error)
    assert answer.closed()


def test_the_same_content_length_twice_is_accepted(server: DevServer) -> None:
    body = batch()
    raw = head(length=len(body)).replace(
        b"\r\n\r\n", f"\r\ncontent-length: {len(body)}\r\n\r\n".encode()
    )
    answer = exchange(server, raw + body)
    assert answer.status == 200


def test_chunked_bodies_are_refused_411(server: DevServer) -> None:
    answer = exchange(server, head(transfer_encoding="chunked") + b"5\r\nhello\r\n0\r\n\r\n")
    assert (answer.status, answer.error) == (
        411,
        {
            "code": "unimplemented",
            "message": "transfer-encoding is not supported: send content-length",
        },
    )
    assert answer.closed()


# ---- 4. the connection cap and the idle timeout ---------------------------------------------


def test_over_the_cap_a_connection_is_answered_503_and_closed() -> None:
    with DevServer(out=io.StringIO(), max_connections=4) as server:
        held = [connect(server) for _ in range(4)]
        # Accepted in order: the fifth comes after the four, which hold every slot.
        over = Answer(connect(server))
        assert over.status == 503
        assert over.error == {"code": "unavailable", "message": "over 4 connections"}
        assert over.closed()
        # One of the four ends (its answer, then the close, which frees its slot) ...
        body = batch()
        held[0].sendall(head(length=len(body), connection="close") + body)
        assert Answer(held[0]).closed()
        # ... and the next connection is served.
        assert exchange(server, head(length=len(body)) + body).status == 200
        for sock in held:
            sock.close()


def closed_by_server(sock: socket.socket, trickle: bytes = b"") -> int:
    """Send `trickle` a byte every 0.1 s until the server closes the connection (or all
    is sent, then wait for the close); how many bytes were sent."""
    sent = 0
    while True:
        readable, _, _ = select.select([sock], [], [], 0.1 if sent < len(trickle) else 10)
        if readable:
            assert sock.recv(1024) == b""  # an EOF, no answer
            return sent
        assert sent < len(trickle), "the server kept a silent connection open"
        sock.send(trickle[sent : sent + 1])
        sent += 1


@pytest.fixture
def impatient() -> Iterator[DevServer]:
    with DevServer(out=io.StringIO(), idle_timeout=0.5) as running:
        yield running


def test_a_silent_connection_is_closed_at_the_timeout(impatient: DevServer) -> None:
    assert closed_by_server(connect(impatient)) == 0


def test_a_slowloris_head_is_cut_at_the_timeout_for_the_whole_head(impatient: DevServer) -> None:
    trickle = head(length=2)
    # A byte every 0.1 s, under the 0.5 s timeout each time: only the head's deadline cuts it.
    sent = closed_by_server(connect(impatient), trickle)
    assert 0 < sent < len(trickle)


def test_a_body_that_stops_coming_is_cut(impatient: DevServer) -> None:
    sock = connect(impatient)
    sock.sendall(head(length=10) + b"12345")
    assert closed_by_server(sock) == 0
    assert impatient.fake.events() == []


def test_a_connection_idle_between_requests_is_closed(impatient: DevServer) -> None:
    sock = connect(impatient)
    body = batch()
    sock.sendall(head(length=len(body)) + body)
    assert Answer(sock).status == 200
    assert closed_by_server(sock) == 0


def test_an_answer_slower_than_the_timeout_is_not_cut(impatient: DevServer) -> None:
    # The timeout is for reading requests: the server taking its time to answer (as a
    # long response stream does) is not the client being idle.
    impatient._dispatch.watchers.append(lambda *call: threading.Event().wait(1.0))
    body = batch()
    answer = exchange(impatient, head(length=len(body)) + body)
    assert answer.status == 200
    assert BatchCreateResponse.parse(answer.body).accepted == 1


# ---- 5. terminal escaping -------------------------------------------------------------------


def test_control_characters_are_printed_escaped(server: DevServer) -> None:
    body = batch("evil\x1b[2J\r\nfake", note="\x1b]0;owned\x07\n")
    answer = exchange(server, head(length=len(body)) + body)
    assert answer.status == 200
    assert isinstance(server.out, io.StringIO)
    assert server.out.getvalue() == (
        'limits.sent              evil\\x1b[2J\\r\\nfake {"note": "\\u001b]0;owned\\u0007\\n"}\n'
    )
    # Stored as sent: only the terminal sees escapes.
    assert [e.distinct_id for e in server.fake.events()] == ["evil\x1b[2J\r\nfake"]


def test_escape_writes_every_unprintable_character_as_its_escape() -> None:
    from pug.devserver.dispatch import escape

    assert escape("page.viewed") == "page.viewed"
    assert escape("a\x1b[2Jb\rc\nd\te\x7f\x9b\u202egé ü") == (
        "a\\x1b[2Jb\\rc\\nd\\te\\x7f\\x9b\\u202egé ü"
    )


# ---- 6. the address -------------------------------------------------------------------------


def test_the_default_is_loopback_only(server: DevServer) -> None:
    assert server._http.socket.getsockname()[0] == "127.0.0.1"
    [grpc_socket] = server._grpc_server._server.sockets
    assert grpc_socket.getsockname()[0] == "127.0.0.1"


def run_cli(*args: str, meanwhile: Callable[[str], None] = lambda banner: None) -> tuple[str, str]:
    """The command's banner and its stderr: `meanwhile(banner)` runs before Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pug", "devserver", "--connect-port", "0", "--grpc-port", "0",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        meanwhile(banner)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out == "stopping\n"
    return banner, err


def test_the_cli_says_where_it_listens_and_warns_off_loopback() -> None:
    banner, err = run_cli()
    assert banner.startswith("Pug dev server: Connect on http://127.0.0.1:")
    assert ", gRPC (h2c) on http://127.0.0.1:" in banner
    assert err == ""
    banner, err = run_cli("--host", "0.0.0.0")
    assert banner.startswith("Pug dev server: Connect on http://0.0.0.0:")
    assert err == (
        "warning: listening on 0.0.0.0, not loopback only: whoever reaches it may send and "
        "read events with any prv_/pub_ key, over plain HTTP (no TLS)\n"
    )


@pytest.mark.parametrize("taken", ["--connect-port", "--grpc-port"])
def test_a_port_in_use_is_one_line_not_a_traceback(taken: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        ports = {"--connect-port": "0", "--grpc-port": "0", taken: str(port)}
        result = subprocess.run(
            [sys.executable, "-m", "pug", "devserver", *(x for p in ports.items() for x in p)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].lower() == (
        f"pug: error: cannot listen on 127.0.0.1:{port}: address already in use"
    )
    assert "Traceback" not in result.stderr


# ---- 7. gRPC --------------------------------------------------------------------------------


async def grpc_call(server: DevServer, message: bytes) -> bytes:
    from grpclib.client import Channel
    from pug.transports.grpc import BytesCodec

    channel = Channel(server.host, int(server.grpc_url.rsplit(":", 1)[1]), codec=BytesCodec())
    try:
        async with channel.request(
            BATCH, grpclib_const().Cardinality.UNARY_UNARY, bytes, bytes,
            metadata={"x-api-key": "prv_dev"},
        ) as stream:  # fmt: skip
            await stream.send_message(message, end=True)
            answer: bytes = await stream.recv_message()
            return answer
    finally:
        channel.close()


def grpclib_const() -> Any:
    import grpclib.const

    return grpclib.const


def test_an_oversize_grpc_message_is_refused_resource_exhausted() -> None:
    import asyncio

    import grpclib

    body = batch(pad="x" * 100)
    with DevServer(out=io.StringIO(), max_body_bytes=len(body)) as server:
        assert BatchCreateResponse.parse(asyncio.run(grpc_call(server, body))).accepted == 1
        with pytest.raises(grpclib.GRPCError) as info:
            asyncio.run(grpc_call(server, body + b"\0"))
        assert info.value.status == grpclib_const().Status.RESOURCE_EXHAUSTED
        assert info.value.message == (
            f"the message is {len(body) + 1} bytes, over the dev server's limit of {len(body)}"
        )
        assert len(server.fake.events()) == 1


def test_a_cut_short_grpc_message_is_invalid_argument_not_a_traceback(
    server: DevServer, capfd: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    import grpclib
    from grpclib.client import Channel
    from pug.transports.grpc import BytesCodec

    async def call() -> None:
        port = int(server.grpc_url.rsplit(":", 1)[1])
        channel = Channel(server.host, port, codec=BytesCodec())
        try:
            async with channel.request(
                BATCH, grpclib_const().Cardinality.UNARY_UNARY, bytes, bytes,
                metadata={"x-api-key": "prv_dev"},
            ) as stream:  # fmt: skip
                await stream.send_request()
                # The prefix promises 100 bytes; 10 come, then the end of the stream.
                cut = struct.pack(">?I", False, 100) + bytes(10)
                await stream._stream.send_data(cut, end_stream=True)
                await stream.recv_message()
        finally:
            channel.close()

    with pytest.raises(grpclib.GRPCError) as info:
        asyncio.run(call())
    assert info.value.status == grpclib_const().Status.INVALID_ARGUMENT
    assert info.value.message == "the message is cut short"
    assert capfd.readouterr().err == ""


def test_over_the_cap_a_grpc_connection_is_closed_unavailable() -> None:
    import asyncio

    from grpclib.exceptions import StreamTerminatedError

    lost = (StreamTerminatedError, ConnectionError)  # as the client sees a closed connection
    with DevServer(out=io.StringIO(), max_connections=2) as server:
        address = ("127.0.0.1", int(server.grpc_url.rsplit(":", 1)[1]))
        held = [socket.create_connection(address, timeout=10) for _ in range(2)]
        # Accepted in order: the client's connection is the third, closed once made.
        with pytest.raises(lost):
            asyncio.run(grpc_call(server, batch()))
        assert server.fake.events() == []
        held[0].close()
        # Its slot frees once the server has seen it go: the next call gets through.
        for _ in range(1000):
            try:
                answer = asyncio.run(grpc_call(server, batch()))
                break
            except lost:
                continue
        assert BatchCreateResponse.parse(answer).accepted == 1
        held[1].close()


def test_a_large_grpc_message_over_the_default_bound_is_refused(server: DevServer) -> None:
    import asyncio

    import grpclib

    # Larger than grpclib's 4 MiB flow-control window: refused from its prefix alone.
    with pytest.raises(grpclib.GRPCError) as info:
        asyncio.run(grpc_call(server, bytes(MAX_BODY_BYTES + 4 * 1024 * 1024)))
    assert info.value.status == grpclib_const().Status.RESOURCE_EXHAUSTED


# ---- 8. no traceback for a client's fault ---------------------------------------------------


def test_a_client_gone_before_its_answer_is_one_line_on_stderr(
    server: DevServer, capfd: pytest.CaptureFixture[str]
) -> None:
    called, reset, logged = threading.Event(), threading.Event(), threading.Event()

    def slow(*call: object) -> None:  # the answer waits until the client has gone
        called.set()
        reset.wait(10)

    server._dispatch.watchers.append(slow)
    handle_error = server._http.handle_error

    def told(*args: Any) -> None:
        handle_error(*args)
        logged.set()

    server._http.handle_error = told  # type: ignore[method-assign]
    sock = connect(server)
    body = batch()
    sock.sendall(head(length=len(body)) + body)
    assert called.wait(10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset, not a goodbye
    reset.set()
    assert logged.wait(10)
    [line] = capfd.readouterr().err.splitlines()
    error = line.split(": ")[2]
    assert line.startswith("pug devserver: dropped a connection from 127.0.0.1: ")
    assert error.split(" at ")[0] in ("BrokenPipeError", "ConnectionResetError")


def test_bad_clients_leave_the_cli_s_stderr_empty() -> None:
    def abuse(banner: str) -> None:
        url = banner.split("Connect on ")[1].split(",")[0]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        raws = [
            head(length=MAX_BODY_BYTES + 1),
            head() + b"hello",
            head(length=-1),
            head(transfer_encoding="chunked") + b"5\r\nhello\r\n0\r\n\r\n",
            head(length=5, content_encoding="gzip", connection="close") + b"hello",
            head(LIST, 3, content_type="application/connect+proto", connection="close") + b"\0\0\0",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100) + b"\r\n\r\n",
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\n" + b"x: y\r\n" * 200 + b"\r\n",
        ]
        for raw in raws:
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(raw)
                answer = b"".join(iter(lambda: sock.recv(65536), b""))  # to the server's close
                # An error (the TLS hello gets http.server's HTTP/0.9 one: a page, no head).
                assert answer.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5", b"<!DOCTYPE")), answer

    assert run_cli("--idle-timeout", "2", meanwhile=abuse)[1] == ""


def test_past_its_store_bound_the_cli_drops_the_oldest_events_and_says_so_once() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pug", "devserver", "--connect-port", "0", "--grpc-port", "0",
         "--max-store-mb", "1", "--lines-per-second", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split("Connect on ")[1].split(",")[0]
        client = Pug(api_key="prv_bound", base_url=url)
        for i in range(5_000):
            client.track(f"user_{i}", "order.completed", {"order_id": f"ord_{i:08d}"})
        assert client.flush(30)
        newest = client.profiles.get_by_external_id("user_4999")
        assert newest.activity is not None and newest.activity.total_events == 1
        with pytest.raises(PugError) as gone:  # its only event was dropped, and the profile
            client.profiles.get_by_external_id("user_0")
        assert gone.value.code == "not_found"
        client.close(10)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert err == (
        "the fake Pug's store is over its bound of 1 MiB: the oldest events are dropped from "
        "now on (FakePug(max_store_bytes=...), pug devserver --max-store-mb)\n"
    )


def test_a_store_bound_below_one_mib_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pug", "devserver", "--max-store-mb", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "pug: error: --max-store-mb must be at least 1"
