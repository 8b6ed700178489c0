"""Hostile and broken servers against the transports (issue 14, the transport's part).

Every server here is real, on 127.0.0.1: the scripted raw HTTP/1.1 servers of
tests/support/hostile.py that send what a test says for as long as it says (endless bodies, gzip
bombs, malformed HTTP, captive portals), its scripted HTTP/2 gRPC server (the h2 library)
for gRPC's faults, and the independent connectrpc/grpcio servers of tests/support/servers.py for
the key's tests. (tests/e2e/test_hostile_servers_e2e.py runs the same servers against the
whole client.) Each test
asserts the exact code and message of the PugError the transport raises.

1. Responses are bounded: memory (tracemalloc's peak, and the process's peak RSS) stays
   within 100 MiB and the call ends within its timeout + 0.5 s, whatever the server sends.
2. Malformed HTTP is a transient PugError, and its connection is not reused.
3. A 200 that is not a Pug answer (a captive portal's HTML) is a transient error.
4. `Retry-After` (and gRPC's pushback) is read into `PugError.retry_after`.
5. The key never shows: refused at construction when it cannot be a header, redacted
   from quoted bodies, server messages and every library's log records.
6. `base_url` is checked at construction; messages never show its credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import gc
import logging
import random
import resource
import secrets
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hostile import (
    GIB,
    HTTP_HANDLERS,
    MIB,
    ZEROS,
    H2Call,
    H2Server,
    Handler,
    Hostile,
    answer,
    chunk,
    endless,
    grpc_endless_message,
    grpc_refusal,
    gzip_bomb,
    head,
    trickle,
)
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from protoc_helpers import GoogleMessages
from pug import Pug, PugError, RetryPolicy
from pug.transports import make_transport
from pug.transports import redact as redact_module
from pug.transports._url import parse_base_url
from pug.transports.base import BATCH_CREATE
from pug.transports.connect import ConnectTransport, parse_retry_after
from pug.transports.grpc import GrpcTransport
from pug.transports.redact import quote, redact
from servers import GET, LIST, ConnectServer, FakePug, GrpcServer, closed_port

# A fresh random key per run: whatever shows it leaked it.
KEY = "prv_" + secrets.token_hex(16)
BODY = b"\x0a\x03abc"  # any bytes: the transports do not look into them
TIMEOUT = 1.5  # seconds: each call's timeout
# A server that never finishes only has to be cut off by the timeout: a shorter one there.
TRICKLE_TIMEOUT = 0.5
SLACK = 0.5  # how much later than its timeout a call may end
READ_LIMIT = 16 * MIB  # the transports' default bound on a read's answer
INGEST_LIMIT = 64 * 1024  # and on an ingestion answer
MEMORY_BOUND = 100 * MIB


# --- measuring a call ------------------------------------------------------------------------


@dataclass
class Outcome:
    result: bytes | PugError
    seconds: float
    peak: int  # bytes allocated at the peak, over the baseline (tracemalloc)
    rss_growth: int  # growth of the process's peak RSS, bytes

    @property
    def error(self) -> PugError:
        assert isinstance(self.result, PugError), self.result
        return self.result


def measure(call: Callable[[], Awaitable[bytes]]) -> Outcome:
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        start = time.monotonic()
        result: bytes | PugError
        try:
            result = asyncio.run(call())  # type: ignore[arg-type]
        except PugError as error:
            result = error
        seconds = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return Outcome(result, seconds, peak - baseline, rss_growth)


def call_timeout(code: str) -> float:
    """The timeout of a call that should end with `code`."""
    return TRICKLE_TIMEOUT if code == "deadline_exceeded" else TIMEOUT


def connect_call(
    url: str, method: str = GET, timeout: float = TIMEOUT, **options: Any
) -> Callable[[], Awaitable[bytes]]:
    async def call() -> bytes:
        transport = ConnectTransport(url, KEY, **options)
        try:
            return await transport.unary(method, BODY, timeout=timeout)
        finally:
            await transport.aclose()

    return call


def stream_call(
    url: str, method: str = LIST, timeout: float = TIMEOUT
) -> Callable[[], Awaitable[bytes]]:
    async def call() -> bytes:
        transport = ConnectTransport(url, KEY)
        try:
            return b"".join(
                [message async for message in transport.stream(method, BODY, timeout=timeout)]
            )
        finally:
            await transport.aclose()

    return call


def grpc_call(url: str, method: str = GET, **options: Any) -> Callable[[], Awaitable[bytes]]:
    async def call() -> bytes:
        transport = GrpcTransport(url, KEY, **options)
        try:
            return await transport.unary(method, BODY, timeout=TIMEOUT)
        finally:
            await transport.aclose()

    return call


def assert_bounded(outcome: Outcome, timeout: float = TIMEOUT) -> None:
    assert outcome.seconds <= timeout + SLACK, outcome.seconds
    assert outcome.peak <= MEMORY_BOUND, outcome.peak
    assert outcome.rss_growth <= MEMORY_BOUND, outcome.rss_growth


# === 1. responses are bounded ================================================================

HTML_QUOTE = "HTTP 503: " + ("<p>overloaded</p> " * 12)[:199] + "…"


# name: (what the server does, the code, the message)
HTTP_MODES: dict[str, tuple[Handler, str, str]] = {
    name: (HTTP_HANDLERS[name], code, message)
    for name, code, message in [
        (
            "content-length of 1 GiB",
            "resource_exhausted",
            f"the response is {GIB} bytes, over the limit of {READ_LIMIT}",
        ),
        (
            "endless chunked 200",
            "resource_exhausted",
            f"the response is over the limit of {READ_LIMIT} bytes",
        ),
        (
            "endless 200 delimited by the end of the connection",
            "resource_exhausted",
            f"the response is over the limit of {READ_LIMIT} bytes",
        ),
        (
            "gzip bomb (1 MiB to 1 GiB)",
            "resource_exhausted",
            f"the response is over the limit of {READ_LIMIT} bytes once decompressed",
        ),
        ("100 MiB 503 page", "unavailable", HTML_QUOTE),
        ("endless chunked 503 page", "unavailable", HTML_QUOTE),
        (
            "endless Connect error JSON",
            "unavailable",
            'HTTP 503: {"code": "unavailable", "message": "' + "x" * 163 + "…",
        ),
        ("gzip bomb as a 503 page", "unavailable", "HTTP 503"),  # only zeros to quote
        (
            "headers one byte at a time",
            "deadline_exceeded",
            f"timed out after {TRICKLE_TIMEOUT:g}s",
        ),
        ("body one byte at a time", "deadline_exceeded", f"timed out after {TRICKLE_TIMEOUT:g}s"),
        (
            "endless headers",
            "unavailable",
            "connection failed: HTTPProtocolError: the response's headers are too long",
        ),
        (
            "endless trailers",
            "unavailable",
            "connection failed: HTTPProtocolError: the response's trailers are too long",
        ),
        (
            "endless 100 Continue",
            "unavailable",
            "connection failed: HTTPProtocolError: more than 8 interim responses",
        ),
    ]
}
assert list(HTTP_MODES) == list(HTTP_HANDLERS)  # every mode, with its error


@pytest.mark.parametrize("mode", list(HTTP_MODES))
def test_a_hostile_http_server_is_bounded(hostile: Callable[[Handler], Hostile], mode: str) -> None:
    handler, code, message = HTTP_MODES[mode]
    gzip_bomb()  # made before the measure
    server = hostile(handler)
    outcome = measure(connect_call(server.url, timeout=call_timeout(code)))
    assert (outcome.error.code, outcome.error.message) == (code, message)
    assert_bounded(outcome, call_timeout(code))


def test_an_ingestion_answer_is_held_to_64_kib(hostile: Callable[[Handler], Hostile]) -> None:
    server = hostile(
        answer(head("200 OK", "content-type: application/proto", "content-length: 70000"))
    )
    outcome = measure(connect_call(server.url, BATCH_CREATE))
    assert (outcome.error.code, outcome.error.message) == (
        "resource_exhausted",
        f"the response is 70000 bytes, over the limit of {INGEST_LIMIT}",
    )


def test_the_read_limit_is_a_transport_option(hostile: Callable[[Handler], Hostile]) -> None:
    body = b"\x0a\x05hello" * 100  # 700 bytes
    server = hostile(
        answer(
            head("200 OK", "content-type: application/proto", f"content-length: {len(body)}") + body
        )
    )
    assert measure(connect_call(server.url, max_response_bytes=700)).result == body
    outcome = measure(connect_call(server.url, max_response_bytes=699))
    assert outcome.error.message == "the response is 700 bytes, over the limit of 699"
    with pytest.raises(ValueError, match="max_response_bytes must be a positive int"):
        ConnectTransport(server.url, KEY, max_response_bytes=0)


def test_an_error_body_is_read_only_as_far_as_it_is_quoted(
    hostile: Callable[[Handler], Hostile],
) -> None:
    # A 503 page that is all there is: quoted, and the connection is reused.
    page = b"<html><body><h1>503</h1>\n\n  <p>upstream   overloaded</p></body></html>"
    short = (
        head("503 Service Unavailable", "content-type: text/html", f"content-length: {len(page)}")
        + page
    )
    server = hostile(answer(short))

    async def two_calls() -> list[PugError]:
        transport = ConnectTransport(server.url, KEY)
        errors = []
        try:
            for _ in range(2):
                with pytest.raises(PugError) as raised:
                    await transport.unary(GET, BODY, timeout=TIMEOUT)
                errors.append(raised.value)
        finally:
            await transport.aclose()
        return errors

    errors = asyncio.run(two_calls())
    assert [e.message for e in errors] == [
        "HTTP 503: <html><body><h1>503</h1> <p>upstream overloaded</p></body></html>"
    ] * 2
    assert server.connection_of == [0, 0]  # read whole: the connection was kept


PROXY_MODES = [
    "content-length of 1 GiB",
    "endless chunked 200",
    "gzip bomb (1 MiB to 1 GiB)",
    "100 MiB 503 page",
    "endless chunked 503 page",
    "body one byte at a time",
]


@pytest.mark.parametrize("mode", PROXY_MODES)
def test_a_hostile_proxy_is_bounded(
    hostile: Callable[[Handler], Hostile], mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through a proxy, unary calls go through httpx: bounded the same way.
    handler, code, message = HTTP_MODES[mode]
    gzip_bomb()
    server = hostile(handler)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    outcome = measure(connect_call("http://pug.invalid:8080", timeout=call_timeout(code)))
    assert (outcome.error.code, outcome.error.message) == (code, message)
    assert_bounded(outcome, call_timeout(code))
    assert server.heads[0].startswith(f"POST http://pug.invalid:8080/{GET} ".encode())


def _envelope(flags: int, payload: bytes, declared: int | None = None) -> bytes:
    return struct.pack(">BI", flags, len(payload) if declared is None else declared) + payload


STREAM_HEAD = head(
    "200 OK", "content-type: application/connect+proto", "transfer-encoding: chunked"
)
STREAM_MODES: dict[str, tuple[Handler, str, str]] = {
    "a message of 1 GiB": (
        endless(STREAM_HEAD + chunk(_envelope(0, b"", GIB)), chunk(ZEROS)),
        "resource_exhausted",
        f"a stream message is {GIB} bytes, over the limit of {READ_LIMIT}",
    ),
    "a compressed message that inflates to 1 GiB": (
        lambda conn, n, request: answer(
            STREAM_HEAD + chunk(_envelope(1, gzip_bomb())) + b"0\r\n\r\n"
        )(conn, n, request),
        "resource_exhausted",
        f"the response is over the limit of {READ_LIMIT} bytes once decompressed",
    ),
    "100 MiB 503 page": HTTP_MODES["100 MiB 503 page"],
    "headers one byte at a time": HTTP_MODES["headers one byte at a time"],
    "messages one byte at a time": (
        trickle(
            head("200 OK", "content-type: application/connect+proto", "content-length: 1000"),
            b"\x00",
            0.05,
        ),
        "deadline_exceeded",
        f"timed out after {TRICKLE_TIMEOUT:g}s",
    ),
}


@pytest.mark.parametrize("mode", list(STREAM_MODES))
def test_a_hostile_stream_is_bounded(hostile: Callable[[Handler], Hostile], mode: str) -> None:
    handler, code, message = STREAM_MODES[mode]
    gzip_bomb()
    server = hostile(handler)
    outcome = measure(stream_call(server.url, timeout=call_timeout(code)))
    assert (outcome.error.code, outcome.error.message) == (code, message)
    assert_bounded(outcome, call_timeout(code))


# --- gRPC: the scripted HTTP/2 server of hostile.py ----------------------------------------


@pytest.mark.parametrize(
    ("method", "limit"), [(GET, READ_LIMIT), (BATCH_CREATE, INGEST_LIMIT)], ids=["read", "ingest"]
)
def test_a_hostile_grpc_server_is_bounded(method: str, limit: int) -> None:
    with H2Server(grpc_endless_message(GIB)) as server:
        outcome = measure(grpc_call(server.url, method))
    assert (outcome.error.code, outcome.error.message) == (
        "resource_exhausted",
        f"the response message is {GIB} bytes, over the limit of {limit}",
    )
    assert_bounded(outcome)


def test_grpc_read_limit_is_a_transport_option(google_pb2: GoogleMessages) -> None:
    fake = FakePug(google_pb2)
    profile = google_pb2["shared.profiles.v1.Profile"](id="p" * 2000)
    reply = google_pb2["shared.profiles.v1.GetResponse"](profile=profile)
    size = len(reply.SerializeToString())
    with GrpcServer(fake, tls_key_and_chain=None) as server:
        fake.answer_next(GET, reply, reply)
        assert (
            measure(grpc_call(server.url, max_response_bytes=size)).result
            == reply.SerializeToString()
        )
        outcome = measure(grpc_call(server.url, max_response_bytes=size - 1))
    assert (outcome.error.code, outcome.error.message) == (
        "resource_exhausted",
        f"the response message is {size} bytes, over the limit of {size - 1}",
    )


# === 2. malformed HTTP =========================================================================

OK_ANSWER = head("200 OK", "content-type: application/proto", "content-length: 2") + b"ok"


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (
            b"HTTP/1.1 2\xb20 OK\r\ncontent-length: 0\r\n\r\n",
            "not an HTTP/1.x response: 'HTTP/1.1 2²0 OK'",
        ),
        (b"HTTP/1.1 2\xc2\xb20 OK\r\n\r\n", "not an HTTP/1.x response: 'HTTP/1.1 2Â²0 OK'"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "not an HTTP/1.x response: 'HTTP/1.1 20 OK'"),
        (b"HTTP/2 200\r\n\r\n", "not an HTTP/1.x response: 'HTTP/2 200'"),
        (
            b"\x15\x03\x01\x00\x02\x02\x16\r\n\r\n",
            "not an HTTP/1.x response: '\\x15\\x03\\x01\\x00\\x02\\x02\\x16'",
        ),
        (head("200 OK", "content-length: \xb2"), "bad content-length: '²'"),
        (head("200 OK", "content-length: -1"), "bad content-length: '-1'"),
        (head("200 OK", "content-length: 1e3"), "bad content-length: '1e3'"),
        (head("200 OK", "content-length: 2, 3"), "bad content-length: '2, 3'"),
        (head("200 OK", "content-length: " + "9" * 5000), "bad content-length: '" + "9" * 40 + "'"),
        (head("200 OK", "no colon here"), "malformed header line: 'no colon here'"),
        (head("200 OK", "bad name: x"), "malformed header line: 'bad name: x'"),
        (head("200 OK", "x-a: 1", " folded"), "malformed header line: ' folded'"),
        (head("200 OK", "x-a: nul\x00here"), "malformed header line: 'x-a: nul\\x00here'"),
        (head("200 OK", "transfer-encoding: chunked") + b"-5\r\n", "bad chunk size: b'-5'"),
        (head("200 OK", "transfer-encoding: chunked") + b"zz\r\n", "bad chunk size: b'zz'"),
        (head("200 OK", "transfer-encoding: chunked") + b"0x10\r\n", "bad chunk size: b'0x10'"),
        (head("200 OK", "transfer-encoding: chunked") + b"1_0\r\n", "bad chunk size: b'1_0'"),
        (head("200 OK", "transfer-encoding: chunked") + b" 5\r\n", "bad chunk size: b' 5'"),
        (
            head("200 OK", "transfer-encoding: chunked") + b"1" * 17 + b"\r\n",
            "bad chunk size: b'" + "1" * 17 + "'",
        ),
        (
            head("200 OK", "transfer-encoding: chunked") + b"2\r\nabXY",
            "a chunk does not end with CRLF",
        ),
        (
            head("200 OK", "transfer-encoding: gzip, chunked"),
            "unsupported transfer-encoding: 'gzip, chunked'",
        ),
        (
            head("200 OK", "content-encoding: br", "content-length: 2") + b"ok",
            "unsupported content-encoding: 'br'",
        ),
        (
            head("200 OK", "content-encoding: gzip", "content-length: 3") + b"abc",
            "the response says gzip but is not",
        ),
        (
            head("200 OK", "content-encoding: gzip", "content-length: 12")
            + zlib.compress(b"x" * 100, wbits=31)[:12],
            "the response says gzip but is cut short",
        ),
    ],
)
def test_malformed_http_is_unavailable_and_the_connection_is_dropped(
    hostile: Callable[[Handler], Hostile],
    broken: bytes,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def script(conn: socket.socket, n: int, request: bytes) -> bool:
        conn.sendall(broken if n == 0 else OK_ANSWER)
        return True  # the server keeps the connection: dropping it is the client's doing

    server = hostile(script)

    async def two_calls() -> list[bytes | PugError]:
        transport = ConnectTransport(server.url, KEY)
        out: list[bytes | PugError] = []
        try:
            for _ in range(2):
                try:
                    out.append(await transport.unary(GET, BODY, timeout=TIMEOUT))
                except PugError as error:
                    out.append(error)
        finally:
            await transport.aclose()
        return out

    first, second = asyncio.run(two_calls())
    assert isinstance(first, PugError)
    assert (first.code, first.message) == (
        "unavailable",
        f"connection failed: HTTPProtocolError: {message}",
    )
    assert second == b"ok"
    assert server.connection_of == [0, 1]
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.mark.parametrize(
    ("truncated", "message"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-le", "the server closed the connection mid-response"),
        (
            head("200 OK", "content-length: 10") + b"abc",
            "the server closed the connection mid-response",
        ),
        (
            head("200 OK", "transfer-encoding: chunked") + b"5\r\nab",
            "the server closed the connection mid-response",
        ),
        (
            head("200 OK", "transfer-encoding: chunked") + b"5\r\nabcde\r\n",
            "the server closed the connection mid-response",
        ),
        (
            head("200 OK", "transfer-encoding: chunked") + b"0\r\nx-t: 1\r\n",
            "the server closed the connection mid-response",
        ),
    ],
)
def test_a_truncated_response_is_unavailable(
    hostile: Callable[[Handler], Hostile], truncated: bytes, message: str
) -> None:
    server = hostile(answer(truncated, keep=False))
    outcome = measure(connect_call(server.url))
    assert (outcome.error.code, outcome.error.message) == (
        "unavailable",
        f"connection failed: HTTPProtocolError: {message}",
    )


def test_a_gzip_answer_of_several_members_is_whole(hostile: Callable[[Handler], Hostile]) -> None:
    body = zlib.compress(b"abc", wbits=31) + zlib.compress(b"def", wbits=31)
    server = hostile(
        answer(
            head(
                "200 OK",
                "content-type: application/proto",
                "content-encoding: gzip",
                f"content-length: {len(body)}",
            )
            + body
        )
    )
    assert measure(connect_call(server.url)).result == b"abcdef"


# === 3. a 200 that is not a Pug answer =========================================================

PORTAL = (
    b"<html><head><title>Sign in to Caf\xc3\xa9 Wi-Fi</title></head>\n"
    b"<body>Accept the terms</body></html>"
)
PORTAL_QUOTE = (
    "<html><head><title>Sign in to Café Wi-Fi</title></head> <body>Accept the terms</body></html>"
)


def _ok(content_type: str | None, body: bytes) -> bytes:
    headers = [f"content-type: {content_type}"] if content_type is not None else []
    return head("200 OK", *headers, f"content-length: {len(body)}") + body


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (
            "text/html; charset=utf-8",
            PORTAL,
            "unexpected content-type 'text/html; charset=utf-8' from the server "
            f"(HTTP 200, expected application/proto): {PORTAL_QUOTE}",
        ),
        (
            "application/json",
            b"{}",
            "unexpected content-type 'application/json' from the server "
            "(HTTP 200, expected application/proto): {}",
        ),
        (
            "application/protobuf",
            b"",
            "unexpected content-type 'application/protobuf' from the server "
            "(HTTP 200, expected application/proto)",
        ),
    ],
)
@pytest.mark.parametrize("path", ["http11", "proxy"])
def test_a_200_that_is_not_protobuf_is_an_error(
    hostile: Callable[[Handler], Hostile],
    monkeypatch: pytest.MonkeyPatch,
    content_type: str,
    body: bytes,
    message: str,
    path: str,
) -> None:
    server = hostile(answer(_ok(content_type, body)))
    url = server.url
    if path == "proxy":
        monkeypatch.setenv("HTTP_PROXY", server.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        url = "http://pug.invalid:8080"
    outcome = measure(connect_call(url))
    assert (outcome.error.code, outcome.error.message) == ("unknown", message)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/proto", b""),  # an empty message: a valid answer
        ("application/proto", b"\x08\x01"),
        ("Application/Proto; charset=binary", b"\x08\x01"),
        (None, b"\x08\x01"),  # minimal servers send no content-type: taken as protobuf
    ],
)
def test_a_protobuf_200_is_the_answer(
    hostile: Callable[[Handler], Hostile], content_type: str | None, body: bytes
) -> None:
    server = hostile(answer(_ok(content_type, body)))
    assert measure(connect_call(server.url)).result == body


def test_a_stream_200_that_is_not_connect_is_an_error(
    hostile: Callable[[Handler], Hostile],
) -> None:
    server = hostile(answer(_ok("text/html", PORTAL)))
    outcome = measure(stream_call(server.url))
    assert (outcome.error.code, outcome.error.message) == (
        "unknown",
        "unexpected content-type 'text/html' from the server "
        f"(HTTP 200, expected application/connect+proto): {PORTAL_QUOTE}",
    )


def test_a_stream_200_with_content_type_parameters_is_the_answer(
    hostile: Callable[[Handler], Hostile],
) -> None:
    messages = _envelope(0, b"\x08\x01") + _envelope(2, b"{}")
    stream_head = head(
        "200 OK",
        "content-type: Application/Connect+Proto; charset=binary",
        f"content-length: {len(messages)}",
    )
    server = hostile(answer(stream_head + messages))
    assert measure(stream_call(server.url)).result == b"\x08\x01"


def test_a_grpc_200_that_is_not_grpc_is_an_error() -> None:
    def portal(call: H2Call, stream_id: int) -> None:
        call.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "text/html")])
        call.conn.send_data(stream_id, PORTAL, end_stream=True)
        call.flush()

    with H2Server(portal) as server:
        outcome = measure(grpc_call(server.url))
    assert (outcome.error.code, outcome.error.message) == (
        "unknown",
        "Invalid content-type: 'text/html'",
    )


# === 4. Retry-After ============================================================================


def test_retry_after_is_parsed() -> None:
    now = datetime.datetime.now(datetime.UTC)
    in_30s = email.utils.format_datetime(now + datetime.timedelta(seconds=30), usegmt=True)
    past = email.utils.format_datetime(now - datetime.timedelta(hours=1), usegmt=True)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0 ") == 0.0
    assert 27 <= parse_retry_after(in_30s) <= 30  # type: ignore[operator]
    assert parse_retry_after(past) == 0.0
    for bad in (None, "", "soon", "-5", "1.5", "9" * 13, "\xb2", "Mon, 99 Foo 2024 99:99:99 GMT"):
        assert parse_retry_after(bad) is None


@pytest.mark.parametrize(
    ("status", "extra", "body", "code", "retry_after"),
    [
        ("429 Too Many Requests", ["retry-after: 7"], b"slow down", "unavailable", 7.0),
        ("503 Service Unavailable", ["retry-after: 120"], b"", "unavailable", 120.0),
        (
            "429 Too Many Requests",
            ["retry-after: 3", "content-type: application/json"],
            b'{"code": "resource_exhausted", "message": "quota"}',
            "resource_exhausted",
            3.0,
        ),
        ("503 Service Unavailable", ["retry-after: later"], b"", "unavailable", None),
        ("503 Service Unavailable", [], b"", "unavailable", None),
    ],
)
@pytest.mark.parametrize("path", ["http11", "proxy", "stream"])
def test_retry_after_is_on_the_error(
    hostile: Callable[[Handler], Hostile],
    monkeypatch: pytest.MonkeyPatch,
    status: str,
    extra: list[str],
    body: bytes,
    code: str,
    retry_after: float | None,
    path: str,
) -> None:
    server = hostile(answer(head(status, *extra, f"content-length: {len(body)}") + body))
    call = connect_call(server.url)
    if path == "proxy":
        monkeypatch.setenv("HTTP_PROXY", server.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        call = connect_call("http://pug.invalid:8080")
    elif path == "stream":
        call = stream_call(server.url)
    error = measure(call).error
    assert error.code == code
    assert error.retry_after == retry_after


def test_retry_after_as_an_http_date(hostile: Callable[[Handler], Hostile]) -> None:
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
    date = email.utils.format_datetime(when, usegmt=True)
    server = hostile(
        answer(head("503 Service Unavailable", f"retry-after: {date}", "content-length: 0"))
    )
    error = measure(connect_call(server.url)).error
    assert error.retry_after is not None
    assert 57 <= error.retry_after <= 60


@pytest.mark.parametrize(("pushback", "retry_after"), [("1500", 1.5), ("-1", None), (None, None)])
def test_grpc_pushback_is_the_retry_after(pushback: str | None, retry_after: float | None) -> None:
    with H2Server(grpc_refusal(14, "overloaded", pushback)) as server:
        error = measure(grpc_call(server.url)).error
    assert (error.code, error.message, error.retry_after) == (
        "unavailable",
        "overloaded",
        retry_after,
    )


# === 5. the key never leaks ====================================================================


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("prv_a\r\nx-evil: 1", "api_key must be printable ASCII with no spaces"),
        ("prv_ key", "api_key must be printable ASCII with no spaces"),
        ("prv_clé", "api_key must be printable ASCII with no spaces"),
        (
            "prv_from_a_file\n",
            "api_key must be printable ASCII with no spaces: it starts or ends with whitespace "
            "(a newline read with it from a file?)",
        ),
        ("", "api_key must be a non-empty str"),
    ],
)
@pytest.mark.parametrize("transport", ["connect", "grpc"])
def test_a_key_that_cannot_be_a_header_is_refused(key: str, message: str, transport: str) -> None:
    with pytest.raises(ValueError) as raised:
        make_transport(transport, "http://127.0.0.1:1", key)
    assert str(raised.value) == message
    if key:
        assert key.strip() not in str(raised.value)


def key_forms() -> list[str]:
    """How the key may appear in a log line: as text, and as HPACK's Huffman code of it
    inside a logged header block (escaped as bytes are in a repr)."""
    huffman = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(KEY.encode())
    escaped = "".join(
        chr(b) if 0x20 <= b < 0x7F and chr(b) not in "\\'\"" else f"\\x{b:02x}" for b in huffman
    )
    return [KEY, escaped, huffman.hex()]


class Everything(logging.Handler):
    """Keeps every record that reaches the root logger, after the loggers' filters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        parts = [
            record.getMessage(),
            repr(record.args),
            record.exc_text or "",
            record.stack_info or "",
        ]
        with contextlib.suppress(Exception):
            parts.append(logging.Formatter().format(record))  # with the formatted traceback
        self.texts.append("\n".join(parts))


@pytest.fixture
def every_record() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def assert_no_key(texts: list[str]) -> None:
    for form in key_forms():
        leaks = [text for text in texts if form in text]
        assert not leaks, leaks[:3]


def error_texts(error: BaseException) -> list[str]:
    assert isinstance(error, PugError)
    return [str(error), repr(error), error.message, repr(error.details), repr(vars(error))]


@pytest.fixture(scope="module")
def servers(google_pb2: GoogleMessages) -> Iterator[tuple[ConnectServer, GrpcServer]]:
    with (
        ConnectServer(FakePug(google_pb2)) as connect,
        GrpcServer(FakePug(google_pb2), tls_key_and_chain=None) as grpc_server,
    ):
        yield connect, grpc_server


FAILURES = ["ok", "echoed in the error", "unauthenticated", "timeout", "refused connection"]


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("protocol", ["connect", "grpc"])
def test_the_key_is_in_no_log_record_nor_error(
    servers: tuple[ConnectServer, GrpcServer], every_record: Everything, protocol: str, failure: str
) -> None:
    connect, grpc_server = servers
    server: Any = connect if protocol == "connect" else grpc_server
    server.fake.reset()
    url = server.url
    if failure == "echoed in the error":
        server.fake.fail_next(1, "unavailable", f"you sent x-api-key: {KEY}")
    elif failure == "unauthenticated":
        server.fake.required_key = "prv_another"
    elif failure == "timeout":
        server.fake.stall_next(1)
    elif failure == "refused connection":
        url = f"http://127.0.0.1:{closed_port()}"

    async def call() -> bytes:
        transport = make_transport(protocol, url, KEY)
        try:
            return await transport.unary(GET, BODY, timeout=0.5)
        finally:
            await transport.aclose()

    outcome = measure(call)
    texts = list(every_record.texts)
    if failure == "ok":
        assert outcome.result == b""
        if protocol == "grpc":  # hpack logged the headers, the key redacted
            assert any("[redacted]" in t for t in texts)
    else:
        texts += error_texts(outcome.error)
    if failure == "echoed in the error":
        assert outcome.error.message == "you sent x-api-key: [redacted]"
    assert_no_key(texts)


def test_an_echoing_proxy_leaks_no_key(
    hostile: Callable[[Handler], Hostile], every_record: Everything, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 503 whose body (and headers) echo the request: the key is in both.
    def echo(conn: socket.socket, n: int, request: bytes) -> bool:
        lines = request.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        echoed = [b"x-echo-" + line for line in lines]
        page = b"<pre>" + b"\n".join(lines) + b"</pre>"
        conn.sendall(
            b"HTTP/1.1 503 Service Unavailable\r\n"
            + b"".join(e + b"\r\n" for e in echoed)
            + b"content-type: text/html\r\ncontent-length: %d\r\n\r\n" % len(page)
            + page
        )
        return True

    server = hostile(echo)
    errors = [measure(connect_call(server.url)).error, measure(stream_call(server.url)).error]
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    errors.append(measure(connect_call("http://pug.invalid:8080")).error)
    assert [e.code for e in errors] == ["unavailable"] * 3
    assert all("x-api-key: [redacted]" in e.message for e in errors)
    assert all(len(e.message) <= len("HTTP 503: ") + 200 for e in errors)
    # httpcore logged the response's headers (the echoed key among them), redacted.
    assert any("x-echo-x-api-key" in t and "[redacted]" in t for t in every_record.texts)
    assert_no_key(every_record.texts + [t for e in errors for t in error_texts(e)])


def test_what_a_connect_error_says_is_checked_and_redacted(
    hostile: Callable[[Handler], Hostile],
) -> None:
    error_json = (
        b'{"code": "not_a_code", "message": "bad key %s", '
        b'"details": [{"type": "t", "value": "dg", "debug": {"note": "%s"}}]}'
    ) % (KEY.encode(), KEY.encode())
    unary = hostile(
        answer(
            head(
                "400 Bad Request",
                "content-type: application/json",
                f"content-length: {len(error_json)}",
            )
            + error_json
        )
    )
    end = b'{"error": {"code": ["not", "a", "code"], "message": "%s"}}' % KEY.encode()
    stream_body = _envelope(2, end)
    stream = hostile(
        answer(
            head(
                "200 OK",
                "content-type: application/connect+proto",
                f"content-length: {len(stream_body)}",
            )
            + stream_body
        )
    )
    error = measure(connect_call(unary.url)).error
    assert (error.code, error.message) == ("unknown", "bad key [redacted]")
    assert error.details == [{"type": "t", "value": "dg", "debug": {"note": "[redacted]"}}]
    error = measure(stream_call(stream.url)).error
    assert (error.code, error.message) == ("unknown", "[redacted]")


def test_deeply_nested_error_details_are_cut(hostile: Callable[[Handler], Hostile]) -> None:
    nested = b"[" * 900 + b"]" * 900
    body = b'{"code": "invalid_argument", "message": "bad", "details": [%s]}' % nested
    server = hostile(
        answer(
            head(
                "400 Bad Request", "content-type: application/json", f"content-length: {len(body)}"
            )
            + body
        )
    )
    error = measure(connect_call(server.url)).error
    assert (error.code, error.message) == ("invalid_argument", "bad")
    assert "[too deeply nested]" in repr(error.details)


def test_a_transport_collected_while_another_is_made_is_no_deadlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The garbage collector may run a finalizer anywhere, even inside the key registry's
    # lock while a new transport registers its key.
    dropped: list[ConnectTransport | None] = [ConnectTransport("http://127.0.0.1:1", KEY)]
    rebuild = redact_module._rebuild

    def rebuild_and_collect() -> None:
        dropped.clear()
        gc.collect()  # the dropped transport's finalizer runs here
        rebuild()

    monkeypatch.setattr(redact_module, "_rebuild", rebuild_and_collect)
    maker = threading.Thread(target=ConnectTransport, args=("http://127.0.0.1:1", KEY), daemon=True)
    maker.start()
    maker.join(5)
    assert not maker.is_alive()


def test_a_key_across_the_end_of_what_is_quoted_is_cut_out() -> None:
    assert quote(b"a" * 10 + KEY[:12].encode(), KEY) == "a" * 10 + "[redacted]"
    assert quote(b"see " + KEY.encode() + b" here", KEY) == "see [redacted] here"
    assert redact("ProxyError: http://user:secret@proxy:3128 refused", None) == (
        "ProxyError: http://[redacted]@proxy:3128 refused"
    )


@pytest.mark.parametrize("protocol", ["connect", "grpc"])
def test_on_error_and_the_clients_logs_never_show_the_key(
    servers: tuple[ConnectServer, GrpcServer], every_record: Everything, protocol: str
) -> None:
    connect, grpc_server = servers
    server: Any = connect if protocol == "connect" else grpc_server
    server.fake.reset()
    server.fake.fail_next(1000, "unavailable", f"echo {KEY}")
    dead: list[tuple[PugError, list[Any]]] = []
    client = Pug(
        api_key=KEY,
        base_url=server.url,
        transport=protocol,
        retry=RetryPolicy(base=0.001, cap=0.01, random=random.Random(0)),
        on_error=lambda error, items: dead.append((error, items)),
    )
    client.track("user_1", "signed_up", {"plan": "pro"})
    assert not client.flush(0.3)
    client.close(1.0)
    assert dead
    texts = list(every_record.texts)
    for error, items in dead:
        texts += [*error_texts(error), repr(items)]
    assert_no_key(texts)


# === 6. base_url ===============================================================================


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("ftp://x", "base_url must start with http:// or https://, got 'ftp://x'"),
        (
            "ftp://user:secret@x",
            "base_url must start with http:// or https://, got 'ftp://[redacted]@x'",
        ),
        (
            "user:secret@api.pug.dev",
            "base_url must start with http:// or https://, got '[redacted]@api.pug.dev'",
        ),
        ("api.pug.dev", "base_url must start with http:// or https://, got 'api.pug.dev'"),
        (
            "https://user:secret@api.pug.dev",
            "base_url must not carry credentials (user:password@); pass api_key instead: "
            "'https://[redacted]@api.pug.dev'",
        ),
        (
            "https://user:sec/ret@api.pug.dev",
            "base_url has an invalid port (1 to 65535): 'https://[redacted]@api.pug.dev'",
        ),
        ("http://", "base_url has no host: 'http://'"),
        (
            "https://api.pug.dev:00000100000000",
            "base_url has an invalid port (1 to 65535): 'https://api.pug.dev:00000100000000'",
        ),
        (
            "https://api.pug.dev:80:90",
            "base_url has an invalid port (1 to 65535): 'https://api.pug.dev:80:90'",
        ),
        ("http:///path", "base_url has no host: 'http:///path'"),
        (
            "https://api.pug.dev:0",
            "base_url has an invalid port (1 to 65535): 'https://api.pug.dev:0'",
        ),
        (
            "https://api.pug.dev:65536",
            "base_url has an invalid port (1 to 65535): 'https://api.pug.dev:65536'",
        ),
        (
            "https://api.pug.dev:+1",
            "base_url has an invalid port (1 to 65535): 'https://api.pug.dev:+1'",
        ),
        (
            "https://host:notaport",
            "base_url has an invalid port (1 to 65535): 'https://host:notaport'",
        ),
        (
            "https://api.pug.dev/x?api_key=prv_secret",
            "base_url must not have a query or fragment: 'https://api.pug.dev/x?[redacted]'",
        ),
        (
            "https://api.pug.dev/#top",
            "base_url must not have a query or fragment: 'https://api.pug.dev/#[redacted]'",
        ),
        (
            "https://api.pug.dev?",
            "base_url must not have a query or fragment: 'https://api.pug.dev?[redacted]'",
        ),
        (
            "https://api\x00.pug.dev",
            "base_url must not contain control characters (one at index 11): 'https://api\\x00.pug.dev'",
        ),
        (
            "https://api.pug.dev/a\r\nx-evil: 1",
            "base_url must not contain control characters (one at index 21): "
            "'https://api.pug.dev/a\\r\\nx-evil: 1'",
        ),
        (
            "https://api\u200b.pug.dev",
            "base_url must not contain control characters (one at index 11): 'https://api\\u200b.pug.dev'",
        ),
        (
            "https://api pug.dev",
            "base_url's host is not a valid domain name or address: 'https://api pug.dev'",
        ),
        (
            "https://api..pug.dev",
            "base_url's host is not a valid domain name (IDNA cannot encode it): 'https://api..pug.dev'",
        ),
        (
            "https://" + "a" * 64 + ".dev",
            "base_url's host is not a valid domain name (IDNA cannot encode it): 'https://"
            + "a" * 64
            + ".dev'",
        ),
        (
            "https://api.pug.dev\\x",
            "base_url's host is not a valid domain name or address: 'https://api.pug.dev\\\\x'",
        ),
        ("http://[::1", "base_url has an invalid IPv6 address: 'http://[::1'"),
        ("http://[::g]:80", "base_url has an invalid IPv6 address: 'http://[::g]:80'"),
        (
            "http://[fe80::1%25eth0]:80",
            "base_url has an invalid IPv6 address: 'http://[fe80::1%25eth0]:80'",
        ),
        ("", "base_url must be a non-empty string like https://api.example.com"),
        ("   ", "base_url must be a non-empty string like https://api.example.com"),
    ],
)
@pytest.mark.parametrize("protocol", ["connect", "grpc"])
def test_a_bad_base_url_is_refused_with_what_is_wrong(
    base_url: str, message: str, protocol: str
) -> None:
    with pytest.raises(ValueError) as raised:
        make_transport(protocol, base_url, KEY)
    assert str(raised.value) == message
    assert "secret" not in str(raised.value)


def test_a_long_base_url_is_shown_cut() -> None:
    url = "ftp://" + "x" * 10_000
    with pytest.raises(ValueError) as raised:
        parse_base_url(url)
    assert str(raised.value) == (
        f"base_url must start with http:// or https://, got {url[:200]!r}… (10006 characters)"
    )


@pytest.mark.parametrize(
    ("base_url", "parsed"),
    [
        ("https://api.pug.dev", ("https", "api.pug.dev", 443, "")),
        ("HTTPS://API.Pug.Dev:8443/", ("https", "api.pug.dev", 8443, "")),
        (" http://127.0.0.1:8080/base path/ \n", ("http", "127.0.0.1", 8080, "/base path")),
        ("https://Bücher.example/api/", ("https", "xn--bcher-kva.example", 443, "/api")),
        ("http://[::1]:65535", ("http", "::1", 65535, "")),
        ("https://api.pug.dev.", ("https", "api.pug.dev.", 443, "")),
        ("http://pug_internal:1", ("http", "pug_internal", 1, "")),
    ],
)
def test_a_good_base_url_is_parsed(base_url: str, parsed: tuple[str, str, int, str]) -> None:
    url = parse_base_url(base_url)
    assert (url.scheme, url.host, url.port, url.prefix) == parsed
