"""EventQueue: what a client holds between `track()` and the server, and its ledger.

It bounds what is held (by count and by bytes; past the bound the oldest items are
dropped and kept for `on_error` within a byte bound of their own), hands the worker one
request's items at a time (`take`), accounts for them once done (`finish`), resolves
flush waiters and identify futures, and counts the stats. No threads are started and
no I/O is done here: every method runs under one lock for a few steps, whichever thread
calls it, so it is tested without threads.

`IngestQueue` is the interface the worker and the core use; a disk-backed spool can
implement it (take/finish are already separate steps: an item leaves the spool when
it is finished, not when it is taken).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from pug._ingest.validate import BATCH_MAX_EVENTS, MAX_REQUEST_BYTES

# Items dropped for a full queue wait for the worker to hand them to on_error in at most
# this share of max_queue_bytes (a bound in bytes: a count let 3 000 events of 400 KB
# hold 1.2 GB); past it they are only counted. An item costs its bytes and ~70 more.
OVERFLOW_SHARE: Final = 8
ITEM_OVERHEAD: Final = 70

# What `put` answers.
QUEUED: Final = 0  # held; the worker need not look yet
WAKE: Final = 1  # held; the worker should look now (a batch is full, an identify, overflow)
REFUSED: Final = 2  # the queue is closed: dropped (counted as invalid)

_monotonic = time.monotonic


@dataclass
class Stats:
    """Counters of one client since it started (or since a fork, in the child)."""

    enqueued: int = 0
    sent: int = 0
    failed: int = 0
    dropped_queue_full: int = 0
    dropped_invalid: int = 0
    dropped_by_server: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    identifies_sent: int = 0
    queue_length: int = 0
    # Items a spool found on disk, left by earlier processes (counted in `enqueued` too).
    recovered: int = 0


class QueuedIdentify:
    """A queued identify: its encoded request and the future `AsyncPug` awaits (resolved
    True once delivered, False once dropped or failed)."""

    __slots__ = ("body", "done")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.done: concurrent.futures.Future[bool] = concurrent.futures.Future()

    def __len__(self) -> int:  # what it costs the queue's byte bound
        return len(self.body)


# An event is its framed bytes (a BatchCreateRequest entry); an identify is sent alone.
Item = bytes | QueuedIdentify


@dataclass(frozen=True)
class Taken:
    """One request's items: a run of events, or one identify."""

    items: list[Item]
    identify: bool


class IngestQueue(Protocol):
    """What the core and the worker ask of a queue (see EventQueue for the semantics)."""

    def put(self, item: Item) -> int: ...
    def take(self, force: bool) -> Taken | None: ...
    def finish(
        self,
        items: list[Item],
        *,
        sent: bool,
        already_counted: bool = False,
        dropped: int = 0,
        reasons: Mapping[str, int] | None = None,
        before_release: Callable[[], None] | None = None,
    ) -> None: ...
    def take_overflow(self) -> tuple[list[Item], int]: ...
    def take_all(self) -> list[Item]: ...
    def next_wake(self, now: float) -> float: ...
    def flush_waiter(self) -> concurrent.futures.Future[bool]: ...
    def close(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def count_invalid(self) -> None: ...
    def count_retry(self) -> None: ...
    def stats(self) -> Stats: ...
    def __len__(self) -> int: ...


def release(items: list[Item], value: bool) -> None:
    """Resolve the futures of the identifies among `items`."""
    for item in items:
        if type(item) is QueuedIdentify and not item.done.done():
            item.done.set_result(value)


class Ledger:
    """What every IngestQueue accounts the same way, under its `_lock`: the counters, the
    items dropped for a full queue (held for on_error within a byte bound), flush waiters,
    and what `finish` does with them. EventQueue and the spool's queue add where items are
    held."""

    def __init__(self, *, max_bytes: int) -> None:
        self._lock = threading.Lock()
        self._overflow_max_bytes = max_bytes // OVERFLOW_SHARE
        self._overflow: list[Item] = []  # dropped for a full queue, for on_error
        self._overflow_bytes = 0
        self._overflow_lost = 0  # dropped past the overflow's bound: counted, not held
        self._stats = Stats()
        self._enqueued = 0  # items ever put, events and identifies
        self._finished = 0  # items sent, failed or dropped
        self._flush_waiters: list[tuple[int, concurrent.futures.Future[bool]]] = []
        self._flush_requested = False
        self._closed = False

    def _overflow_one(self, old: Item) -> bool:
        """Count one item dropped for a full queue (under the lock) and hold it for
        on_error within the overflow's byte bound, so memory stays bounded however fast
        they come; True when it is past it: only counted (and finished)."""
        self._stats.dropped_queue_full += 1
        size = len(old) + ITEM_OVERHEAD
        if not self._overflow or self._overflow_bytes + size <= self._overflow_max_bytes:
            self._overflow.append(old)
            self._overflow_bytes += size
            return False
        self._overflow_lost += 1
        self._finished += 1
        return True

    def flush_waiter(self) -> concurrent.futures.Future[bool]:
        """A future resolved True once every item put before the call is finished."""
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self._lock:
            target = self._enqueued
            if self._finished >= target:
                done.set_result(True)
                return done
            self._flush_waiters.append((target, done))
            self._flush_requested = True
        return done

    @property
    def closed(self) -> bool:
        return self._closed

    def count_invalid(self) -> None:
        with self._lock:
            self._stats.dropped_invalid += 1

    def count_retry(self) -> None:
        with self._lock:
            self._stats.retries += 1

    def _stats_now(self, queue_length: int) -> Stats:
        """The counters (under the lock), with what is held."""
        return dataclasses.replace(
            self._stats,
            enqueued=self._enqueued,
            dropped_by_server=dict(self._stats.dropped_by_server),
            queue_length=queue_length,
        )

    def take_overflow(self) -> tuple[list[Item], int]:
        """The items dropped for a full queue since last asked, and how many more were
        dropped past the overflow's bound (counted and finished, not held). The items are
        to be finished with `already_counted=True`."""
        with self._lock:
            items, self._overflow = self._overflow, []
            lost, self._overflow_lost = self._overflow_lost, 0
            self._overflow_bytes = 0
        return items, lost

    def _account(
        self,
        items: list[Item],
        *,
        sent: bool,
        already_counted: bool,
        dropped: int,
        reasons: Mapping[str, int] | None,
        kept: int = 0,
    ) -> list[concurrent.futures.Future[bool]]:
        """Count finished items (and `kept` more the queue keeps for later: finished for
        flush waiters, counted nowhere else); the flush waiters now due (under the lock)."""
        identifies = sum(type(i) is QueuedIdentify for i in items)
        stats = self._stats
        if sent:
            stats.sent += len(items) - identifies - dropped
            by = stats.dropped_by_server
            for reason, n in (reasons or {}).items():
                by[reason] = by.get(reason, 0) + n
            stats.identifies_sent += identifies
        elif not already_counted:
            stats.failed += len(items)
        self._finished += len(items) + kept
        finished = self._finished
        ready = [f for t, f in self._flush_waiters if t <= finished]
        if ready:
            self._flush_waiters = [(t, f) for t, f in self._flush_waiters if t > finished]
        return ready


def resolve_waiters(ready: list[concurrent.futures.Future[bool]]) -> None:
    for f in ready:
        if not f.done():
            f.set_result(True)


class EventQueue(Ledger):
    """The in-memory IngestQueue: a deque of items, bounded by count and bytes."""

    def __init__(self, *, max_items: int, max_bytes: int, batch_size: int, max_wait: float) -> None:
        super().__init__(max_bytes=max_bytes)
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._batch_size = batch_size  # put() says WAKE when this many are held
        self._max_wait = max_wait  # seconds the oldest item may wait before it is due
        self._items: deque[Item] = deque()
        self._bytes = 0
        self._first_at: float | None = None  # when the oldest held item was put
        self._identifies = 0  # identifies held: one is due at once, never left to the timer

    def __len__(self) -> int:
        return len(self._items)

    # ---- the callers' side ----------------------------------------------------------

    def put(self, item: Item) -> int:
        """Hold `item` (dropping the oldest past the bounds): QUEUED, WAKE or REFUSED."""
        size = len(item)
        with self._lock:
            if not self._closed:
                items = self._items
                if not items:
                    self._first_at = _monotonic()
                items.append(item)
                self._bytes += size
                self._enqueued += 1
                n = len(items)
                # The common case in as few steps as can be: an event, within the bounds.
                if type(item) is bytes and n <= self._max_items and self._bytes <= self._max_bytes:
                    return WAKE if n == self._batch_size else QUEUED
                outcome, lost = self._put_unusual(item, n)
            else:
                self._stats.dropped_invalid += 1
                outcome, lost = REFUSED, [item]
        release(lost, False)
        return outcome

    def _put_unusual(self, item: Item, n: int) -> tuple[int, list[Item]]:
        """The rest of `put` for an identify or past the bounds (under the lock): the
        outcome, and the items dropped for good (their identifies resolve False)."""
        outcome = WAKE if n == self._batch_size else QUEUED
        if type(item) is not bytes:
            self._identifies += 1
            outcome = WAKE  # an identify is sent at once
        if n > self._max_items or self._bytes > self._max_bytes:
            first_overflow, lost = self._drop_oldest()
            return (WAKE if first_overflow else outcome), lost
        return outcome, []

    def _drop_oldest(self) -> tuple[bool, list[Item]]:
        """Bring the queue back within its bounds (under the lock). Returns whether this is
        the first overflow since the worker last took it, and the items dropped past the
        overflow's own bound, which are only counted."""
        items = self._items
        had_overflow = bool(self._overflow)
        lost: list[Item] = []
        while len(items) > self._max_items or self._bytes > self._max_bytes:
            old = items.popleft()
            self._bytes -= len(old)
            self._identifies -= type(old) is not bytes
            if self._overflow_one(old):
                lost.append(old)
        return bool(self._overflow) and not had_overflow, lost

    def close(self) -> bool:
        """Refuse further items; True the first time (what is held stays to be taken)."""
        with self._lock:
            first, self._closed = not self._closed, True
        return first

    def stats(self) -> Stats:
        with self._lock:
            return self._stats_now(len(self._items))

    # ---- the worker's side ----------------------------------------------------------

    def next_wake(self, now: float) -> float:
        """Seconds from `now` until the oldest item is due by age (max_wait if none)."""
        with self._lock:
            if self._first_at is not None and self._items:
                return max(0.0, self._first_at + self._max_wait - now)
        return self._max_wait

    def _due(self, now: float) -> bool:
        """Whether the worker should send now (under the lock)."""
        return (
            self._flush_requested
            or self._identifies > 0
            or len(self._items) >= self._batch_size
            or (self._first_at is not None and now - self._first_at >= self._max_wait)
        )

    def take(self, force: bool) -> Taken | None:
        """The next request's items, if due (or `force`): the longest run of events at
        the front that fits one request, or one identify. They stay the queue's to
        account for until `finish`."""
        with self._lock:
            items = self._items
            if not items or not (force or self._due(_monotonic())):
                if not items:
                    self._flush_requested = False
                return None
            if type(items[0]) is QueuedIdentify:
                first = items.popleft()
                self._bytes -= len(first)
                self._identifies -= 1
                taken = Taken([first], identify=True)
            elif (
                not self._identifies
                and len(items) <= BATCH_MAX_EVENTS
                and self._bytes <= MAX_REQUEST_BYTES
            ):
                # Everything held fits one request: take it in one step, so the lock the
                # callers of track() wait on is held for microseconds.
                taken = Taken(list(items), identify=False)
                items.clear()
                self._bytes = 0
            else:
                taken = Taken(self._take_events(), identify=False)
            self._first_at = _monotonic() if items else None
            return taken

    def _take_events(self) -> list[Item]:
        """Pop the longest run of events at the front that fits one request (under the
        lock): at most BATCH_MAX_EVENTS, at most MAX_REQUEST_BYTES, never past an identify."""
        items = self._items
        count = min(len(items), BATCH_MAX_EVENTS)
        if self._identifies:
            count = next(
                (i for i, item in enumerate(itertools.islice(items, count))
                 if type(item) is not bytes),
                count,
            )  # fmt: skip
        size = sum(map(len, itertools.islice(items, count)))
        while size > MAX_REQUEST_BYTES:  # rare: large events; give back from the end
            count -= 1
            size -= len(items[count])
        count = max(count, 1)  # a single event always fits (checked when encoded)
        taken = [items.popleft() for _ in range(count)]
        self._bytes -= sum(map(len, taken))
        return taken

    def take_all(self) -> list[Item]:
        """Everything held, at once (close() ran out of time: it all goes to on_error)."""
        with self._lock:
            taken = list(self._items)
            self._items.clear()
            self._bytes = 0
            self._identifies = 0
            self._first_at = None
        return taken

    def finish(
        self,
        items: list[Item],
        *,
        sent: bool,
        already_counted: bool = False,
        dropped: int = 0,
        reasons: Mapping[str, int] | None = None,
        before_release: Callable[[], None] | None = None,
    ) -> None:
        """Account for items that are done: sent (less the `dropped` the server kept out,
        counted by `reasons`) or failed (`already_counted`: dropped for a full queue, counted then).
        `before_release` (on_error) runs before identify futures and flush waiters are
        resolved, so a flush() that returns has seen on_error done."""
        with self._lock:
            ready = self._account(
                items, sent=sent, already_counted=already_counted, dropped=dropped,
                reasons=reasons,
            )  # fmt: skip
        if before_release is not None:
            before_release()
        release(items, sent)
        resolve_waiters(ready)
