"""The ingestion core shared by `Pug` and `AsyncPug`.

The caller's thread validates, maps and encodes an event and appends the bytes to a
bounded queue (never raising, never blocking on I/O). One background thread per client
runs an asyncio loop that batches the queue, sends through the transport, retries
transient failures with backoff and hands permanent ones to `on_error`.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import datetime
import itertools
import logging
import os
import re
import selectors
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping

# Imported now, not when the first lookup needs it: at exit the import itself fails.
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pug import ids, wire
from pug import properties as prop_values
from pug._version import __version__
from pug.config import MAX_REQUEST_BYTES, MAX_REQUEST_EVENTS, BatchConfig, RetryPolicy
from pug.encoders import ENCODERS
from pug.errors import PugError, PugValidationError, echo
from pug.event import REGISTRY, PugEvent, WireProperties, event_class, load_well_known
from pug.transports.base import BATCH_CREATE, IDENTIFY, INHERITED_FROM_PARENT, Transport
from pug.undelivered import Undelivered

logger = logging.getLogger("pug")
T = TypeVar("T")

AUTO_PROPERTIES = {"$lib": "pug-python", "$sdkVersion": __version__, "$platform": "server"}
# fullmatch, not match: `$` would also accept a trailing newline, which the server does not.
_KIND = re.compile(r"[a-zA-Z0-9_.-]+")
# The most one framed event may take (then it alone fills a request).
_MAX_EVENT_BYTES = MAX_REQUEST_BYTES
# Distinct ids whose encoded heads a client keeps (then it starts again).
_HEADS_HELD = 4096
# Items dropped for a full queue wait for the worker to hand them to on_error in at most
# this share of max_queue_bytes (a bound in bytes: a count let 3 000 events of 400 KB
# hold 1.2 GB); past it they are only counted. An item costs its bytes and ~70 more.
_OVERFLOW_SHARE = 8
_ITEM_OVERHEAD = 70

# How long close() waits past its timeout for the worker to hand what is left to on_error.
_CLOSE_SLACK = 0.4

OnError = Callable[[PugError, list[Undelivered]], None]


@dataclass
class TrackedEvent:
    """What `before_send` sees and may change: the event as it will be sent.

    `properties` holds the custom properties by wire name with plain values (str, int,
    float, bool, datetime). Return the event (changed or not) to send it, None to drop it.
    """

    event_id: str
    kind: str
    distinct_id: str
    session_id: str
    occur_time: datetime.datetime
    properties: dict[str, Any]


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


class _Identify:
    """A queued identify: its encoded request and the future `AsyncPug` awaits."""

    __slots__ = ("body", "done")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.done: concurrent.futures.Future[bool] = concurrent.futures.Future()


_Item = bytes | _Identify


def _size(item: _Item) -> int:
    return len(item) if type(item) is bytes else len(item.body)  # type: ignore[union-attr]


class Core:
    """State and behaviour shared by the sync and async clients."""

    def __init__(
        self,
        *,
        transport: Transport,
        batch: BatchConfig,
        retry: RetryPolicy,
        timeout: float,
        on_error: OnError | None,
        before_send: Callable[[TrackedEvent], TrackedEvent | None] | None,
        strict: bool,
    ) -> None:
        self.transport = transport
        self.batch = batch
        self.retry = retry
        self.timeout = timeout
        self.on_error = on_error
        self.before_send = before_send
        self.strict = strict
        load_well_known()  # now, not on the first track() of a well-known kind
        self.session_id = ids.uuid7(time.time_ns() // 1_000_000)
        self._auto = wire.auto_properties(AUTO_PROPERTIES)
        self._reset_state()
        _add_live(self)

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Item] = deque()
        self._queue_bytes = 0
        self._first_at: float | None = None
        self._identifies_queued = 0  # an identify is sent at once, never left to the timer
        self._overflow: list[_Item] = []  # dropped for a full queue, for on_error
        self._overflow_bytes = 0
        self._overflow_lost = 0  # dropped past the overflow's bound: counted, not held
        self._stats = Stats()
        self._finished_items = 0  # items sent, failed or dropped
        self._flush_waiters: list[tuple[int, concurrent.futures.Future[bool]]] = []
        self._flush_requested = False
        self._closed = False
        self._worker: _Worker | None = None
        self._enqueued = 0  # items ever enqueued, events and identifies
        # What track()'s common case checks, as plain attributes: room is 0 until a worker
        # runs and again once the client closes, so those cases take `_enqueue`.
        self._room_events = 0
        self._room_bytes = self.batch.max_queue_bytes
        self._wake_at = self.batch.max_size
        # Encoded heads by distinct id then kind (see _plain_event); the session id is in
        # them, so a forked child starts again.
        self._custom_heads: dict[str, dict[str, bytes]] = {}
        self._typed_heads: dict[str, dict[str, bytes]] = {}
        self._heads_held = 0  # (distinct id, kind) pairs in both
        self._registry_size = -1

    # ---- the caller's side -------------------------------------------------------------

    def track(
        self,
        distinct_id: str,
        event: PugEvent | str,
        properties: Mapping[Any, Any] | None = None,
        *,
        timestamp: datetime.datetime | None = None,
        session_id: str | None = None,
    ) -> None:
        """`Pug.track` (clients bind it directly): queue one event; returns at once and
        never raises (unless `strict=True` and the event is invalid)."""
        try:
            if timestamp is None and session_id is None and self.before_send is None:
                body = self._plain_event(distinct_id, event, properties)
            else:
                body = self._encode_event(distinct_id, event, properties, timestamp, session_id)
        except PugValidationError as exc:
            self._reject(exc)
            return
        except Exception:
            logger.exception("track() failed unexpectedly; the event was dropped")
            self._count_invalid()
            return
        if body is None:
            return
        # `_enqueue`'s common case (a running client with room left) in few steps, here
        # rather than in a method of its own: one call fewer on every event.
        size = len(body)
        with self._lock:
            queue = self._queue
            common = len(queue) < self._room_events and self._queue_bytes + size <= self._room_bytes
            if common:
                if not queue:
                    self._first_at = time.monotonic()
                queue.append(body)
                self._queue_bytes += size
                self._enqueued += 1
                wake = len(queue) == self._wake_at
        if not common:
            self._enqueue(body)
        elif wake:
            self._worker.wake()  # type: ignore[union-attr]

    def _plain_event(
        self, distinct_id: str, event: PugEvent | str, properties: Mapping[Any, Any] | None
    ) -> bytes | None:
        """The common call, with no timestamp, session id or before_send: what repeats from
        call to call (the distinct id and kind, checked, with the client's constant fields)
        is looked up as one encoded head; anything unusual takes `_encode_event`."""
        if type(event) is str:
            heads = self._custom_heads
            if len(REGISTRY) != self._registry_size:
                # A catalog was imported: a kind sent as custom until now may be typed.
                heads.clear()
                self._registry_size = len(REGISTRY)
            kind = event
            custom = None
        else:
            fast = ENCODERS.get(type(event))  # type: ignore[arg-type]
            custom = fast(event) if fast is not None and not properties else None
            if custom is None:  # no generated encoder, extra properties, or a broken rule
                return self._encode_event(distinct_id, event, properties, None, None)
            heads = self._typed_heads
            kind = event.KIND  # type: ignore[union-attr]
        try:
            head = heads[distinct_id][kind]  # subscripts: a hit costs no method call
        except (KeyError, TypeError):  # not seen yet (or not even hashable)
            if custom is None and event_class(kind) is not None:  # a typed kind, as a string
                return self._encode_event(distinct_id, event, properties, None, None)
            head = self._new_head(heads, distinct_id, kind)
        if custom is None:
            custom = prop_values.encode_custom(properties)
        body = wire.event_now(head, custom)
        if len(body) > _MAX_EVENT_BYTES:
            raise _too_large(kind, body)
        return body

    def _new_head(self, heads: dict[str, dict[str, bytes]], distinct_id: str, kind: str) -> bytes:
        """Check a (distinct id, kind) pair and remember its encoded head: at most
        _HEADS_HELD of them in all (by pair, not by distinct id: one user may send many
        kinds), none over wire.CACHED_BYTES_MAX beyond the constant part, so the heads
        of a client hold a few MiB at most whatever ids and kinds it is given."""
        check_distinct_id(distinct_id, "distinct_id")
        check_kind(kind)
        head = wire.head(distinct_id, kind, self.session_id, self._auto)
        if len(head) - len(self._auto) > wire.CACHED_BYTES_MAX:
            return head
        if self._heads_held >= _HEADS_HELD:
            self._custom_heads.clear()
            self._typed_heads.clear()
            self._heads_held = 0
        heads.setdefault(distinct_id, {})[kind] = head
        self._heads_held += 1
        return head

    def _encode_event(
        self,
        distinct_id: str,
        event: PugEvent | str,
        properties: Mapping[Any, Any] | None,
        timestamp: datetime.datetime | None,
        session_id: str | None,
    ) -> bytes | None:
        """Any track() call: typed events given with extra properties, kind strings that
        name typed events, explicit timestamps and session ids, before_send."""
        # A closed client is checked when enqueueing, under the lock (close() may race).
        check_distinct_id(distinct_id, "distinct_id")
        kind, wired = prop_values.event_wire(event, properties)
        check_kind(kind)
        if session_id is None:
            session_id = self.session_id
        elif not ids.is_uuid(session_id):
            raise PugValidationError("session_id must be a UUID string", field="session_id")
        if timestamp is None:
            seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        elif isinstance(timestamp, datetime.datetime):
            seconds, nanos = _timestamp_parts(timestamp, "timestamp")
        else:
            raise PugValidationError(
                f"timestamp must be a datetime, not {type(timestamp).__name__}",
                field="timestamp",
            )
        event_id = ids.uuid7(seconds * 1000 + nanos // 1_000_000)
        if self.before_send is not None:
            plain = {k: v[1] for k, v in wired.items()}
            occur = wire.datetime_from_parts(seconds, nanos)
            hooked = self._before_send(
                TrackedEvent(event_id, kind, distinct_id, session_id, occur, plain)
            )
            if hooked is None:
                return None
            kind, distinct_id = hooked.kind, hooked.distinct_id
            event_id, session_id = hooked.event_id, hooked.session_id
            if hooked.occur_time != occur:
                seconds, nanos = _timestamp_parts(hooked.occur_time, "occur_time")
            # Keep the declared variant of values the hook left alone (a double stays one).
            out: WireProperties = {}
            for key, value in hooked.properties.items():
                before = wired.get(key)
                if before is not None and before[1] is value:
                    out[key] = before
                else:
                    out.update(prop_values.custom_properties({key: value}))
            wired = out
        head = wire.head(distinct_id, kind, session_id, self._auto)
        body = wire.frame(wire.event(event_id, seconds, nanos, head, wire.custom_field(wired)))
        if len(body) > _MAX_EVENT_BYTES:
            raise _too_large(kind, body)
        return body

    def _before_send(self, tracked: TrackedEvent) -> TrackedEvent | None:
        """Run the hook; what it returns is checked like a caller's input (its event id,
        session id and time are taken as it left them)."""
        assert self.before_send is not None
        try:
            result = self.before_send(tracked)
        except Exception:
            logger.exception("before_send raised; the event was dropped")
            self._count_invalid()
            return None
        if result is None:
            return None
        check_distinct_id(result.distinct_id, "distinct_id")
        check_kind(result.kind)
        for name in ("event_id", "session_id"):
            if not ids.is_uuid(getattr(result, name)):
                raise PugValidationError(
                    f"before_send set {name} to {echo(getattr(result, name))}, not a UUID",
                    field=name,
                )
        if not isinstance(result.occur_time, datetime.datetime):
            raise PugValidationError("before_send set occur_time to a non-datetime")
        return result

    def identify(
        self,
        external_id: str,
        traits: Mapping[Any, Any] | None,
        anonymous_id: str | None,
        device_id: str | None,
    ) -> concurrent.futures.Future[bool]:
        """Queue an identify; the future says whether it was delivered (never raises)."""
        failed: concurrent.futures.Future[bool] = concurrent.futures.Future()
        try:
            if self._closed:
                logger.warning("identify() after close(); it was dropped")
                failed.set_result(False)
                return failed
            check_distinct_id(external_id, "external_id")
            if anonymous_id is not None and (
                not isinstance(anonymous_id, str)
                or not (anonymous_id == "" or anonymous_id.startswith("anon-"))
                or len(anonymous_id) > 255
            ):
                raise PugValidationError(
                    "anonymous_id must start with 'anon-' and be at most 255 characters",
                    field="anonymous_id",
                )
            if device_id is not None and (not isinstance(device_id, str) or len(device_id) > 36):
                raise PugValidationError(
                    "device_id must be a string of at most 36 characters", field="device_id"
                )
            if traits is not None and not isinstance(traits, Mapping):
                raise PugValidationError("traits must be a mapping", field="traits")
            body = wire.identify(
                external_id=external_id,
                traits=prop_values.traits(traits) if traits is not None else None,
                anonymous_id=anonymous_id,
                device_id=device_id,
            )
            if len(body) > MAX_REQUEST_BYTES:  # the server would fail it, again and again
                raise PugValidationError(
                    f"identify encodes to {len(body)} bytes, over the {MAX_REQUEST_BYTES}-byte "
                    "limit of one request: send fewer or smaller traits",
                    field="traits",
                )
        except PugValidationError as exc:
            self._reject(exc, what="identify")
            failed.set_result(False)
            return failed
        except Exception:
            logger.exception("identify() failed unexpectedly; it was dropped")
            failed.set_result(False)
            return failed
        item = _Identify(body)
        self._enqueue(item)
        return item.done

    def resend(self, items: Iterable[Undelivered]) -> None:
        """Queue dead letters again, unchanged (same ids and times: the server keeps one)."""
        for item in items:
            self._enqueue(_Identify(item.queued) if item.is_identify else item.queued)

    def _reject(self, exc: PugValidationError, what: str = "event") -> None:
        self._count_invalid()
        if self.strict:
            raise exc
        # The message, not the exception: its traceback holds the caller's frames (and the
        # input in them, however large) for as long as a handler keeps the record.
        logger.warning("invalid %s dropped: %s", what, str(exc))

    def _count_invalid(self) -> None:
        with self._lock:
            self._stats.dropped_invalid += 1

    def _enqueue(self, item: _Item) -> None:
        is_identify = type(item) is _Identify
        batch = self.batch
        lost: list[_Item] = []
        with self._lock:
            if self._closed:  # close() won the race since the caller checked
                worker, wake, closed = None, False, True
            else:
                queue = self._queue
                if not queue:
                    self._first_at = time.monotonic()
                queue.append(item)
                self._queue_bytes += _size(item)
                self._identifies_queued += is_identify
                self._enqueued += 1
                closed, overflowed = False, False
                if len(queue) > batch.max_queue_size or self._queue_bytes > batch.max_queue_bytes:
                    overflowed, lost = self._drop_oldest()
                worker = self._worker
                wake = len(queue) == batch.max_size or is_identify or overflowed
        if closed:
            logger.warning("track() after close(); the event was dropped")
            self._count_invalid()
            if is_identify:
                item.done.set_result(False)  # type: ignore[union-attr]
            return
        for old in lost:
            if type(old) is _Identify:
                old.done.set_result(False)
        if worker is None:
            worker = self._start_worker()
            wake = True
        if wake and worker is not None:
            worker.wake()

    def _drop_oldest(self) -> tuple[bool, list[_Item]]:
        """Bring the queue back within its bound (under the lock). Returns whether the
        worker must be woken (the first overflow since it last looked) and the items
        dropped past the on_error cap, which only get counted."""
        queue, batch = self._queue, self.batch
        had_overflow = bool(self._overflow)
        lost: list[_Item] = []
        while len(queue) > batch.max_queue_size or self._queue_bytes > batch.max_queue_bytes:
            old = queue.popleft()
            self._queue_bytes -= _size(old)
            self._identifies_queued -= type(old) is _Identify
            self._stats.dropped_queue_full += 1
            # Hold dropped items for on_error within a byte bound, so memory stays bounded
            # however fast they come; past it they are only counted.
            size = _size(old) + _ITEM_OVERHEAD
            if not self._overflow or (
                self._overflow_bytes + size <= batch.max_queue_bytes // _OVERFLOW_SHARE
            ):
                self._overflow.append(old)
                self._overflow_bytes += size
            else:
                self._overflow_lost += 1
                self._finished_items += 1
                lost.append(old)
        return bool(self._overflow) and not had_overflow, lost

    def worker_for_reads(self) -> _Worker:
        """The worker whose loop runs reads (started if needed); raises once closed."""
        if self._closed:
            raise PugError("failed_precondition", "the client is closed")
        worker = self._worker or self._start_worker()
        if worker is None:
            if self._closed:
                raise PugError("failed_precondition", "the client is closed")
            raise PugError("unavailable", "the client's worker thread could not start")
        return worker

    def _start_worker(self) -> _Worker | None:
        """The worker, started if there is none yet (None once the client is closed).

        It is made under the lock, so callers racing here start exactly one, and its thread
        is started outside it, with nothing waiting for the thread: under gevent, starting
        or waiting for a thread may switch to another greenlet, which may take this lock."""
        with self._lock:
            worker = self._worker
            if worker is not None or self._closed:
                return worker
            worker = self._worker = _Worker(self)
            self._room_events = self.batch.max_queue_size
        try:
            worker.start()
        except Exception:  # e.g. "can't start new thread": the next call tries again
            logger.exception("could not start the pug worker thread")
            with self._lock:
                if self._worker is worker:
                    self._worker = None
                    self._room_events = 0
            worker.loop.close()
            return None
        return worker

    # ---- flush, close, stats --------------------------------------------------------

    def flush_future(self) -> concurrent.futures.Future[bool]:
        """Resolves True once everything queued before the call is sent or failed."""
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self._lock:
            target = self._enqueued
            if self._finished_items >= target:
                done.set_result(True)
                return done
            self._flush_waiters.append((target, done))
            self._flush_requested = True
            worker = self._worker
        if worker is not None:
            worker.wake()
        return done

    def flush(self, timeout: float | None) -> bool:
        try:
            return wait_for(self.flush_future(), timeout)
        except concurrent.futures.TimeoutError:
            logger.warning("flush() timed out after %ss with events still queued", timeout)
            return False

    def close(self, timeout: float | None) -> None:
        """Send what is queued (one attempt, within `timeout`), dead-letter the rest."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._room_events = 0
            worker = self._worker
        if worker is not None:
            worker.stop(timeout)
        _LIVE.discard(self)

    def stats(self) -> Stats:
        with self._lock:
            s = self._stats
            by_reason = dict(s.dropped_by_server)
            return dataclasses.replace(
                s,
                enqueued=self._enqueued,
                dropped_by_server=by_reason,
                queue_length=len(self._queue),
            )

    def after_fork_in_child(self) -> None:
        """The child starts empty: the parent's queue is the parent's to send."""
        if self._worker is not None:  # its loop's selector is shared with the parent
            INHERITED_FROM_PARENT.append(self._worker)
        self._reset_state()
        self.session_id = ids.uuid7(time.time_ns() // 1_000_000)
        self.transport.reset_after_fork()

    # ---- the worker's side ----------------------------------------------------------

    def _due(self, now: float) -> bool:
        """Whether the worker should send now (called under the lock)."""
        if not self._queue:
            return False
        return (
            self._flush_requested
            or self._identifies_queued > 0
            or len(self._queue) >= self.batch.max_size
            or (self._first_at is not None and now - self._first_at >= self.batch.max_wait)
        )

    def _next_wake(self, now: float) -> float:
        with self._lock:
            if self._first_at is not None and self._queue:
                return max(0.0, self._first_at + self.batch.max_wait - now)
        return self.batch.max_wait

    def _take(self, force: bool) -> tuple[str, list[_Item]] | None:
        """Pop the next request's items: a run of events, or one identify."""
        with self._lock:
            queue = self._queue
            if not queue or not (force or self._due(time.monotonic())):
                if not queue:
                    self._flush_requested = False
                return None
            if type(queue[0]) is _Identify:
                item = queue.popleft()
                self._queue_bytes -= _size(item)
                self._identifies_queued -= 1
                taken: list[_Item] = [item]
                method = IDENTIFY
            elif (
                not self._identifies_queued
                and len(queue) <= MAX_REQUEST_EVENTS
                and self._queue_bytes <= MAX_REQUEST_BYTES
            ):
                # Everything queued fits one request: take it in one step, so the lock
                # the callers of track() wait on is held for microseconds.
                taken = list(queue)
                queue.clear()
                self._queue_bytes = 0
                method = BATCH_CREATE
            else:
                taken = self._take_events(queue)
                method = BATCH_CREATE
            self._first_at = time.monotonic() if queue else None
            return method, taken

    def _take_events(self, queue: deque[_Item]) -> list[_Item]:
        """Pop the longest run of events at the front that fits one request (under the
        lock): at most 1000, at most MAX_REQUEST_BYTES, never past an identify."""
        count = min(len(queue), MAX_REQUEST_EVENTS)
        if self._identifies_queued:
            count = next(
                (
                    i
                    for i, item in enumerate(itertools.islice(queue, count))
                    if type(item) is not bytes
                ),
                count,
            )
        size = sum(map(len, itertools.islice(queue, count)))  # type: ignore[arg-type]
        while size > MAX_REQUEST_BYTES:  # rare: large events; give back from the end
            count -= 1
            size -= len(queue[count])  # type: ignore[arg-type]
        count = max(count, 1)  # a single event always fits (checked at track())
        taken = [queue.popleft() for _ in range(count)]
        self._queue_bytes -= sum(map(len, taken))  # type: ignore[arg-type]
        return taken

    def _abandon(self) -> None:
        """close() ran out of time: everything still queued goes to on_error at once."""
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
            self._queue_bytes = 0
            self._identifies_queued = 0
            self._first_at = None
        error = PugError("deadline_exceeded", "close() timed out before delivery")
        self._finish(items, sent=False, error=error)

    def _finish(
        self,
        items: list[_Item],
        *,
        sent: bool,
        error: PugError | None = None,
        overflow: bool = False,
        server_dropped: tuple[int, dict[str, int]] = (0, {}),
    ) -> None:
        """Account for items that are done; resolve identifies and flush waiters."""
        identifies = [i for i in items if type(i) is _Identify]
        events = len(items) - len(identifies)
        with self._lock:
            if sent:
                dropped, reasons = server_dropped
                self._stats.sent += events - dropped
                by = self._stats.dropped_by_server
                for reason, n in reasons.items():
                    by[reason] = by.get(reason, 0) + n
                self._stats.identifies_sent += len(identifies)
            elif not overflow:  # overflow drops are counted when they happen
                self._stats.failed += len(items)
            self._finished_items += len(items)
            ready = [f for t, f in self._flush_waiters if t <= self._finished_items]
            self._flush_waiters = [
                (t, f) for t, f in self._flush_waiters if t > self._finished_items
            ]
        # on_error runs before anyone waiting on flush() or identify() is released.
        if error is not None and not sent:
            self._dead_letter(error, items)
        for item in identifies:
            if not item.done.done():
                item.done.set_result(sent)
        for f in ready:
            if not f.done():
                f.set_result(True)

    def _dead_letter(self, error: PugError, items: list[_Item]) -> None:
        if not items:
            return
        logger.error("%d item(s) not delivered: %s", len(items), error)
        if self.on_error is None:
            return
        try:
            self.on_error(error, undelivered(items))
        except Exception:
            logger.exception("on_error raised")

    def _drain_overflow(self) -> None:
        with self._lock:
            items, self._overflow = self._overflow, []
            lost, self._overflow_lost = self._overflow_lost, 0
            self._overflow_bytes = 0
        if not items and not lost:
            return
        logger.warning("queue full: %d oldest item(s) dropped", len(items) + lost)
        if lost:
            logger.warning(
                "%d of them were not handed to on_error: they came faster than it took them",
                lost,
            )
        error = PugError("resource_exhausted", "queue full")
        self._finish(items, sent=False, error=error, overflow=True)

    def _on_response(self, method: str, items: list[_Item], response: bytes) -> None:
        """Account for a delivered request. Raises PugError (transient) for an answer that
        is not what the server sends: the items are then retried (same ids)."""
        if method != BATCH_CREATE:
            self._finish(items, sent=True)
            return
        try:
            accepted, dropped, reasons = wire.parse_batch_response(response)
        except (ValueError, IndexError):  # IndexError: cut short inside a varint
            raise PugError(
                "unknown", "the answer to BatchCreate is not a BatchCreateResponse"
            ) from None
        if accepted + dropped != len(items):
            raise PugError(
                "unknown",
                f"the server answered accepted={accepted} dropped={dropped} "
                f"for {len(items)} events",
            )
        named = sum(reasons.values())
        if named > dropped:  # counted per reason, the drops would outnumber the events
            raise PugError(
                "unknown",
                f"the server answered dropped={dropped} but dropped_by_reason counts "
                f"{named}, for {len(items)} events",
            )
        if dropped:
            logger.warning("the server dropped %d of %d events: %s", dropped, len(items), reasons)
            unnamed = dropped - sum(reasons.values())
            if unnamed > 0:
                reasons = {**reasons, "unspecified": unnamed}
        # A drop is the server's decision, not a delivery failure: counted per reason, not
        # sent, not handed to on_error (WIRE.md).
        self._finish(items, sent=True, server_dropped=(dropped, reasons))

    def _count_retry(self) -> None:
        with self._lock:
            self._stats.retries += 1


class _ResolverPool(ThreadPoolExecutor):
    """The worker loop's default executor, which asyncio uses for DNS lookups.

    A thread pool; but once the interpreter has begun to shut down (at exit, while queued
    events are drained) no new thread may start, so a lookup then runs on the calling
    thread: a host-name `base_url` must still resolve when the last events go out.
    """

    def __init__(self) -> None:
        super().__init__(max_workers=2, thread_name_prefix="pug-resolve")

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                done.set_exception(exc)
            return done


def _gevent_monkey() -> Any:
    """gevent's `monkey` module if it has patched `threading` (a Thread is then a greenlet)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey
    return None


class _SelectorOfTheWorkerThread(selectors.BaseSelector):
    """The worker loop's selector under gevent: gevent's selector, made in the worker's own
    thread when it starts (`bind`), so its watchers belong to that thread's hub, which runs
    whenever the loop waits. The loop is made earlier, on the caller's thread: until then
    registrations (the loop's self-pipe) are only recorded."""

    def __init__(self) -> None:
        self._selector: selectors.BaseSelector = selectors.SelectSelector()  # records only

    def bind(self) -> None:
        """In the worker thread, before the loop runs."""
        bound = selectors.DefaultSelector()  # gevent's (monkey-patched), on this thread's hub
        for key in self._selector.get_map().values():
            bound.register(key.fileobj, key.events, key.data)
        self._selector.close()
        self._selector = bound

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._selector.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._selector.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._selector.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return self._selector.select(timeout)

    def close(self) -> None:
        self._selector.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._selector.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._selector.get_map()


class _Worker:
    """One daemon thread with its own asyncio loop; owns the transport's connections.

    Made (with its loop) by `Core._start_worker` under the core's lock, then started outside
    it; nobody waits for the thread to run: what is asked of the loop before (a wake, a
    stop, a read) is queued with `call_soon_threadsafe` and runs first.

    Under gevent (`threading` monkey-patched, as in gunicorn's gevent workers) the thread is
    a real OS thread all the same, not a greenlet: asyncio's running loop is per OS thread,
    so a loop running in a greenlet would be the running loop of every greenlet of that
    thread, and `asyncio.run()` in a request handler would refuse to start. The loop's
    selector is then gevent's, made in that thread (`_SelectorOfTheWorkerThread`): what is
    gevent-patched there (the default executor's threads, DNS) is served by that thread's
    own hub while the loop waits, never by the hub of the thread that made the worker.
    """

    def __init__(self, core: Core) -> None:
        self.core = core
        self._monkey = _gevent_monkey()
        self._selector: _SelectorOfTheWorkerThread | None = None
        # A bare thread (no threading.Thread): starting it does not wait for it to run.
        self._start_new_thread: Callable[..., Any] = _thread.start_new_thread
        allocate_lock: Callable[[], Any] = _thread.allocate_lock
        if self._monkey is None:
            self.loop = asyncio.new_event_loop()
        else:
            self._selector = _SelectorOfTheWorkerThread()
            self.loop = asyncio.SelectorEventLoop(self._selector)
            self._start_new_thread = self._monkey.get_original("_thread", "start_new_thread")
            allocate_lock = self._monkey.get_original("_thread", "allocate_lock")
        self.thread: threading.Thread | None = None  # set by the thread itself
        # Made now, bound to the loop when _main first waits on it (Python >= 3.10).
        self._wake = asyncio.Event()
        self._stopping = False
        self._close_deadline: float | None = None
        self._inflight: asyncio.Future[bytes] | None = None
        # Held until _run ends: what stop() waits on, also before the thread has started.
        self._ended = allocate_lock()
        self._ended.acquire()

    def start(self) -> None:
        """Start the thread (the caller holds no lock: see `Core._start_worker`)."""
        self._start_new_thread(self._run, ())

    def wake(self) -> None:
        # A closed loop raises RuntimeError: the client was closed meanwhile.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._set_wake)

    def _set_wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None) -> None:
        # One deadline for the loop and for the wait below (the loop's clock is monotonic).
        deadline = None if timeout is None else time.monotonic() + timeout
        # Delivery stops a little earlier when much is queued, to leave time to hand what
        # is left to on_error (about a microsecond an item; up to a quarter of the timeout).
        reserve = 0.0 if timeout is None else min(timeout / 4, len(self.core._queue) * 2e-6)

        def begin() -> None:
            self._stopping = True
            if deadline is not None:
                self._close_deadline = deadline - reserve
                # A request already on the wire is cut off at the deadline too.
                self.loop.call_at(self._close_deadline, self._cancel_inflight)
            self._set_wake()

        try:
            self.loop.call_soon_threadsafe(begin)
        except RuntimeError:
            return
        if threading.current_thread() is not self.thread:
            # What is left at the deadline goes to on_error at once (no decoding, no I/O):
            # the slack covers handing over a large backlog, so close() returns within
            # its timeout + 0.5 s with on_error done.
            self._join(None if deadline is None else deadline + _CLOSE_SLACK - time.monotonic())

    def _join(self, timeout: float | None) -> None:
        """Wait (at most `timeout`) for the thread to end; a plain lock, not Thread.join:
        the thread may not have started yet, and under gevent it is not a Thread (a greenlet
        calling close() then blocks its OS thread, for at most `timeout`)."""
        if self._ended.acquire(timeout=-1 if timeout is None else timeout):
            self._ended.release()

    def _cancel_inflight(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()

    async def _attempt(self, method: str, body: bytes, timeout: float) -> bytes:
        task = asyncio.ensure_future(self.core.transport.unary(method, body, timeout=timeout))
        self._inflight = task
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and self._stopping:
                raise PugError("deadline_exceeded", "close() timed out during delivery") from None
            raise
        finally:
            self._inflight = None

    def _run(self) -> None:
        try:
            self.thread = threading.current_thread()
            self.thread.name = "pug-worker"
            if self._selector is not None:  # under gevent (see the class's docstring)
                self._selector.bind()
            asyncio.set_event_loop(self.loop)
            self.loop.set_default_executor(_ResolverPool())
            try:
                self.loop.run_until_complete(self._main())
            finally:
                _cancel_leftovers(self.loop)
                if self._selector is not None:
                    # The default executor's threads are then greenlets of this thread's
                    # hub, which runs only while this loop waits: end them now.
                    self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            self._ended.release()

    async def _main(self) -> None:
        core = self.core
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), core._next_wake(time.monotonic()))
                self._wake.clear()
                core._drain_overflow()
                await self._send(force=False)
            core._drain_overflow()
            await self._send(force=True)
        finally:
            try:
                await core.transport.aclose()
            except Exception:
                logger.exception("closing the transport failed")

    def _time_left(self) -> float | None:
        if self._close_deadline is None:
            return None
        return self._close_deadline - self.loop.time()

    async def _send(self, *, force: bool) -> None:
        while True:
            left = self._time_left()
            if left is not None and left <= 0:
                self.core._abandon()
                return
            taken = self.core._take(force)
            if taken is None:
                return
            await self._deliver(*taken)

    async def _deliver(self, method: str, items: list[_Item]) -> None:
        core = self.core
        body = (
            wire.batch(items)  # type: ignore[arg-type]
            if method == BATCH_CREATE
            else items[0].body  # type: ignore[union-attr]
        )
        attempt = 0
        while True:
            left = self._time_left()
            if left is not None and left <= 0:
                error = PugError("deadline_exceeded", "close() timed out before delivery")
                core._finish(items, sent=False, error=error)
                return
            timeout = core.timeout if left is None else min(core.timeout, left)
            try:
                response = await self._attempt(method, body, timeout)
            except PugError as exc:
                error = exc
            except Exception as exc:  # a transport bug must not kill the worker
                logger.exception("the transport raised a non-PugError")
                error = PugError("unknown", f"{type(exc).__name__}: {exc}")
            else:
                try:
                    core._on_response(method, items, response)
                    return
                except PugError as exc:
                    error = exc
            if error.code == "invalid_argument" and len(items) > 1 and not self._stopping:
                # The server refuses a whole batch for one bad event: find it by halves,
                # so the rest is delivered and only what is refused goes to on_error.
                logger.warning(
                    "the server refused a batch of %d events (%s); sending it in halves "
                    "to find the events it refuses", len(items), error,
                )  # fmt: skip
                half = len(items) // 2
                await self._deliver(method, items[:half])
                await self._deliver(method, items[half:])
                return
            if core.retry.is_permanent(error.code) or self._stopping:
                core._finish(items, sent=False, error=error)
                return
            delay = core.retry.wait_before_retry(attempt, error.retry_after)
            attempt += 1
            core._count_retry()
            logger.warning(
                "sending %d item(s) failed (%s); retry %d in %.2fs",
                len(items), error, attempt, delay,
            )  # fmt: skip
            await self._backoff(delay)
            core._drain_overflow()

    async def _backoff(self, delay: float) -> None:
        """Sleep `delay`, or less if close() is called (it makes one last attempt)."""
        assert self._wake is not None
        deadline = self.loop.time() + delay
        while not self._stopping:
            left = deadline - self.loop.time()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return
            self.core._drain_overflow()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """What `asyncio.run` does before closing its loop: cancel tasks still pending (a read
    another thread started as the client closed) and finish async generators, so none is
    destroyed pending when the loop closes."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


def wait_for(future: concurrent.futures.Future[T], timeout: float | None) -> T:
    """`future.result(timeout)` for a future the worker thread resolves. Under gevent the
    wait is made in short slices: before gevent 26.8 a greenlet waiting on a lock that
    another OS thread releases is never woken."""
    if _gevent_monkey() is None:
        return future.result(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
        try:
            return future.result(max(left, 0.0))
        except concurrent.futures.TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise


def check_kind(kind: str) -> None:
    """The contract's rule for Event.kind."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise PugValidationError(f"kind {echo(kind)} must match ^[a-zA-Z0-9_.-]+$")


def _timestamp_parts(value: datetime.datetime, name: str) -> tuple[int, int]:
    """`wire.datetime_parts` for a caller's time, its errors as validation errors."""
    try:
        return wire.datetime_parts(value)
    except Exception as exc:  # out of range, or a tzinfo that raises
        raise PugValidationError(
            f"{name} cannot be sent: {echo(str(exc))[1:-1]}", field=name
        ) from None


def _too_large(kind: str, body: bytes) -> PugValidationError:
    return PugValidationError(
        f"event {echo(kind)} encodes to {len(body)} bytes, over the "
        f"{_MAX_EVENT_BYTES}-byte limit of one request"
    )


def check_distinct_id(value: object, name: str) -> None:
    """The identity rules of the contract: a non-empty string, no `cookieless-` prefix."""
    if not isinstance(value, str) or not value:
        raise PugValidationError(f"{name} must be a non-empty string", field=name)
    if value.startswith("cookieless-"):
        raise PugValidationError(
            f"{name} must not start with the reserved 'cookieless-' prefix", field=name
        )


def undelivered(items: list[_Item]) -> list[Undelivered]:
    """Queued items as `on_error` gets them: wrapped, not decoded (see pug.undelivered)."""
    return [
        Undelivered(i) if type(i) is bytes else Undelivered(i.body, is_identify=True)  # type: ignore[union-attr]
        for i in items
    ]


# Every open client, for fork and exit handling; weak so clients can be collected.
_LIVE: weakref.WeakSet[Core] = weakref.WeakSet()


def _add_live(core: Core) -> None:
    _LIVE.add(core)
    _hook_child_exits()


def _after_fork_in_child() -> None:
    for core in list(_LIVE):
        core.after_fork_in_child()
    _hook_child_exits()


def _at_exit() -> None:
    for core in list(_LIVE):
        try:
            core.close(core.batch.exit_timeout)
        except Exception:
            logger.exception("flushing at exit failed")


# ---- processes that end with os._exit ---------------------------------------------------
#
# multiprocessing's children (fork, forkserver) and Celery's prefork pool children end with
# os._exit: atexit never runs in them. What does run there:
# - multiprocessing (and billiard, whose util re-exports multiprocessing's registries) calls
#   the util.Finalize callbacks registered in the process at the end of
#   Process._bootstrap. _bootstrap first clears them (a finalizer registered at fork, or
#   while a forkserver/spawn child imports the target's module, is gone), then calls the
#   util.register_after_fork callbacks: ours registers the finalizer again.
# - billiard's pool workers (Celery's prefork children) leave from inside run(), in
#   Worker._do_exit, with os._exit: the finalizers never run there. _do_exit first calls
#   the pool's on_exit, which in Celery sends `worker_process_shutdown` in the child.
# Both close every live client with its exit_timeout, as `_at_exit` does; close() is
# idempotent, so whichever hook runs first sends and the others find nothing left. (In a
# process that was not started by multiprocessing, the finalizer runs in multiprocessing's
# own atexit handler, maybe before `_at_exit`: the same close.) A forked child's clients
# start empty (Core.after_fork_in_child), so a child sends only what it tracked itself.

# Before the finalizers the standard library registers (the highest, Pool's, is 15): the
# clients are closed before children are joined or queue feeder threads waited for.
_FINALIZER_PRIORITY = 100
_CELERY_RECEIVER_UID = "pug.close-clients-at-child-exit"
# What this process registered; inherited by a forked child together with the registries.
_finalizers: dict[object, tuple[int, Any]] = {}  # Finalize class → (pid, its finalizer)
_after_forkers: set[object] = set()  # the register_after_fork functions used
_celery_signals: set[object] = set()  # the worker_process_shutdown signals connected


class _AfterForkOwner:
    """What util.register_after_fork holds (weakly) for our callback."""


_AFTER_FORK_OWNER = _AfterForkOwner()


def _hook_child_exits() -> None:
    """Close the live clients at the exit handling of processes that skip atexit (above).

    Called when a client is made and in a forked child; only hooks into modules already
    imported (a child started by multiprocessing or billiard has them)."""
    try:
        for name in ("multiprocessing.util", "billiard.util"):
            util = sys.modules.get(name)
            if util is not None:
                _hook_multiprocessing(util)
        signals = sys.modules.get("celery.signals")
        if signals is not None and signals.worker_process_shutdown not in _celery_signals:
            signals.worker_process_shutdown.connect(
                _close_at_celery_child_exit, weak=False, dispatch_uid=_CELERY_RECEIVER_UID
            )
            _celery_signals.add(signals.worker_process_shutdown)
    except Exception:
        logger.exception("could not hook into the exit of child processes")


def _hook_multiprocessing(util: Any) -> None:
    pid = os.getpid()
    held = _finalizers.get(util.Finalize)
    if held is None or held[0] != pid or not held[1].still_active():
        finalizer = util.Finalize(None, _at_exit, exitpriority=_FINALIZER_PRIORITY)
        _finalizers[util.Finalize] = (pid, finalizer)
    if util.register_after_fork not in _after_forkers:
        util.register_after_fork(_AFTER_FORK_OWNER, _after_multiprocessing_bootstrap)
        _after_forkers.add(util.register_after_fork)


def _after_multiprocessing_bootstrap(owner: _AfterForkOwner) -> None:
    _hook_child_exits()


def _close_at_celery_child_exit(**kwargs: Any) -> None:
    _at_exit()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
