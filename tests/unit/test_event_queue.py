"""EventQueue on its own, without threads: bounds by count and bytes, overflow within its
byte bound, take/finish, flush waiters, and stats that add up."""

from __future__ import annotations

import pytest
from pug._ingest import queue as queue_module
from pug._ingest.queue import (
    QUEUED,
    REFUSED,
    WAKE,
    EventQueue,
    IngestQueue,
    Item,
    QueuedIdentify,
    Stats,
)
from pug._ingest.validate import BATCH_MAX_EVENTS, MAX_REQUEST_BYTES


def make(**overrides: float) -> EventQueue:
    settings: dict[str, float] = {
        "max_items": 100,
        "max_bytes": 1_000_000,
        "batch_size": 10,
        "max_wait": 60.0,
    }
    settings.update(overrides)
    return EventQueue(
        max_items=int(settings["max_items"]),
        max_bytes=int(settings["max_bytes"]),
        batch_size=int(settings["batch_size"]),
        max_wait=settings["max_wait"],
    )


def event(i: int, size: int = 10) -> bytes:
    return i.to_bytes(4, "big") + b"x" * (size - 4)


def assert_adds_up(q: EventQueue, in_flight: int = 0) -> Stats:
    """Every item put is held, in flight (taken, not finished), or counted as done."""
    s = q.stats()
    done = s.sent + s.identifies_sent + s.failed + s.dropped_queue_full
    done += sum(s.dropped_by_server.values())
    assert s.enqueued == done + s.queue_length + in_flight, s
    return s


def test_an_event_queue_is_an_ingest_queue() -> None:
    q: IngestQueue = make()  # mypy checks the protocol; this checks it at run time too
    assert len(q) == 0


def test_put_says_when_the_worker_should_look() -> None:
    q = make(batch_size=3)
    assert [q.put(event(i)) for i in range(3)] == [QUEUED, QUEUED, WAKE]
    assert q.put(event(3)) == QUEUED
    assert q.put(QueuedIdentify(b"id")) == WAKE  # an identify is sent at once


def test_the_bound_by_count_drops_the_oldest() -> None:
    q = make(max_items=5)
    outcomes = [q.put(event(i)) for i in range(8)]
    assert outcomes[:5] == [QUEUED] * 5
    assert outcomes[5] == WAKE  # the first overflow wakes the worker to hand it over
    assert outcomes[6:] == [QUEUED, QUEUED]
    assert len(q) == 5
    taken = q.take(force=True)
    assert taken is not None and taken.items == [event(i) for i in range(3, 8)]
    dropped, lost = q.take_overflow()
    assert dropped == [event(i) for i in range(3)] and lost == 0
    assert q.stats().dropped_queue_full == 3


def test_the_bound_by_bytes_drops_the_oldest() -> None:
    q = make(max_bytes=1000)
    for i in range(12):
        q.put(event(i, size=100))
    assert len(q) == 10  # 10 × 100 bytes: at the bound, not over it
    assert q.stats().dropped_queue_full == 2
    q.put(QueuedIdentify(b"y" * 250))  # an identify counts its body
    assert len(q) == 8
    assert q.stats().dropped_queue_full == 5


def test_overflow_is_held_within_its_byte_bound_and_the_rest_only_counted() -> None:
    # The overflow may hold an eighth of max_bytes (each item costs its bytes + ~70).
    q = make(max_items=1, max_bytes=8000)
    bound = 8000 // queue_module.OVERFLOW_SHARE
    per_item = 100 + queue_module.ITEM_OVERHEAD
    for i in range(50):
        q.put(event(i, size=100))
    held, lost = q.take_overflow()
    assert len(held) == bound // per_item
    assert len(held) + lost == 49
    assert held == [event(i, size=100) for i in range(len(held))]  # the oldest kept
    # Every drop is counted at once (held for on_error or not).
    assert_adds_up(q)
    q.finish(held, sent=False, already_counted=True)
    s = assert_adds_up(q)
    assert (s.dropped_queue_full, s.failed) == (49, 0)
    assert q.take_overflow() == ([], 0)  # emptied by the take


def test_an_identify_dropped_past_the_overflow_bound_is_resolved_false() -> None:
    q = make(max_items=1, max_bytes=600_000)  # overflow bound: 75 000 bytes
    big = [QueuedIdentify(b"i" * 40_000) for _ in range(3)]
    for item in big:
        q.put(item)
    # The first dropped is held for on_error; the second does not fit and is lost.
    held, lost = q.take_overflow()
    assert held == [big[0]] and lost == 1
    assert big[1].done.result(0) is False
    assert not big[0].done.done() and not big[2].done.done()


def test_take_gives_a_run_of_events_up_to_an_identify_then_the_identify() -> None:
    q = make()
    identify = QueuedIdentify(b"who")
    for item in [event(0), event(1), identify, event(2)]:
        q.put(item)
    first = q.take(force=False)  # due: an identify is queued
    assert first is not None and (first.items, first.identify) == ([event(0), event(1)], False)
    second = q.take(force=False)
    assert second is not None and (second.items, second.identify) == ([identify], True)
    assert q.take(force=False) is None  # one event, not due (batch 10, wait 60 s)
    third = q.take(force=True)
    assert third is not None and third.items == [event(2)]


def test_take_respects_the_request_bounds() -> None:
    q = make(max_items=5000, max_bytes=100 * MAX_REQUEST_BYTES)
    for i in range(BATCH_MAX_EVENTS + 5):
        q.put(event(i))
    taken = q.take(force=True)
    assert taken is not None and len(taken.items) == BATCH_MAX_EVENTS
    rest = q.take(force=True)
    assert rest is not None and len(rest.items) == 5
    size = MAX_REQUEST_BYTES // 3 + 1
    for i in range(4):
        q.put(event(i, size=size))
    taken = q.take(force=True)
    assert taken is not None and len(taken.items) == 2  # a third would pass the bytes


def test_due_by_size_and_by_age(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(queue_module, "_monotonic", lambda: clock[0])
    q = make(batch_size=3, max_wait=5.0)
    q.put(event(0))
    assert q.next_wake(clock[0]) == 5.0
    assert q.take(force=False) is None
    clock[0] += 5.0
    assert q.next_wake(clock[0]) == 0.0
    assert q.take(force=False) is not None
    for i in range(3):
        q.put(event(i))
    assert q.take(force=False) is not None  # a full batch is due at once


def test_finish_counts_sent_failed_and_server_drops() -> None:
    q = make()
    for i in range(10):
        q.put(event(i))
    identify = QueuedIdentify(b"who")
    q.put(identify)
    first = q.take(force=True)
    assert first is not None
    assert_adds_up(q, in_flight=10)
    q.finish(first.items[:6], sent=True, dropped=2, reasons={"kind_blocked": 2})
    q.finish(first.items[6:], sent=False)
    second = q.take(force=True)
    assert second is not None
    q.finish(second.items, sent=True)
    s = assert_adds_up(q)
    assert (s.sent, s.failed, s.identifies_sent) == (4, 4, 1)
    assert s.dropped_by_server == {"kind_blocked": 2}
    assert identify.done.result(0) is True


def test_a_failed_identify_resolves_false_after_before_release() -> None:
    q = make()
    identify = QueuedIdentify(b"who")
    q.put(identify)
    taken = q.take(force=True)
    assert taken is not None
    seen: list[bool] = []
    q.finish(taken.items, sent=False, before_release=lambda: seen.append(identify.done.done()))
    assert seen == [False]  # on_error runs before the caller is released
    assert identify.done.result(0) is False


def test_flush_waiters_resolve_when_what_was_put_before_is_finished() -> None:
    q = make()
    assert q.flush_waiter().result(0) is True  # nothing queued
    q.put(event(0))
    q.put(event(1))
    early = q.flush_waiter()
    q.put(event(2))
    late = q.flush_waiter()
    taken = q.take(force=False)  # a flush makes what is queued due
    assert taken is not None and len(taken.items) == 3
    q.finish(taken.items[:1], sent=True)
    assert not early.done()
    order: list[str] = []
    q.finish(taken.items[1:2], sent=False, before_release=lambda: order.append("on_error"))
    assert early.result(0) is True and not late.done()
    assert order == ["on_error"]
    q.finish(taken.items[2:], sent=True)
    assert late.result(0) is True


def test_a_closed_queue_refuses_and_counts_invalid() -> None:
    q = make()
    q.put(event(0))
    assert q.close() is True
    assert q.close() is False  # idempotent
    assert q.closed
    identify = QueuedIdentify(b"who")
    assert q.put(event(1)) == REFUSED
    assert q.put(identify) == REFUSED
    assert identify.done.result(0) is False
    s = q.stats()
    assert (s.enqueued, s.dropped_invalid, s.queue_length) == (1, 2, 1)
    assert q.take_all() == [event(0)]  # what was held stays to be sent or dead-lettered
    assert len(q) == 0


def test_stats_are_a_copy() -> None:
    q = make()
    q.put(event(0))
    taken = q.take(force=True)
    assert taken is not None
    q.finish(taken.items, sent=True, dropped=1, reasons={"r": 1})
    s = q.stats()
    s.dropped_by_server["r"] = 99
    q.count_retry()
    q.count_invalid()
    again = q.stats()
    assert again.dropped_by_server == {"r": 1}
    assert (again.retries, again.dropped_invalid) == (1, 1)


def test_items_keep_their_order_across_drops_and_takes() -> None:
    q = make(max_items=20)
    put: list[Item] = []
    for i in range(30):
        item: Item = QueuedIdentify(bytes([i])) if i % 7 == 3 else event(i)
        put.append(item)
        q.put(item)
    seen: list[Item] = []
    while (taken := q.take(force=True)) is not None:
        seen += taken.items
        q.finish(taken.items, sent=True)
    dropped, lost = q.take_overflow()
    q.finish(dropped, sent=False, already_counted=True)
    assert dropped + seen == put and lost == 0
    assert_adds_up(q)
