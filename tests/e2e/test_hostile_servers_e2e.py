"""Hostile servers against the whole client (issue 14): memory bounded, `close()` within its
timeout + 0.5 s, and every event accounted for.

The servers are the scripted ones of tests/support/hostile.py, real, on 127.0.0.1: raw HTTP/1.1
for the Connect transport (endless bodies, gzip bombs, trickled bytes, malformed HTTP, a
captive portal, answers that do not account for the batch), HTTP/2 for gRPC. Here they
face `pug.Pug` itself: events are tracked, the worker sends them, and then

1. `close(timeout=T)` makes one last attempt, returns within T + 0.5 s, and hands every
   event to `on_error` with the exact error that attempt ended with;
2. a batch the worker sends on its own is retried (same event ids, the backoff the policy
   draws, logged exactly) until `close()` hands it to `on_error`;
3. `close()`'s deadline cuts off an attempt still in flight;
4. an answer that does not account for the batch is never counted as sent.

Throughout, tracemalloc's peak and the growth of the process's peak RSS stay within
100 MiB, and `stats()` adds up. What the servers received is decoded with Google's protobuf
(tests/support/protoc_helpers.py), not with the SDK's code.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import random
import re
import resource
import secrets
import socket
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pytest
from accounting import DeadLetters, assert_stats_add_up, ids
from hostile import (
    GIB,
    HTTP_HANDLERS,
    MIB,
    H2Call,
    H2Server,
    Handler,
    Hostile,
    Received,
    answer,
    events_of,
    grpc_answer,
    grpc_endless_message,
    grpc_message,
    grpc_refusal,
    gzip_bomb,
    head,
    request_message,
)
from protoc_helpers import GoogleMessages
from pug import BatchConfig, Pug, PugError, RetryPolicy

KEY = "prv_" + secrets.token_hex(16)
N = 200  # events tracked by each test
TIMEOUT = 0.5  # seconds: the client's per-call timeout
SLOW_TIMEOUT = 0.3  # and against a server that never finishes (only the timeout ends a call)
CLOSE_TIMEOUT = 2.0  # what close() is given (more than a call takes: the call's error shows)
SLACK = 0.5  # how much later than its timeout close() may return
MEMORY_BOUND = 100 * MIB
INGEST_LIMIT = 64 * 1024  # the transports' bound on an answer to BatchCreate
BASE, CAP = 0.01, 0.02  # the retry policy's backoff: short, drawn from a seeded Random
SEED = 14

HTML_QUOTE = "HTTP 503: " + ("<p>overloaded</p> " * 12)[:199] + "…"
PORTAL = (
    b"<html><head><title>Sign in to Caf\xc3\xa9 Wi-Fi</title></head>\n"
    b"<body>Accept the terms</body></html>"
)
PORTAL_QUOTE = (
    "<html><head><title>Sign in to Café Wi-Fi</title></head> <body>Accept the terms</body></html>"
)
BOMB_SIZE = "<the gzip bomb's size>"  # filled in when a test runs (the bomb takes a while)


# --- the modes ---------------------------------------------------------------------------------

Wire = Literal["connect", "grpc"]  # Connect over HTTP/1.1, or gRPC over HTTP/2
Serve = Callable[[GoogleMessages], Any]  # makes a Handler (connect) or a Script (grpc)


@dataclass(frozen=True)
class Mode:
    protocol: Wire
    serve: Serve
    code: str  # the PugError an attempt ends with
    message: str
    slow: bool = False  # the server never finishes: only a deadline ends the attempt

    @property
    def timeout(self) -> float:
        """The client's per-call timeout against this server."""
        return SLOW_TIMEOUT if self.slow else TIMEOUT


def _proto_200(body: bytes) -> bytes:
    return head("200 OK", "content-type: application/proto", f"content-length: {len(body)}") + body


def batch_response(messages: GoogleMessages, **fields: Any) -> bytes:
    response = messages["sdk.events.v1.BatchCreateResponse"](**fields)
    return bytes(response.SerializeToString())


def connect_answer(make: Callable[[GoogleMessages], bytes]) -> Serve:
    """A Connect server that answers every request with the 200 protobuf `make(messages)`."""
    return lambda messages: answer(_proto_200(make(messages)))


def grpc_batch_answer(make: Callable[[GoogleMessages], bytes]) -> Serve:
    return lambda messages: grpc_answer(make(messages))


def _grpc_portal(call: H2Call, stream_id: int) -> None:
    call.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "text/html")])
    call.conn.send_data(stream_id, PORTAL, end_stream=True)
    call.flush()


def _grpc_silence(call: H2Call, stream_id: int) -> None:
    """Reads the request and never answers."""


def _grpc_trickle(call: H2Call, stream_id: int) -> None:
    """A 100-byte message, one byte every 50 ms, until the client resets the stream."""
    call.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
    call.conn.send_data(stream_id, struct.pack(">BI", 0, 100))
    call.flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        call.pump(0.05)
        if stream_id in call.reset or call.closed:
            return
        call.conn.send_data(stream_id, b"\x00")
        call.flush()


def _short(messages: GoogleMessages) -> bytes:
    return batch_response(messages, accepted=N - 1, dropped=0)


def _over(messages: GoogleMessages) -> bytes:
    return batch_response(messages, accepted=150, dropped=60, dropped_by_reason={"quota": 60})


def _reasons_over(messages: GoogleMessages) -> bytes:
    # Adds up (190 + 10 = 200), but names more drops (30) than it counts (10).
    return batch_response(messages, accepted=190, dropped=10, dropped_by_reason={"quota": 30})


def _connect(name: str) -> Serve:
    handler = HTTP_HANDLERS[name]
    return lambda messages: handler


SHORT = f"the server answered accepted={N - 1} dropped=0 for {N} events"
OVER = f"the server answered accepted=150 dropped=60 for {N} events"
NOT_A_RESPONSE = "the answer to BatchCreate is not a BatchCreateResponse"
REASONS_OVER = f"the server answered dropped=10 but dropped_by_reason counts 30, for {N} events"
TIMED_OUT = f"timed out after {SLOW_TIMEOUT:g}s"

MODES: dict[str, Mode] = {
    # The modes of tests/e2e/test_transport_faults.py, met by a BatchCreate (whose answer is
    # held to 64 KiB) within the client's per-call timeout.
    "content-length of 1 GiB": Mode(
        "connect",
        _connect("content-length of 1 GiB"),
        "resource_exhausted",
        f"the response is {GIB} bytes, over the limit of {INGEST_LIMIT}",
    ),
    "endless chunked 200": Mode(
        "connect",
        _connect("endless chunked 200"),
        "resource_exhausted",
        f"the response is over the limit of {INGEST_LIMIT} bytes",
    ),
    "endless 200 delimited by the end of the connection": Mode(
        "connect",
        _connect("endless 200 delimited by the end of the connection"),
        "resource_exhausted",
        f"the response is over the limit of {INGEST_LIMIT} bytes",
    ),
    "gzip bomb (1 MiB to 1 GiB)": Mode(
        "connect",
        _connect("gzip bomb (1 MiB to 1 GiB)"),
        "resource_exhausted",
        f"the response is {BOMB_SIZE} bytes, over the limit of {INGEST_LIMIT}",
    ),
    "100 MiB 503 page": Mode("connect", _connect("100 MiB 503 page"), "unavailable", HTML_QUOTE),
    "endless chunked 503 page": Mode(
        "connect", _connect("endless chunked 503 page"), "unavailable", HTML_QUOTE
    ),
    "endless Connect error JSON": Mode(
        "connect",
        _connect("endless Connect error JSON"),
        "unavailable",
        'HTTP 503: {"code": "unavailable", "message": "' + "x" * 163 + "…",
    ),
    "gzip bomb as a 503 page": Mode(
        "connect", _connect("gzip bomb as a 503 page"), "unavailable", "HTTP 503"
    ),
    "headers one byte at a time": Mode(
        "connect", _connect("headers one byte at a time"), "deadline_exceeded", TIMED_OUT, True
    ),
    "body one byte at a time": Mode(
        "connect", _connect("body one byte at a time"), "deadline_exceeded", TIMED_OUT, True
    ),
    "endless headers": Mode(
        "connect",
        _connect("endless headers"),
        "unavailable",
        "connection failed: HTTPProtocolError: the response's headers are too long",
    ),
    "endless trailers": Mode(
        "connect",
        _connect("endless trailers"),
        "unavailable",
        "connection failed: HTTPProtocolError: the response's trailers are too long",
    ),
    "endless 100 Continue": Mode(
        "connect",
        _connect("endless 100 Continue"),
        "unavailable",
        "connection failed: HTTPProtocolError: more than 8 interim responses",
    ),
    # A 200 that is not Pug's answer, or not one for this batch.
    "captive portal (200 text/html)": Mode(
        "connect",
        lambda messages: answer(
            head(
                "200 OK", "content-type: text/html; charset=utf-8", f"content-length: {len(PORTAL)}"
            )
            + PORTAL
        ),
        "unknown",
        "unexpected content-type 'text/html; charset=utf-8' from the server "
        f"(HTTP 200, expected application/proto): {PORTAL_QUOTE}",
    ),
    "200 proto, not a BatchCreateResponse": Mode(
        "connect",
        connect_answer(lambda messages: b"<html>captive portal</html>"),
        "unknown",
        NOT_A_RESPONSE,
    ),
    "200 proto, a BatchCreateResponse cut short": Mode(
        "connect", connect_answer(lambda messages: b"\x08"), "unknown", NOT_A_RESPONSE
    ),
    "200 BatchCreateResponse, accepted one short": Mode(
        "connect", connect_answer(_short), "unknown", SHORT
    ),
    "200 BatchCreateResponse, accepted + dropped over": Mode(
        "connect", connect_answer(_over), "unknown", OVER
    ),
    "200 BatchCreateResponse, more drops named than counted": Mode(
        "connect", connect_answer(_reasons_over), "unknown", REASONS_OVER
    ),
    # gRPC over HTTP/2.
    "gRPC: a message of 1 GiB": Mode(
        "grpc",
        lambda messages: grpc_endless_message(GIB),
        "resource_exhausted",
        f"the response message is {GIB} bytes, over the limit of {INGEST_LIMIT}",
    ),
    "gRPC: captive portal": Mode(
        "grpc", lambda messages: _grpc_portal, "unknown", "Invalid content-type: 'text/html'"
    ),
    "gRPC: no answer": Mode(
        "grpc", lambda messages: _grpc_silence, "deadline_exceeded", "timed out", True
    ),
    "gRPC: a message one byte at a time": Mode(
        "grpc", lambda messages: _grpc_trickle, "deadline_exceeded", "timed out", True
    ),
    "gRPC: unavailable": Mode(
        "grpc", lambda messages: grpc_refusal(14, "overloaded", None), "unavailable", "overloaded"
    ),
    "gRPC: BatchCreateResponse accepted one short": Mode(
        "grpc", grpc_batch_answer(_short), "unknown", SHORT
    ),
    "gRPC: BatchCreateResponse cut short": Mode(
        "grpc", grpc_batch_answer(lambda messages: b"\x08"), "unknown", NOT_A_RESPONSE
    ),
}
SLOW_MODES = [name for name, mode in MODES.items() if mode.slow]


# --- helpers -----------------------------------------------------------------------------------


class Server(Protocol):
    """What the tests need of either scripted server."""

    url: str
    requests: list[Received]

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool: ...


@pytest.fixture
def serve(hostile: Callable[[Handler], Hostile]) -> Iterator[Callable[[Wire, Any], Server]]:
    """`serve(protocol, handler_or_script)` starts a server (stopped when the test ends)."""
    with contextlib.ExitStack() as stack:

        def start(protocol: Wire, answers: Any) -> Server:
            if protocol == "connect":
                return hostile(answers)
            return stack.enter_context(H2Server(answers))

        yield start


@pytest.fixture
def make_pug() -> Iterator[Callable[..., Pug]]:
    """Clients for the tests; any a failed test left open is closed at its end."""
    made: list[Pug] = []

    def make(url: str, protocol: Wire, on_error: DeadLetters, **options: Any) -> Pug:
        options.setdefault("timeout", TIMEOUT)
        options.setdefault("retry", RetryPolicy(base=BASE, cap=CAP, random=random.Random(SEED)))
        pug = Pug(api_key=KEY, base_url=url, transport=protocol, on_error=on_error, **options)
        made.append(pug)
        return pug

    yield make
    for pug in made:
        pug.close(1)


def track(pug: Pug) -> None:
    for i in range(N):
        pug.track("user_1", "hostile.test", {"i": i, "plan": "pro", "note": "n" * 40})


@dataclass
class Bounds:
    peak: int = 0  # bytes allocated at the peak, over the baseline (tracemalloc)
    rss_growth: int = 0  # growth of the process's peak RSS, bytes

    def check(self) -> None:
        assert self.peak <= MEMORY_BOUND, self.peak
        assert self.rss_growth <= MEMORY_BOUND, self.rss_growth


@contextlib.contextmanager
def memory_measured() -> Iterator[Bounds]:
    bounds = Bounds()
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        yield bounds
        bounds.peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    bounds.rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before


def timed_close(pug: Pug, timeout: float) -> float:
    start = time.monotonic()
    pug.close(timeout)
    return time.monotonic() - start


def expected_message(mode: Mode) -> str:
    return mode.message.replace(BOMB_SIZE, str(len(gzip_bomb())))


def dead_events(dead: DeadLetters, messages: GoogleMessages) -> list[Any]:
    """What on_error was handed, decoded with Google's protobuf."""
    event = messages["sdk.events.v1.Event"]
    return [event.FromString(item.encoded) for item in dead.items]


def indices(events: list[Any]) -> list[int]:
    return sorted(event.custom_properties["i"].int_value for event in events)


def pug_records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "pug" and r.levelno >= logging.WARNING
    ]


def assert_all_dead_lettered_once(
    dead: DeadLetters, server: Server, messages: GoogleMessages
) -> None:
    """on_error got each tracked event once, and they are the events the server was sent
    (every attempt the same ones, same ids)."""
    handed = dead_events(dead, messages)
    assert indices(handed) == list(range(N))
    handed_ids = ids(handed)
    assert len(set(handed_ids)) == N
    assert server.requests
    for received in server.requests:
        assert sorted(ids(events_of(received, messages))) == sorted(handed_ids)


# === 1. close() makes one last attempt, bounded =================================================


@pytest.mark.parametrize("mode_name", list(MODES))
def test_close_makes_one_bounded_attempt_and_hands_every_event_to_on_error(
    serve: Callable[[Wire, Any], Server],
    make_pug: Callable[..., Pug],
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
    mode_name: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="pug")
    mode = MODES[mode_name]
    message = expected_message(mode)  # (made before the measure: the bomb is 1 MiB)
    server = serve(mode.protocol, mode.serve(google_pb2))
    dead = DeadLetters()
    with memory_measured() as bounds:
        # Nothing is sent before close(): a batch waits for 1000 events or a minute.
        pug = make_pug(
            server.url,
            mode.protocol,
            dead,
            timeout=mode.timeout,
            batch=BatchConfig(max_size=1000, max_wait=60),
        )
        track(pug)
        seconds = timed_close(pug, CLOSE_TIMEOUT)
    assert seconds <= CLOSE_TIMEOUT + SLACK, seconds
    bounds.check()
    assert [(e.code, e.message) for e, _ in dead.calls] == [(mode.code, message)]
    assert all(isinstance(e, PugError) for e, _ in dead.calls)
    assert_all_dead_lettered_once(dead, server, google_pb2)
    assert len(server.requests) == 1  # one attempt: no retry once closing
    stats = pug.stats()
    assert (stats.enqueued, stats.sent, stats.failed, stats.retries) == (N, 0, N, 0)
    assert stats.dropped_by_server == {}
    assert_stats_add_up(pug)
    assert pug_records(caplog) == [
        (logging.ERROR, f"{N} item(s) not delivered: {mode.code}: {message}")
    ]


# === 2. a transient failure is retried until close() ===========================================

RETRY_LINE = re.compile(r"sending (\d+) item\(s\) failed \((.*)\); retry (\d+) in (\d+\.\d\d)s")


@pytest.mark.parametrize("mode_name", list(MODES))
def test_a_hostile_answer_is_retried_with_the_same_ids_until_close(
    serve: Callable[[Wire, Any], Server],
    make_pug: Callable[..., Pug],
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
    mode_name: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="pug")
    mode = MODES[mode_name]
    message = expected_message(mode)
    server = serve(mode.protocol, mode.serve(google_pb2))
    dead = DeadLetters()
    with memory_measured() as bounds:
        # The worker sends on its own once N events are queued.
        pug = make_pug(
            server.url,
            mode.protocol,
            dead,
            timeout=mode.timeout,
            batch=BatchConfig(max_size=N, max_wait=60),
        )
        track(pug)
        assert server.wait_for_requests(3), "the batch was not retried"
        assert not pug.flush(0.05)  # neither delivered nor dead-lettered: still retried
        assert not dead.calls
        seconds = timed_close(pug, CLOSE_TIMEOUT)
    assert seconds <= CLOSE_TIMEOUT + SLACK, seconds
    bounds.check()
    # The attempt made at close ended as every attempt did: its error is what on_error got.
    assert [(e.code, e.message) for e, _ in dead.calls] == [(mode.code, message)]
    assert_all_dead_lettered_once(dead, server, google_pb2)
    stats = pug.stats()
    assert (stats.enqueued, stats.sent, stats.failed) == (N, 0, N)
    assert stats.dropped_by_server == {}
    assert stats.retries >= 2
    assert len(server.requests) == stats.retries + 1  # each attempt reached the server once
    assert_stats_add_up(pug)
    # Each retry logged, with the error and the backoff the seeded policy drew.
    draws = random.Random(SEED)
    expected_retries = [
        (
            logging.WARNING,
            f"sending {N} item(s) failed ({mode.code}: {message}); "
            f"retry {n} in {draws.uniform(0, min(CAP, BASE * 2 ** (n - 1))):.2f}s",
        )
        for n in range(1, stats.retries + 1)
    ]
    records = pug_records(caplog)
    assert [r for r in records if RETRY_LINE.fullmatch(r[1])] == expected_retries
    assert [r for r in records if not RETRY_LINE.fullmatch(r[1])] == [
        (logging.WARNING, "flush() timed out after 0.05s with events still queued"),
        (logging.ERROR, f"{N} item(s) not delivered: {mode.code}: {message}"),
    ]


# === 3. close()'s deadline cuts off an attempt in flight ========================================


@pytest.mark.parametrize("mode_name", SLOW_MODES)
def test_close_cuts_off_an_attempt_that_would_outlast_it(
    serve: Callable[[Wire, Any], Server],
    make_pug: Callable[..., Pug],
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
    mode_name: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="pug")
    mode = MODES[mode_name]
    server = serve(mode.protocol, mode.serve(google_pb2))
    dead = DeadLetters()
    close_timeout = 0.5
    with memory_measured() as bounds:
        # The worker sends the batch on its own, with a per-call timeout far beyond
        # close()'s: only close()'s deadline can end that attempt.
        pug = make_pug(
            server.url,
            mode.protocol,
            dead,
            timeout=30.0,
            batch=BatchConfig(max_size=N, max_wait=60),
        )
        track(pug)
        assert server.wait_for_requests(1), "the batch was not sent"
        seconds = timed_close(pug, close_timeout)
    assert close_timeout - 0.1 <= seconds <= close_timeout + SLACK, seconds
    bounds.check()
    message = "close() timed out during delivery"
    assert [(e.code, e.message) for e, _ in dead.calls] == [("deadline_exceeded", message)]
    assert_all_dead_lettered_once(dead, server, google_pb2)
    stats = pug.stats()
    assert (stats.enqueued, stats.sent, stats.failed, stats.retries) == (N, 0, N, 0)
    assert_stats_add_up(pug)
    assert pug_records(caplog) == [
        (logging.ERROR, f"{N} item(s) not delivered: deadline_exceeded: {message}")
    ]


# === 4. an answer that does not account for the batch is not counted as sent ====================


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_short, SHORT),
        (_over, OVER),
        (_reasons_over, REASONS_OVER),
        (lambda messages: b"\x08", NOT_A_RESPONSE),
    ],
    ids=["accepted one short", "accepted + dropped over", "drops named over", "cut short"],
)
@pytest.mark.parametrize("protocol", ["connect", "grpc"])
def test_a_batch_is_counted_sent_only_once_an_answer_accounts_for_it(
    serve: Callable[[Wire, Any], Server],
    make_pug: Callable[..., Pug],
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
    protocol: Wire,
    bad: Callable[[GoogleMessages], bytes],
    message: str,
) -> None:
    # The first answer is wrong, the second accepts the batch (and drops 2 for "quota").
    caplog.set_level(logging.WARNING, logger="pug")
    answered = itertools.count()

    def reply(request: bytes) -> bytes:
        if next(answered) == 0:
            return bad(google_pb2)
        batch: Any = google_pb2["sdk.events.v1.BatchCreateRequest"].FromString(request)
        count = len(batch.events)
        return batch_response(
            google_pb2, accepted=count - 2, dropped=2, dropped_by_reason={"quota": 2}
        )

    def handler(conn: socket.socket, n: int, request: bytes) -> bool:
        conn.sendall(_proto_200(reply(request_message(request))))
        return True

    def script(call: H2Call, stream_id: int) -> None:
        grpc_answer(reply(grpc_message(call, stream_id)))(call, stream_id)

    server = serve(protocol, handler if protocol == "connect" else script)
    dead = DeadLetters()
    pug = make_pug(server.url, protocol, dead, batch=BatchConfig(max_size=N, max_wait=60))
    track(pug)
    assert pug.flush(10)
    pug.close(CLOSE_TIMEOUT)
    assert not dead.calls
    first, second = (events_of(r, google_pb2) for r in server.requests)
    assert ids(first) == ids(second)  # the same events, retried once
    assert indices(second) == list(range(N))
    stats = pug.stats()
    assert (stats.enqueued, stats.sent, stats.failed, stats.retries) == (N, N - 2, 0, 1)
    assert stats.dropped_by_server == {"quota": 2}
    assert_stats_add_up(pug)
    delay = random.Random(SEED).uniform(0, min(CAP, BASE))
    assert pug_records(caplog) == [
        (
            logging.WARNING,
            f"sending {N} item(s) failed (unknown: {message}); retry 1 in {delay:.2f}s",
        ),
        (logging.WARNING, f"the server dropped 2 of {N} events: {{'quota': 2}}"),
    ]
