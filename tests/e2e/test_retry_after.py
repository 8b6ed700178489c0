"""`Retry-After` and gRPC's pushback are honoured by the retry policy (issue 14).

`RetryPolicy.wait_before_retry(attempt, retry_after)` is the backoff `delay(attempt)`
draws, but at least what the server asked, never more than `cap` for that; the worker
passes the error's `retry_after`. Tested as a unit (a seeded
`random.Random`, drawn in step with a twin) and end to end: a real server on 127.0.0.1
(tests/support/hostile.py) refuses the first BatchCreate with a 503 (or 429) and `Retry-After`, or
with gRPC's `grpc-retry-pushback-ms`, then accepts it. The worker's warning shows the delay
it chose, the server's receive times show the retry came no earlier, and every event
arrives exactly once (by event id, decoded with Google's protobuf).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from accounting import DeadLetters, assert_stats_add_up
from hostile import (
    H2Call,
    H2Server,
    Handler,
    Hostile,
    Received,
    events_of,
    grpc_answer,
    grpc_message,
    head,
    request_message,
)
from hostile import grpc_refusal as refusal_script
from protoc_helpers import GoogleMessages
from pug import BatchConfig, Pug, RetryPolicy

KEY = "prv_" + secrets.token_hex(16)
N = 50  # events tracked by each end-to-end test
BASE = 0.01  # the policies' base: a drawn backoff is at most 10 ms on the first retry
SEED = 3
RETRY_LINE = re.compile(r"sending (\d+) item\(s\) failed \((.*)\); retry 1 in (\d+\.\d\d)s")


# === the policy, as a unit ========================================================================


def jitter(draws: random.Random, policy: RetryPolicy, attempt: int) -> float:
    return draws.uniform(0, min(policy.cap, policy.base * 2**attempt))


@pytest.mark.parametrize("retry_after", [None, 0.0, -1.0, math.nan])
def test_without_a_usable_retry_after_the_wait_is_full_jitter(retry_after: float | None) -> None:
    policy = RetryPolicy(base=0.5, cap=30.0, random=random.Random(SEED))
    twin = random.Random(SEED)
    waits = [policy.wait_before_retry(attempt, retry_after) for attempt in range(12)]
    assert waits == [jitter(twin, policy, attempt) for attempt in range(12)]
    assert all(0 <= w <= min(30.0, 0.5 * 2**a) for a, w in enumerate(waits))
    # delay() is that draw alone.
    plain = RetryPolicy(base=0.5, cap=30.0, random=random.Random(SEED))
    assert [plain.delay(attempt) for attempt in range(12)] == waits


RETRY_AFTERS = [0.001, 0.2, 1.0, 7.5, 29.9, 30.0, 30.5, 3600.0, math.inf]


@pytest.mark.parametrize("seed", range(5))
def test_the_wait_is_at_least_retry_after_and_at_most_cap(seed: int) -> None:
    policy = RetryPolicy(base=0.5, cap=30.0, random=random.Random(seed))
    twin = random.Random(seed)
    for attempt in range(10):
        for retry_after in RETRY_AFTERS:
            wait = policy.wait_before_retry(attempt, retry_after)
            # One draw per call, with or without retry_after: the jitter sequence is the
            # twin's, and the wait is the larger of the draw and what was asked (capped).
            drawn = jitter(twin, policy, attempt)
            assert wait == max(drawn, min(30.0, retry_after))
            assert min(30.0, retry_after) <= wait <= 30.0


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(base=0.01, cap=0.5, random=random.Random(SEED))
    wait = policy.wait_before_retry
    assert [wait(0, 3600.0), wait(5, 0.7), wait(0, math.inf)] == [0.5] * 3
    # Below the cap, what was asked (the draw, at most base·2ⁿ = 0.01 here, is smaller).
    assert wait(0, 0.25) == 0.25
    assert wait(64, None) <= 0.5  # no overflow for a long outage's attempt count
    assert wait(10_000, None) <= 0.5


class Schedule(RetryPolicy):
    """A policy that changes the backoff (as a subclass may): a fixed schedule."""

    def delay(self, attempt: int) -> float:
        return [0.0, 0.3, 40.0][min(attempt, 2)]


def test_a_subclass_that_changes_the_backoff_still_honours_retry_after() -> None:
    policy = Schedule(base=0.01, cap=5.0)
    assert [policy.wait_before_retry(a, None) for a in range(3)] == [0.0, 0.3, 40.0]
    assert [policy.wait_before_retry(a, 1.0) for a in range(3)] == [1.0, 1.0, 40.0]
    assert policy.wait_before_retry(0, 3600.0) == 5.0  # what was asked, up to cap


# === end to end: HTTP/1.1 =========================================================================


@dataclass
class Refused:
    """When the server sent the refusal, by the monotonic clock and the wall clock."""

    monotonic: float = 0.0
    wall: float = 0.0


def accept(messages: GoogleMessages, request: bytes) -> bytes:
    """A BatchCreateResponse accepting every event of the request (Google's protobuf)."""
    batch: Any = messages["sdk.events.v1.BatchCreateRequest"].FromString(request)
    count = len(batch.events)
    response = messages["sdk.events.v1.BatchCreateResponse"](accepted=count, dropped=0)
    return bytes(response.SerializeToString())


def refuse_then_accept(
    messages: GoogleMessages, status: str, retry_after: Callable[[], str | None], refused: Refused
) -> Handler:
    """Refuses the first request with `status` and `Retry-After: retry_after()` (made when
    it answers), accepts the rest."""

    def handler(conn: socket.socket, n: int, request: bytes) -> bool:
        if n == 0:
            value = retry_after()
            extra = [] if value is None else [f"retry-after: {value}"]
            refused.monotonic, refused.wall = time.monotonic(), time.time()
            conn.sendall(head(status, *extra, "content-length: 0"))
            return True
        body = accept(messages, request_message(request))
        conn.sendall(
            head("200 OK", "content-type: application/proto", f"content-length: {len(body)}") + body
        )
        return True

    return handler


@pytest.fixture
def make_pug() -> Iterator[Callable[..., Pug]]:
    made: list[Pug] = []

    def make(url: str, protocol: Literal["connect", "grpc"], **options: Any) -> Pug:
        options.setdefault("batch", BatchConfig(max_size=N, max_wait=60))  # sent when full
        options.setdefault("timeout", 5.0)
        pug = Pug(api_key=KEY, base_url=url, transport=protocol, **options)
        made.append(pug)
        return pug

    yield make
    for pug in made:
        pug.close(1)


def track(pug: Pug) -> None:
    for i in range(N):
        pug.track("user_1", "retry.after", {"i": i})


def assert_delivered_once(requests: list[Received], messages: GoogleMessages) -> None:
    """Two requests: the refused one and its retry, same ids; each event once."""
    refused, retried = (events_of(r, messages) for r in requests)
    ids = [e.event_id for e in retried]
    assert [e.event_id for e in refused] == ids
    assert len(set(ids)) == N
    assert sorted(e.custom_properties["i"].int_value for e in retried) == list(range(N))


def retry_warning(caplog: pytest.LogCaptureFixture) -> tuple[str, float]:
    """The one warning the pug logger gave: the retry; its error text and its delay."""
    records = [
        r.getMessage() for r in caplog.records if r.name == "pug" and r.levelno >= logging.WARNING
    ]
    assert len(records) == 1, records
    match = RETRY_LINE.fullmatch(records[0])
    assert match is not None, records[0]
    assert int(match[1]) == N
    return match[2], float(match[3])


def http_date_in(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("status", "retry_after", "cap", "delay"),
    [
        ("503 Service Unavailable", "1", 30.0, 1.0),
        ("429 Too Many Requests", "1", 30.0, 1.0),
        ("503 Service Unavailable", "3600", 0.5, 0.5),  # capped
        ("503 Service Unavailable", None, 30.0, None),  # none asked: the drawn jitter
    ],
    ids=["503 1s", "429 1s", "503 3600s capped at 0.5s", "503 without Retry-After"],
)
def test_retry_after_in_seconds_is_honoured_up_to_the_cap(
    hostile: Callable[[Handler], Hostile],
    make_pug: Callable[..., Pug],
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
    status: str,
    retry_after: str | None,
    cap: float,
    delay: float | None,
) -> None:
    caplog.set_level(logging.WARNING, logger="pug")
    refused = Refused()
    server = hostile(refuse_then_accept(google_pb2, status, lambda: retry_after, refused))
    dead = DeadLetters()
    pug = make_pug(
        server.url,
        "connect",
        retry=RetryPolicy(base=BASE, cap=cap, random=random.Random(SEED)),
        on_error=dead,
    )
    track(pug)
    assert pug.flush(10)
    pug.close(2)
    if delay is None:
        delay = random.Random(SEED).uniform(0, BASE)
    error, logged = retry_warning(caplog)
    assert (error, logged) == (f"unavailable: HTTP {status[:3]}", round(delay, 2))
    # The retry came no earlier than the delay (counted from when the refusal was sent,
    # before the client read it: a lower bound), and not much later.
    gap = server.requests[1].at - refused.monotonic
    assert delay <= gap <= delay + 2.0, (gap, delay)
    assert_delivered_once(server.requests, google_pb2)
    stats = pug.stats()
    assert (stats.enqueued, stats.sent, stats.failed, stats.retries) == (N, N, 0, 1)
    assert not dead.calls
    assert_stats_add_up(pug)


def test_retry_after_as_an_http_date_is_honoured(
    hostile: Callable[[Handler], Hostile],
    make_pug: Callable[..., Pug],
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pug")
    refused = Refused()
    dates: list[str] = []

    def date() -> str:
        dates.append(http_date_in(2))  # whole seconds: 1 to 2 s from now
        return dates[-1]

    server = hostile(refuse_then_accept(google_pb2, "503 Service Unavailable", date, refused))
    pug = make_pug(server.url, "connect", retry=RetryPolicy(base=BASE, random=random.Random(SEED)))
    track(pug)
    assert pug.flush(10)
    pug.close(2)
    # The delay asked for, as of when the refusal was sent: the client read it later, so it
    # waits a little less, from a little later; the retry comes no earlier than the date.
    asked = email.utils.parsedate_to_datetime(dates[0]).timestamp() - refused.wall
    assert 1.0 - 0.05 < asked <= 2.0
    error, logged = retry_warning(caplog)
    assert error == "unavailable: HTTP 503"
    assert asked - 0.5 <= logged <= asked + 0.005, (logged, asked)
    gap = server.requests[1].at - refused.monotonic
    assert asked - 0.02 <= gap <= asked + 2.0, (gap, asked)  # 0.02: wall vs monotonic clock
    assert_delivered_once(server.requests, google_pb2)
    stats = pug.stats()
    assert (stats.sent, stats.failed, stats.retries) == (N, 0, 1)
    assert_stats_add_up(pug)


class Logged(logging.Handler):
    """Sets `seen` once a record whose message matches `pattern` is emitted."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__(logging.WARNING)
        self.pattern = pattern
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.pattern.fullmatch(record.getMessage()):
            self.seen.set()


def test_close_does_not_wait_out_a_long_retry_after(
    hostile: Callable[[Handler], Hostile],
    make_pug: Callable[..., Pug],
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Retry-After: 3600 with the default cap: the worker would wait 30 s; close() makes its
    # last attempt at once instead, and it is delivered.
    caplog.set_level(logging.WARNING, logger="pug")
    server = hostile(
        refuse_then_accept(google_pb2, "503 Service Unavailable", lambda: "3600", Refused())
    )
    pug = make_pug(server.url, "connect", retry=RetryPolicy(random=random.Random(SEED)))
    waiting = Logged(RETRY_LINE)
    logging.getLogger("pug").addHandler(waiting)
    try:
        track(pug)
        assert waiting.seen.wait(10), "no retry was scheduled"
    finally:
        logging.getLogger("pug").removeHandler(waiting)
    start = time.monotonic()
    pug.close(2)
    assert time.monotonic() - start <= 2.5
    assert retry_warning(caplog) == ("unavailable: HTTP 503", 30.0)
    assert server.requests[1].at - server.requests[0].at < 2.5
    assert_delivered_once(server.requests, google_pb2)
    stats = pug.stats()
    assert (stats.sent, stats.failed, stats.retries) == (N, 0, 1)
    assert_stats_add_up(pug)


# === end to end: gRPC's pushback ==================================================================


@pytest.mark.parametrize(
    ("pushback", "cap", "delay"),
    [("1000", 30.0, 1.0), ("60000", 0.5, 0.5)],
    ids=["1000 ms", "60000 ms capped at 0.5s"],
)
def test_grpc_pushback_is_honoured_up_to_the_cap(
    make_pug: Callable[..., Pug],
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
    pushback: str,
    cap: float,
    delay: float,
) -> None:
    caplog.set_level(logging.WARNING, logger="pug")
    refused = Refused()
    refuse = refusal_script(14, "overloaded", pushback)
    streams: list[int] = []

    def script(call: H2Call, stream_id: int) -> None:
        streams.append(stream_id)
        if len(streams) == 1:
            refused.monotonic = time.monotonic()
            refuse(call, stream_id)
        else:
            grpc_answer(accept(google_pb2, grpc_message(call, stream_id)))(call, stream_id)

    with H2Server(script) as server:
        pug = make_pug(
            server.url, "grpc", retry=RetryPolicy(base=BASE, cap=cap, random=random.Random(SEED))
        )
        track(pug)
        assert pug.flush(10)
        pug.close(2)
    assert retry_warning(caplog) == ("unavailable: overloaded", delay)
    gap = server.requests[1].at - refused.monotonic
    assert delay <= gap <= delay + 2.0, (gap, delay)
    assert_delivered_once(server.requests, google_pb2)
    stats = pug.stats()
    assert (stats.enqueued, stats.sent, stats.failed, stats.retries) == (N, N, 0, 1)
    assert_stats_add_up(pug)
