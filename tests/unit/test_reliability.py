"""Reliability of the ingestion client: nothing lost, nothing doubled, everything bounded.

Every test drives the public client (`Pug`, `AsyncPug`) against `InMemoryTransport` and
waits on real signals: `flush()` and `close()` (which block until delivery or
dead-lettering), futures, `threading.Event`s, or — only where the SDK offers no signal,
such as "the worker has sent a request on its own" — a polled condition with a deadline.

Large deliveries are decoded with Google's protobuf (upb, see conftest.py) rather than the
betterproto2 stubs behind `InMemoryTransport.events()`: the stubs take ~300 µs an event,
which would make the 100 000-event tests take minutes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import threading
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from accounting import DeadLetters, assert_stats_add_up, ids, wait_until
from google.protobuf.message import Message as GoogleMessage
from protoc_helpers import GoogleMessages
from pug import AsyncPug, BatchConfig, Pug, PugError, RetryPolicy, TrackedEvent
from pug._wire import protobuf as pb
from pug.config import MAX_REQUEST_BYTES, MAX_REQUEST_EVENTS
from pug.proto.sdk.events.v1 import BatchCreateRequest
from pug.testing import InMemoryTransport
from pug.transports.base import BATCH_CREATE, IDENTIFY
from servers import closed_port

API_KEY = "prv_test"
# Event kinds here are custom ("rel.*"): the typed-event registry is process-wide, and other
# test modules import catalogs whose kinds (order.completed, ...) would then be validated.
AFTER_CLOSE = "track() after close(); the event was dropped"

# --- helpers ---------------------------------------------------------------------------------

MakePug = Callable[..., Pug]


def fast_retry() -> RetryPolicy:
    """Backoff of at most 10 ms, so retries never make a test sleep noticeably."""
    return RetryPolicy(base=0.001, cap=0.01, random=random.Random(0))


@pytest.fixture
def make_pug() -> Iterator[MakePug]:
    """Build clients with test defaults; every client is closed when the test ends, so no
    worker thread outlives its test (and atexit has nothing left to flush)."""
    made: list[Pug] = []

    def make(transport: InMemoryTransport, **options: Any) -> Pug:
        options.setdefault("batch", BatchConfig(max_size=100, max_wait=5.0))
        options.setdefault("retry", fast_retry())
        pug = Pug(api_key=options.pop("api_key", API_KEY), transport=transport, **options)
        made.append(pug)
        return pug

    yield make
    for pug in made:
        pug.close(1)
        assert_stats_add_up(pug)


def ints(events: list[Any], key: str) -> list[int]:
    """The int property `key` of each event (works for stubs and Google messages alike)."""
    return [event.custom_properties[key].int_value for event in events]


def fast_events(transport: InMemoryTransport, google_pb2: GoogleMessages) -> list[GoogleMessage]:
    """Every delivered event, in delivery order, decoded with Google's (fast) protobuf."""
    batch = google_pb2["sdk.events.v1.BatchCreateRequest"]
    return [
        event
        for method, body in transport.requests
        if method == BATCH_CREATE
        for event in batch.FromString(body).events
    ]


def attempted_events(transport: InMemoryTransport) -> list[list[Any]]:
    """The events of every BatchCreate attempt, failed ones included, as stubs."""
    return [
        BatchCreateRequest.parse(body).events
        for method, body in transport.attempts
        if method == BATCH_CREATE
    ]


class IdRecorder:
    """A `before_send` that changes nothing and notes each event id, in tracking order:
    the only way a caller learns the ids `track()` chose."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, event: TrackedEvent) -> TrackedEvent:
        self.ids.append(event.event_id)
        return event


# --- 1. concurrency --------------------------------------------------------------------------


def test_concurrent_tracks_are_all_delivered_once_in_per_thread_order(
    make_pug: MakePug, google_pb2: GoogleMessages
) -> None:
    threads, per_thread = 8, 10_000
    transport = InMemoryTransport()
    pug = make_pug(transport, batch=BatchConfig(max_size=1000, max_wait=5.0))
    start = threading.Barrier(threads)

    def producer(t: int) -> None:
        start.wait()  # all threads hammer the queue at the same time
        for i in range(per_thread):
            pug.track(f"user_{t}", "rel.load", {"thread": t, "seq": i})

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert pug.flush(30)

    events = fast_events(transport, google_pb2)
    assert len(events) == threads * per_thread
    assert len(set(ids(events))) == threads * per_thread
    by_thread: dict[int, list[int]] = {t: [] for t in range(threads)}
    for event in events:
        by_thread[event.custom_properties["thread"].int_value].append(
            event.custom_properties["seq"].int_value
        )
    # Delivery order keeps each thread's order, and no (thread, seq) is missing or doubled.
    assert by_thread == {t: list(range(per_thread)) for t in range(threads)}
    stats = pug.stats()
    assert (stats.enqueued, stats.sent, stats.dropped_queue_full) == (80_000, 80_000, 0)


# --- 2. transient outage: retries with the same ids, jittered exponential backoff ------------


@dataclass
class RecordingRetry(RetryPolicy):
    """The real policy, noting every (attempt, delay) the worker asks for."""

    delays: list[tuple[int, float]] = field(default_factory=list)

    def delay(self, attempt: int) -> float:
        value = super().delay(attempt)
        self.delays.append((attempt, value))
        return value


def test_outage_is_retried_with_the_same_ids_and_jittered_exponential_backoff(
    make_pug: MakePug,
) -> None:
    seed, base, cap = 1234, 0.001, 1.0
    retry = RecordingRetry(base=base, cap=cap, random=random.Random(seed))
    transport = InMemoryTransport()
    transport.fail("unavailable", count=5)
    pug = make_pug(transport, retry=retry)
    for i in range(50):
        pug.track("user_1", "rel.order", {"i": i})
    assert pug.flush(10)

    # Six attempts of one batch: five failed, the sixth delivered.
    attempts = attempted_events(transport)
    assert len(attempts) == 6
    delivered = transport.events()
    assert ints(delivered, "i") == list(range(50))
    assert len(set(ids(delivered))) == 50
    # Every retry resent the very events first attempted: same ids, same occur times.
    first_try = [(e.event_id, e.occur_time) for e in attempts[0]]
    for failed in attempts[:5]:
        assert [(e.event_id, e.occur_time) for e in failed] == first_try
    assert [(e.event_id, e.occur_time) for e in delivered] == first_try
    assert pug.stats().retries == 5
    assert pug.stats().sent == 50

    # Full jitter: the n-th delay is uniform in [0, min(cap, base * 2**n)] ...
    ceilings = [min(cap, base * 2**n) for n in range(5)]
    assert [attempt for attempt, _ in retry.delays] == [0, 1, 2, 3, 4]
    for (_, delay), ceiling in zip(retry.delays, ceilings, strict=True):
        assert 0 <= delay <= ceiling
    assert any(d != c for (_, d), c in zip(retry.delays, ceilings, strict=True))
    # ... drawn from the policy's own generator, exactly as a fresh one seeded alike gives
    # (so the ceilings really doubled: 1, 2, 4, 8, 16 ms).
    reference = random.Random(seed)
    assert [delay for _, delay in retry.delays] == [reference.uniform(0, c) for c in ceilings]


# --- 3. permanent failures are dead-lettered at once -----------------------------------------


@pytest.mark.parametrize("code", ["permission_denied", "unauthenticated"])
def test_permanent_failure_is_dead_lettered_without_retry(make_pug: MakePug, code: str) -> None:
    transport = InMemoryTransport()
    transport.fail(code, count=1)
    dead = DeadLetters()
    pug = make_pug(transport, on_error=dead)
    for i in range(7):
        pug.track("user_1", "rel.order", {"i": i})
    assert pug.flush(10)  # returns only once on_error has run

    assert len(transport.attempts) == 1  # never retried
    assert transport.requests == []
    (attempt,) = attempted_events(transport)
    assert ids(dead.items) == ids(attempt)
    assert ints(dead.items, "i") == list(range(7))
    ((error, _),) = dead.calls
    assert (error.code, error.message) == (code, "injected failure")
    stats = pug.stats()
    assert (stats.failed, stats.retries, stats.sent) == (7, 0, 0)

    # The client is not stuck: the next event goes through.
    pug.track("user_1", "rel.order", {"i": 7})
    assert pug.flush(10)
    assert ints(transport.events(), "i") == [7]


def test_a_batch_refused_as_invalid_is_split_and_only_the_refused_events_dead_lettered(
    make_pug: MakePug,
) -> None:
    """A server refuses a whole batch for one event it finds invalid: the client finds
    that event by sending halves (same ids), delivers the rest, dead-letters only it."""
    bad = {3, 11}
    delivered: list[Any] = []

    def refuse_batches_with_a_bad_event(method: str, body: bytes) -> bytes:
        events = BatchCreateRequest.parse(body).events
        if any(e.custom_properties["i"].int_value in bad for e in events):
            raise PugError("invalid_argument", "events[0].kind: value does not match regex")
        delivered.extend(events)
        return b"\x08" + pb.varint(len(events))

    transport = InMemoryTransport(handler=refuse_batches_with_a_bad_event)
    dead = DeadLetters()
    pug = make_pug(transport, on_error=dead, batch=BatchConfig(max_size=16, max_wait=60.0))
    for i in range(16):
        pug.track("user_1", "rel.order", {"i": i})
    assert pug.flush(10)
    assert sorted(ints(delivered, "i")) == sorted(set(range(16)) - bad)
    assert ints(dead.items, "i") == sorted(bad)
    assert set(dead.codes) == {"invalid_argument"}
    attempted = {e.event_id for batch in attempted_events(transport) for e in batch}
    assert attempted == set(ids(delivered)) | set(ids(dead.items))
    assert len(ids(delivered)) == len(set(ids(delivered))) == 14  # each once
    stats = pug.stats()
    assert (stats.enqueued, stats.sent, stats.failed) == (16, 14, 2)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"<html>captive portal</html>", "is not a BatchCreateResponse"),
        (b"\x08\x01", "accepted=1 dropped=0 for 5 events"),
    ],
)
def test_an_answer_that_does_not_account_for_the_batch_is_retried(
    make_pug: MakePug, caplog: pytest.LogCaptureFixture, answer: bytes, why: str
) -> None:
    answers = [answer]

    def answer_badly_once(method: str, body: bytes) -> bytes:
        return answers.pop() if answers else b"\x08" + pb.varint(pb.count_events(body))

    transport = InMemoryTransport(handler=answer_badly_once)
    pug = make_pug(transport)
    for i in range(5):
        pug.track("user_1", "rel.order", {"i": i})
    with caplog.at_level(logging.WARNING, logger="pug"):
        assert pug.flush(10)
    (first, second) = attempted_events(transport)
    assert ids(first) == ids(second)  # the same events, retried
    assert ints(second, "i") == list(range(5))
    assert why in caplog.text
    stats = pug.stats()
    assert (stats.sent, stats.retries, stats.failed) == (5, 1, 0)


def test_events_the_server_drops_are_counted_per_reason_not_as_sent(make_pug: MakePug) -> None:
    def drop_two(method: str, body: bytes) -> bytes:
        n = pb.count_events(body)
        reason = b"\n\x05quota\x10\x02"  # dropped_by_reason {"quota": 2}
        return b"\x08" + pb.varint(n - 2) + b"\x10\x02" + b"\x1a" + bytes([len(reason)]) + reason

    transport = InMemoryTransport(handler=drop_two)
    pug = make_pug(transport)
    for i in range(5):
        pug.track("user_1", "rel.order", {"i": i})
    assert pug.flush(10)
    stats = pug.stats()
    assert (stats.enqueued, stats.sent, stats.dropped_by_server) == (5, 3, {"quota": 2})


def test_dead_letters_are_the_queued_bytes_and_resend_delivers_them_unchanged(
    make_pug: MakePug, google_pb2: GoogleMessages
) -> None:
    transport = InMemoryTransport()
    transport.fail("permission_denied", count=2)
    dead = DeadLetters()
    pug = make_pug(transport, on_error=dead)
    for i in range(3):
        pug.track("user_1", "rel.order", {"i": i})
    assert pug.flush(10)
    pug.identify("user_1", {"plan": "pro"})
    assert pug.flush(10)
    items = dead.items
    assert [item.is_identify for item in items] == [False, False, False, True]
    # What on_error holds is what was attempted, byte for byte (decoded independently).
    event = google_pb2["sdk.events.v1.Event"]
    (attempt,) = attempted_events(transport)
    assert [event.FromString(item.encoded) for item in items[:3]] == [
        event.FromString(bytes(e)) for e in attempt
    ]
    identify = google_pb2["sdk.profiles.v1.IdentifyRequest"].FromString(items[3].encoded)
    assert identify.external_id == items[3].external_id == "user_1"
    assert "prv_" not in repr(items)

    pug.resend(items)  # the server is up again
    assert pug.flush(10)
    assert ids(transport.events()) == ids(attempt)
    assert [e.occur_time for e in transport.events()] == [e.occur_time for e in attempt]
    assert [i.external_id for i in transport.identifies()] == ["user_1"]
    stats = pug.stats()
    assert (stats.enqueued, stats.failed, stats.sent, stats.identifies_sent) == (8, 4, 3, 1)


def test_flush_returns_only_after_on_error_has_run(make_pug: MakePug) -> None:
    transport = InMemoryTransport()
    transport.fail("invalid_argument", count=1)
    release, finished = threading.Event(), threading.Event()

    def slow_sink(error: PugError, items: list[Any]) -> None:
        # A dead-letter sink that takes a moment (writes to disk, say). The wait is no
        # synchronisation: the test releases it only after flush() returns.
        release.wait(0.5)
        finished.set()

    pug = make_pug(transport, on_error=slow_sink)
    pug.track("user_1", "rel.order")
    try:
        assert pug.flush(10)
        # flush() promises "delivered or dead-lettered": the sink must have been called.
        assert finished.is_set()
    finally:
        release.set()


# --- 4. a bounded queue under a dead transport -----------------------------------------------


def test_dead_transport_keeps_the_queue_bounded_and_dead_letters_the_oldest(
    make_pug: MakePug,
) -> None:
    transport = InMemoryTransport()
    transport.fail("unavailable", count=None)
    dead = DeadLetters()
    recorder = IdRecorder()
    pug = make_pug(
        transport,
        batch=BatchConfig(max_size=10, max_queue_size=100, max_wait=60.0),
        on_error=dead,
        before_send=recorder,
    )
    # The first 10 fill one batch, which the worker takes and then retries forever.
    for i in range(10):
        pug.track("user_1", "rel.view", {"seq": i})
    wait_until(lambda: len(transport.attempts) >= 1, "the first attempt")
    lengths = []
    for i in range(10, 1000):
        pug.track("user_1", "rel.view", {"seq": i})
        lengths.append(pug.stats().queue_length)
    assert max(lengths) == 100

    # In flight: events 0-9. Queued: the newest 100 (900-999). Dropped: 10-899, oldest first.
    in_flight = recorder.ids[:10]
    assert ids(attempted_events(transport)[0]) == in_flight
    assert pug.stats().dropped_queue_full == 890
    assert dead.wait_for(890)
    assert ids(dead.items) == recorder.ids[10:900]
    assert set(dead.codes) == {"resource_exhausted"}
    assert {error.message for error, _ in dead.calls} == {"queue full"}

    transport.recover()
    assert pug.flush(10)
    delivered = transport.events()
    assert ids(delivered) == in_flight + recorder.ids[900:]
    stats = pug.stats()
    assert (stats.sent, stats.dropped_queue_full, stats.queue_length) == (110, 890, 0)
    assert len(dead.items) == 890  # nothing dead-lettered twice


# tracemalloc makes every allocation slow (tracking into a full queue runs ~5x slower), so
# these track 20 000 more events: ~4 MB encoded, twice the bound, were they all kept.
MORE_EVENTS = 20_000
MEMORY_BOUND = 2 * 1024 * 1024


def retained_growth(run: Callable[[], None]) -> int:
    """Traced memory still held after `run`, above what was held before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def fill_a_dead_client(pug: Pug, transport: InMemoryTransport) -> None:
    """One batch of 10 stuck in retries, a full queue of 100 behind it (100 dropped)."""
    for i in range(10):
        pug.track("user_1", "rel.view", {"seq": i})
    wait_until(lambda: len(transport.attempts) >= 1, "the first attempt")
    for i in range(200):
        pug.track("user_1", "rel.view", {"seq": i})
    assert pug.stats().queue_length == 100


def track_more(pug: Pug) -> None:
    for i in range(MORE_EVENTS):
        pug.track("user_1", "rel.view", {"seq": i})


def test_an_outage_leaves_no_memory_behind(
    caplog: pytest.LogCaptureFixture, make_pug: MakePug
) -> None:
    # No records: pytest keeps every log record, which would be what grows. (caplog comes
    # first so the level still holds when make_pug closes the client.)
    caplog.set_level(logging.CRITICAL, logger="pug")
    transport = InMemoryTransport()
    transport.fail("unavailable", count=None)
    pug = make_pug(transport, batch=BatchConfig(max_size=10, max_queue_size=100, max_wait=60.0))
    fill_a_dead_client(pug, transport)

    def outage_then_recovery() -> None:
        track_more(pug)
        assert pug.stats().queue_length == 100
        transport.recover()
        # flush() also waits for every dropped event to be dead-lettered.
        assert pug.flush(10)

    growth = retained_growth(outage_then_recovery)

    assert growth < MEMORY_BOUND
    stats = pug.stats()
    assert (stats.dropped_queue_full, stats.sent, stats.queue_length) == (
        100 + MORE_EVENTS,
        10 + 100,
        0,
    )


class SlowRetry(RetryPolicy):
    """The backoff a long outage reaches (the default cap is 30 s)."""

    def delay(self, attempt: int) -> float:
        return 30.0


def test_memory_stays_bounded_while_tracking_into_a_full_queue(
    caplog: pytest.LogCaptureFixture, make_pug: MakePug
) -> None:
    caplog.set_level(logging.CRITICAL, logger="pug")
    transport = InMemoryTransport()
    transport.fail("unavailable", count=None)
    pug = make_pug(
        transport,
        # What events dropped for a full queue may hold while they wait for on_error is an
        # eighth of max_queue_bytes: 128 KiB here.
        batch=BatchConfig(
            max_size=10, max_queue_size=100, max_queue_bytes=1024 * 1024, max_wait=60.0
        ),
        retry=SlowRetry(),
    )
    fill_a_dead_client(pug, transport)  # the worker now sleeps 30 s before its next try

    growth = retained_growth(lambda: track_more(pug))

    assert pug.stats().queue_length == 100  # the queue itself honours its bound ...
    assert growth < MEMORY_BOUND  # ... but every event it dropped is still held (~16 MB)


# --- 5, 6. close() ---------------------------------------------------------------------------


def test_close_drains_the_queue_and_later_tracks_are_dropped_with_a_warning(
    make_pug: MakePug, caplog: pytest.LogCaptureFixture
) -> None:
    transport = InMemoryTransport()
    # Neither size nor time would send these: only close() does.
    pug = make_pug(transport, batch=BatchConfig(max_size=1000, max_wait=60.0))
    for i in range(250):
        pug.track("user_1", "rel.order", {"i": i})
    assert transport.requests == []

    pug.close(5)
    assert ints(transport.events(), "i") == list(range(250))
    assert len(transport.requests) == 1
    assert transport.closed

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pug"):
        pug.track("user_1", "rel.order", {"i": 250})
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("pug", logging.WARNING, AFTER_CLOSE)
    ]
    assert pug.flush(1)  # nothing is pending: the dropped event was never queued
    pug.close(5)  # idempotent: no error, nothing sent again
    assert len(transport.attempts) == 1
    assert ints(transport.events(), "i") == list(range(250))
    assert pug.stats().sent == 250


def test_close_with_a_dead_transport_makes_one_attempt_then_dead_letters(
    make_pug: MakePug,
) -> None:
    transport = InMemoryTransport()
    transport.fail("unavailable", count=None)
    dead = DeadLetters()
    recorder = IdRecorder()
    pug = make_pug(
        transport,
        batch=BatchConfig(max_size=1000, max_wait=60.0),
        on_error=dead,
        before_send=recorder,
    )
    for i in range(20):
        pug.track("user_1", "rel.order", {"i": i})

    started = time.monotonic()
    pug.close(2)
    assert time.monotonic() - started < 2

    assert len(transport.attempts) == 1  # one last attempt, no retries
    assert dead.codes == ["unavailable"]
    assert ids(dead.items) == recorder.ids
    assert pug.stats().failed == 20


def test_close_cuts_a_long_backoff_short(make_pug: MakePug) -> None:
    transport = InMemoryTransport()
    transport.fail("unavailable", count=None)
    dead = DeadLetters()
    pug = make_pug(
        transport, batch=BatchConfig(max_size=5, max_wait=60.0), retry=SlowRetry(), on_error=dead
    )
    for i in range(5):
        pug.track("user_1", "rel.order", {"i": i})
    # The first attempt fails and the worker settles into a 30 s backoff.
    wait_until(lambda: pug.stats().retries == 1, "the first retry to be scheduled")
    assert len(transport.attempts) == 1

    started = time.monotonic()
    pug.close(2)
    assert time.monotonic() - started < 2
    assert len(transport.attempts) == 2  # the first try and close()'s last one
    assert dead.codes == ["unavailable"]
    assert ints(dead.items, "i") == list(range(5))


class StallingTransport(InMemoryTransport):
    """A server that stopped answering: requests hang until their timeout. `started` is
    set when the first request begins."""

    def __init__(self) -> None:
        super().__init__(latency=2.0)
        self.started = threading.Event()

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        self.started.set()
        return await super().unary(method, request, timeout=timeout)


def test_close_timeout_bounds_a_request_already_in_flight(make_pug: MakePug) -> None:
    transport = StallingTransport()
    dead = DeadLetters()
    recorder = IdRecorder()
    pug = make_pug(
        transport,
        batch=BatchConfig(max_size=1, max_wait=60.0),
        timeout=1.5,
        on_error=dead,
        before_send=recorder,
    )
    pug.track("user_1", "rel.order")
    assert transport.started.wait(5)

    started = time.monotonic()
    pug.close(0.3)
    elapsed = time.monotonic() - started
    # close() returned: within its timeout, and the event was handed to on_error.
    assert ids(dead.items) == recorder.ids
    assert elapsed < 0.8


class BlockingTransport(InMemoryTransport):
    """A transport that blocks the worker's event loop (a synchronous call inside it):
    the cancel at close()'s deadline cannot run until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        self.started.set()
        self.release.wait(30)
        return await super().unary(method, request, timeout=timeout)


def test_close_hands_over_what_a_late_worker_has_not_taken(make_pug: MakePug) -> None:
    """close() hands what is queued to on_error itself when the worker does not end in
    time; the batch the worker holds is its own to finish."""
    transport = BlockingTransport()
    dead = DeadLetters()
    recorder = IdRecorder()
    pug = make_pug(
        transport, batch=BatchConfig(max_size=1, max_wait=60.0), on_error=dead,
        before_send=recorder,
    )  # fmt: skip
    pug.track("user_1", "rel.order", {"n": 0})
    assert transport.started.wait(5)
    for n in range(1, 1001):
        pug.track("user_1", "rel.order", {"n": n})
    started = time.monotonic()
    pug.close(0.3)
    elapsed = time.monotonic() - started
    try:
        assert elapsed < 0.3 + 0.5 + 0.2
        assert ids(dead.items) == recorder.ids[1:]  # all but the one held
        assert dead.codes == ["deadline_exceeded"]
        assert str(dead.calls[0][0]) == "deadline_exceeded: close() timed out before delivery"
    finally:
        transport.release.set()
    # The worker, released, finishes its batch: delivered, and the stats add up.
    wait_until(lambda: pug.stats().sent == 1, "the held batch finished")
    assert_stats_add_up(pug)


def test_track_racing_close_never_strands_an_event(
    make_pug: MakePug, caplog: pytest.LogCaptureFixture
) -> None:
    transport = InMemoryTransport()
    inside, closed = threading.Event(), threading.Event()

    def hold_the_racing_event(event: TrackedEvent) -> TrackedEvent:
        # Pin the interleaving: track() has passed its "closed?" check, and close() runs
        # on another thread before track() enqueues (a shutdown racing a request handler).
        if event.kind == "rel.racing":
            inside.set()
            assert closed.wait(5)
        return event

    dead = DeadLetters()
    pug = make_pug(transport, before_send=hold_the_racing_event, on_error=dead)
    pug.track("user_1", "rel.warmup")  # starts the worker
    assert pug.flush(5)

    def closer() -> None:
        assert inside.wait(5)
        pug.close(2)
        closed.set()

    closing = threading.Thread(target=closer)
    closing.start()
    with caplog.at_level(logging.WARNING, logger="pug"):
        pug.track("user_1", "rel.racing")
    closing.join(5)

    # The racing event must be delivered, dead-lettered or dropped with the warning; it
    # must not sit in a queue nobody will ever send (flush() would then wait in vain).
    assert pug.stats().queue_length == 0
    delivered = [e.kind for e in transport.events()].count("rel.racing")
    warned = [r.getMessage() for r in caplog.records].count(AFTER_CLOSE)
    assert delivered + len(dead.items) + warned == 1


# --- 7. fork ---------------------------------------------------------------------------------


def child_report(pug: Pug, transport: InMemoryTransport) -> dict[str, Any]:
    """Run in the forked child: track 6 events with the inherited client, flush, report."""
    for i in range(5):
        pug.track("child_user", f"rel.child.{i}")
    # A pair the parent tracked before the fork: what the parent encoded for it (its
    # session id) must not be reused.
    pug.track("parent_user", "rel.parent.0")
    flushed = pug.flush(5)
    events = transport.events()
    return {
        "flushed": flushed,
        "kinds": [e.kind for e in events],
        "ids": ids(events),
        "sessions": sorted({e.session_id for e in events}),
        "session_id": pug.session_id,
    }


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_forked_child_sends_only_its_own_events(make_pug: MakePug) -> None:
    transport = InMemoryTransport()
    # A long wait: the parent's events are still queued at the fork.
    pug = make_pug(transport, batch=BatchConfig(max_size=1000, max_wait=60.0))
    for i in range(10):
        pug.track("parent_user", f"rel.parent.{i}")
    assert pug.stats().queue_length == 10

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "w") as pipe:
                json.dump(child_report(pug, transport), pipe)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    child = json.loads(output)

    # The child delivered its own 6 events, none of the parent's 10.
    assert child["flushed"] is True
    assert child["kinds"] == [f"rel.child.{i}" for i in range(5)] + ["rel.parent.0"]
    assert len(set(child["ids"])) == 6
    assert child["sessions"] == [child["session_id"]]
    assert child["session_id"] != pug.session_id

    # The parent still owns its 10 and delivers them exactly once.
    assert pug.flush(5)
    events = transport.events()
    assert [e.kind for e in events] == [f"rel.parent.{i}" for i in range(10)]
    assert {e.session_id for e in events} == {pug.session_id}
    assert not set(ids(events)) & set(child["ids"])
    assert len(transport.requests) == 1


# --- 8. the API key never leaks --------------------------------------------------------------

SECRET = "SECRET_KEY_123"


def test_api_key_never_appears_in_reprs_errors_or_logs(
    make_pug: MakePug, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    seen: list[str] = []  # every string a user could see
    transport = InMemoryTransport()
    dead = DeadLetters()
    pug = make_pug(transport, api_key=f"prv_{SECRET}", on_error=dead)
    seen += [repr(pug), str(pug), repr(pug.stats()), repr(pug.bind("user_1").client)]

    # Invalid input: each is logged and dropped.
    pug.track("", "rel.order")
    pug.track("user_1", "bad kind!")
    pug.track("user_1", "rel.order", {"$lib": "x"})
    pug.track("user_1", "rel.order", {"odd": object()})
    pug.track("user_1", "rel.order", session_id="not-a-uuid")
    pug.identify("", {"plan": "pro"})
    assert pug.stats().dropped_invalid == 5  # the odd property is left out, not the event

    # A rejected batch reaches on_error.
    transport.fail("unauthenticated", count=1, message="invalid API key")
    pug.track("user_1", "rel.order", {"i": 1})
    assert pug.flush(5)
    pug.close(5)

    # The real Connect transport holds the key: a failed connection must not show it.
    network = Pug(
        api_key=f"prv_{SECRET}",
        base_url=f"http://127.0.0.1:{closed_port()}",
        retry=fast_retry(),
        on_error=dead,
    )
    seen += [repr(network), str(network)]
    network.track("user_1", "rel.order", {"i": 2})
    network.close(5)  # one attempt, refused, dead-lettered
    assert [error.code for error, _ in dead.calls] == ["unauthenticated", "unavailable"]
    for error, items in dead.calls:
        seen += [str(error), repr(error), str(items), repr(items), repr(error.details)]

    # Bad keys: the message says what is wrong, never what the key is.
    for bad in (f"pub_{SECRET}", SECRET, f" prv_{SECRET}"):
        with pytest.raises(ValueError, match=r"starts with 'prv_'") as info:
            Pug(api_key=bad, transport=InMemoryTransport())
        seen += [str(info.value), repr(info.value)]
    monkeypatch.setenv("PUG_API_KEY", f"pub_{SECRET}")
    with pytest.raises(ValueError, match=r"starts with 'prv_'") as info:
        Pug(transport=InMemoryTransport())
    seen.append(str(info.value))

    # No key at all: the message names the problem.
    missing = "Pug needs an API key: pass api_key= or set PUG_API_KEY"
    with pytest.raises(ValueError) as info:
        Pug(api_key="", transport=InMemoryTransport())
    assert str(info.value) == missing
    monkeypatch.delenv("PUG_API_KEY")
    with pytest.raises(ValueError) as info:
        Pug(transport=InMemoryTransport())
    assert str(info.value) == missing

    assert caplog.records  # the invalid input above was logged
    seen += [record.getMessage() for record in caplog.records]
    seen.append(caplog.text)  # formatted, with any tracebacks
    leaks = [text for text in seen if SECRET in text]
    assert leaks == []


# --- 9. bursts -------------------------------------------------------------------------------


def test_a_burst_against_a_healthy_server_loses_nothing(
    make_pug: MakePug, google_pb2: GoogleMessages
) -> None:
    transport = InMemoryTransport(latency=0.002)  # a healthy local server
    pug = make_pug(transport, batch=BatchConfig())
    for i in range(100_000):
        pug.track("user_1", "rel.view", {"seq": i})
    assert pug.flush(30)

    events = fast_events(transport, google_pb2)
    assert ints(events, "seq") == list(range(100_000))
    assert len(set(ids(events))) == 100_000
    stats = pug.stats()
    assert (stats.sent, stats.dropped_queue_full, stats.failed) == (100_000, 0, 0)


# --- 10. callbacks that misbehave ------------------------------------------------------------


def test_on_error_raising_is_logged_and_the_worker_keeps_going(
    make_pug: MakePug, caplog: pytest.LogCaptureFixture
) -> None:
    transport = InMemoryTransport()
    transport.fail("permission_denied", count=1)
    raised = threading.Event()

    def broken_sink(error: PugError, items: list[Any]) -> None:
        raised.set()
        raise RuntimeError("sink is down")

    pug = make_pug(transport, on_error=broken_sink)
    with caplog.at_level(logging.ERROR, logger="pug"):
        for i in range(3):
            pug.track("user_1", "rel.order", {"i": i})
        assert pug.flush(5)
        assert raised.wait(5)
        # The worker survived on_error: later events are delivered.
        for i in range(3, 5):
            pug.track("user_1", "rel.order", {"i": i})
        assert pug.flush(5)

    assert ints(transport.events(), "i") == [3, 4]
    messages = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert messages == [
        ("3 item(s) not delivered: permission_denied: injected failure", False),
        ("on_error raised", True),
    ]
    on_error_record = caplog.records[1]
    assert on_error_record.exc_info is not None
    assert str(on_error_record.exc_info[1]) == "sink is down"


def test_before_send_raising_or_returning_none_drops_only_that_event(
    make_pug: MakePug, caplog: pytest.LogCaptureFixture
) -> None:
    transport = InMemoryTransport()

    def hook(event: TrackedEvent) -> TrackedEvent | None:
        if event.properties["i"] == 1:
            raise KeyError("boom")
        if event.properties["i"] == 2:
            return None
        return event

    pug = make_pug(transport, before_send=hook)
    with caplog.at_level(logging.WARNING, logger="pug"):
        for i in range(5):
            pug.track("user_1", "rel.order", {"i": i})
    assert pug.flush(5)

    assert ints(transport.events(), "i") == [0, 3, 4]
    assert [r.getMessage() for r in caplog.records] == ["before_send raised; the event was dropped"]
    assert caplog.records[0].exc_info is not None
    assert pug.stats().dropped_invalid == 1  # the raise; a None is the hook's choice
    assert pug.stats().sent == 3


def test_before_send_redaction_is_what_goes_on_the_wire(make_pug: MakePug) -> None:
    transport = InMemoryTransport()

    def redact(event: TrackedEvent) -> TrackedEvent:
        event.properties["email"] = "[redacted]"
        del event.properties["password"]
        event.properties["redacted"] = True
        return event

    pug = make_pug(transport, before_send=redact)
    pug.track(
        "user_1",
        "rel.signup",
        {"email": "a@example.com", "password": "hunter2", "amount": 49.0, "plan": "pro"},
    )
    assert pug.flush(5)

    (event,) = transport.events()
    props = {
        key: (value.string_value, value.double_value, value.bool_value)
        for key, value in event.custom_properties.items()
    }
    assert props == {
        "email": ("[redacted]", None, None),
        "amount": (None, 49.0, None),  # left alone: still a double
        "plan": ("pro", None, None),
        "redacted": (None, None, True),
    }
    assert b"hunter2" not in transport.requests[0][1]
    assert b"a@example.com" not in transport.requests[0][1]


# --- 11. batching ----------------------------------------------------------------------------


def test_a_full_batch_is_sent_on_its_own_and_the_rest_waits_for_flush(make_pug: MakePug) -> None:
    transport = InMemoryTransport()
    pug = make_pug(transport, batch=BatchConfig(max_size=10, max_wait=60.0))
    # Ten at a time: a request takes everything queued (up to 1000), so events tracked
    # while the worker wakes up would ride along with the first ten.
    for round_ in range(2):
        for i in range(10):
            pug.track("user_1", "rel.view", {"seq": round_ * 10 + i})
        wait_until(lambda r=round_: len(transport.requests) == r + 1, f"request {round_ + 1}")
    for i in range(20, 25):
        pug.track("user_1", "rel.view", {"seq": i})
    assert pug.stats().queue_length == 5  # below max_size, far from max_wait: held

    assert pug.flush(5)
    batches = transport.batches()
    assert [len(b) for b in batches] == [10, 10, 5]
    assert ints(transport.events(), "seq") == list(range(25))


def test_max_wait_sends_a_lone_event_without_flush(make_pug: MakePug) -> None:
    transport = InMemoryTransport()
    pug = make_pug(transport, batch=BatchConfig(max_size=100, max_wait=0.05))
    started = time.monotonic()
    pug.track("user_1", "rel.view")
    wait_until(lambda: len(transport.requests) == 1, "the timed send")
    assert time.monotonic() - started >= 0.05  # not before max_wait
    assert [e.kind for e in transport.events()] == ["rel.view"]


def held_client(make_pug: MakePug) -> tuple[Pug, InMemoryTransport, threading.Event]:
    """A client whose worker is blocked inside its first request (one event, seq 0), so
    what is tracked next piles up behind it until the returned gate is set."""
    entered, gate = threading.Event(), threading.Event()

    def hold_the_first_request(method: str, body: bytes) -> bytes:
        entered.set()
        assert gate.wait(5)
        return b"\x08" + pb.varint(pb.count_events(body))

    transport = InMemoryTransport(handler=hold_the_first_request)
    pug = make_pug(transport, batch=BatchConfig(max_size=1, max_wait=60.0))
    pug.track("user_1", "rel.view", {"seq": 0})
    assert entered.wait(5)
    return pug, transport, gate


def test_a_request_never_carries_more_than_1000_events(
    make_pug: MakePug, google_pb2: GoogleMessages
) -> None:
    pug, transport, gate = held_client(make_pug)
    for i in range(1, 2501):
        pug.track("user_1", "rel.view", {"seq": i})
    assert pug.stats().queue_length == 2500
    gate.set()
    assert pug.flush(10)

    batch = google_pb2["sdk.events.v1.BatchCreateRequest"]
    sizes = [len(batch.FromString(body).events) for _, body in transport.requests]
    assert sizes == [1, MAX_REQUEST_EVENTS, MAX_REQUEST_EVENTS, 500]
    assert ints(fast_events(transport, google_pb2), "seq") == list(range(2501))


def test_a_run_of_events_stops_at_a_queued_identify(
    make_pug: MakePug, google_pb2: GoogleMessages
) -> None:
    pug, transport, gate = held_client(make_pug)
    for i in range(1, 1501):
        pug.track("user_1", "rel.view", {"seq": i})
    pug.identify("user_1", {"plan": "pro"})
    for i in range(1501, 1511):
        pug.track("user_1", "rel.view", {"seq": i})
    gate.set()
    assert pug.flush(10)

    batch = google_pb2["sdk.events.v1.BatchCreateRequest"]
    shapes = [
        len(batch.FromString(body).events) if method == BATCH_CREATE else method
        for method, body in transport.requests
    ]
    assert shapes == [1, MAX_REQUEST_EVENTS, 500, IDENTIFY, 10]
    assert ints(fast_events(transport, google_pb2), "seq") == list(range(1511))


def test_requests_stay_under_the_byte_cap_and_are_packed_greedily(
    make_pug: MakePug, google_pb2: GoogleMessages
) -> None:
    transport = InMemoryTransport()
    pug = make_pug(transport, batch=BatchConfig(max_size=1000, max_wait=60.0))
    # ~60 KB an event: 60 strings of 1000 characters (under the 1024-byte string limit).
    big = {f"s{j}": f"{j:04d}" + "x" * 996 for j in range(60)}
    for i in range(30):
        pug.track("user_1", "rel.export", {"seq": i, **big})
    assert pug.flush(10)

    bodies = [body for _, body in transport.requests]
    assert all(len(body) <= MAX_REQUEST_BYTES for body in bodies)
    batch = google_pb2["sdk.events.v1.BatchCreateRequest"]
    decoded = [batch.FromString(body).events for body in bodies]
    sizes = [len(events) for events in decoded]
    assert sum(sizes) == 30 and len(sizes) > 1
    # Greedy: each request but the last was cut because the next event would not fit.
    for body, following in zip(bodies[:-1], decoded[1:], strict=True):
        next_event = following[0].SerializeToString()
        assert len(body) + len(next_event) + 4 > MAX_REQUEST_BYTES
    events = fast_events(transport, google_pb2)
    assert ints(events, "seq") == list(range(30))
    assert events[29].custom_properties["s59"].string_value == "0059" + "x" * 996


# --- 12. AsyncPug ----------------------------------------------------------------------------


def test_async_client_tracks_flushes_and_identifies() -> None:
    transport = InMemoryTransport()

    async def main() -> tuple[bool, bool, bool]:
        async with AsyncPug(api_key=API_KEY, transport=transport, retry=fast_retry()) as pug:
            pug.track("user_1", "rel.order", {"i": 1})
            flushed = await pug.flush(5)
            identified = await pug.identify("u1", {"a": 1})
            transport.fail("invalid_argument", count=1)
            rejected = await pug.identify("u2", {"a": 2})
        return flushed, identified, rejected

    assert asyncio.run(main()) == (True, True, False)
    assert ints(transport.events(), "i") == [1]
    (identify,) = transport.identifies()
    assert identify.external_id == "u1"
    assert identify.traits.fields["a"].number_value == 1.0
    assert [method for method, _ in transport.attempts] == [BATCH_CREATE, IDENTIFY, IDENTIFY]
    assert transport.closed  # `async with` closed the client


def test_awaited_identify_does_not_wait_for_the_batch_timer() -> None:
    transport = InMemoryTransport()

    async def main() -> bool:
        # Default BatchConfig: max_wait is 5 s. The caller awaits this one request.
        async with AsyncPug(api_key=API_KEY, transport=transport) as pug:
            try:
                return await asyncio.wait_for(pug.identify("u1", {"plan": "pro"}), 1.0)
            finally:
                await pug.flush(5)  # so close() has nothing left to send

    assert asyncio.run(main()) is True


def test_async_flush_does_not_block_the_callers_event_loop() -> None:
    transport = InMemoryTransport(latency=0.3)  # a slow server

    async def main() -> tuple[bool, float, list[float]]:
        async with AsyncPug(api_key=API_KEY, transport=transport) as pug:
            ticks: list[float] = []
            stop = asyncio.Event()

            async def ticker() -> None:
                while not stop.is_set():
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.01)

            pug.track("user_1", "rel.order")
            ticking = asyncio.create_task(ticker())
            started = time.monotonic()
            flushed = await pug.flush(5)
            elapsed = time.monotonic() - started
            stop.set()
            await ticking
        return flushed, elapsed, ticks

    flushed, elapsed, ticks = asyncio.run(main())
    assert flushed
    assert elapsed >= 0.3  # flush really waited for the slow request
    # While it waited, the loop kept running other tasks: no gap near the request's length.
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 10
    assert max(gaps) < 0.15
    assert len(transport.events()) == 1


# --- 13. bind and the context manager --------------------------------------------------------


def test_bound_client_tracks_for_its_distinct_id(make_pug: MakePug) -> None:
    transport = InMemoryTransport()
    pug = make_pug(transport)
    pug.bind("user_42").track("x", {"i": 1})
    assert pug.flush(5)
    (event,) = transport.events()
    assert (event.distinct_id, event.kind, event.custom_properties["i"].int_value) == (
        "user_42",
        "x",
        1,
    )


def test_with_block_closes_and_delivers() -> None:
    transport = InMemoryTransport()
    with Pug(
        api_key=API_KEY, transport=transport, batch=BatchConfig(max_size=100, max_wait=60.0)
    ) as pug:
        for i in range(3):
            pug.track("user_1", "rel.order", {"i": i})
        assert transport.requests == []
    assert ints(transport.events(), "i") == [0, 1, 2]
    assert transport.closed
