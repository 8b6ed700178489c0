"""The ingestion core of one client: `track`, `identify`, `flush`, `close`, `stats`.

It wires the pieces and holds no logic of theirs; one event goes one way:
validate (pug._ingest.validate) → EventEncoder (framed bytes) → EventQueue → Worker
(batch, send, retry) → Transport; the Worker finishes the items in the queue. The
caller's thread never blocks on I/O and `track` never raises (unless `strict=True`).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pug import ids
from pug._ingest import lifecycle, validate
from pug._ingest.encode import EventEncoder
from pug._ingest.queue import REFUSED, EventQueue, IngestQueue, Item, QueuedIdentify, Stats
from pug._ingest.worker import OnError, Worker
from pug._version import __version__
from pug._wire import protobuf as pb
from pug.config import BatchConfig, RetryPolicy
from pug.context import GENERATION, AddedProperties, current_frame
from pug.errors import PugError, PugValidationError, echo
from pug.event import PugEvent, WireProperties, event_class, well_known_kinds
from pug.properties import _field_names, check_mapping, custom_properties, event_wire, traits
from pug.transports.base import INHERITED_FROM_PARENT, Transport
from pug.undelivered import Undelivered

if TYPE_CHECKING:
    from pug._ingest.spool import Spool, SpoolQueue
    from pug.context import _Frame

logger = logging.getLogger("pug")

AUTO_PROPERTIES = {"$lib": "pug-python", "$sdkVersion": __version__, "$platform": "server"}

__all__ = ["Core", "OnError", "Stats", "TrackedEvent"]


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


BeforeSend = Callable[[TrackedEvent], TrackedEvent | None]


class Core:
    """What `Pug` and `AsyncPug` share: one encoder, one queue, one worker (started on
    the first item), registered with lifecycle for exit and fork."""

    def __init__(
        self,
        *,
        transport: Transport,
        batch: BatchConfig,
        retry: RetryPolicy,
        timeout: float,
        on_error: OnError | None,
        before_send: BeforeSend | None,
        strict: bool,
        spool: Spool | None = None,
        properties: AddedProperties | None = None,
    ) -> None:
        self.transport = transport
        self.properties = properties  # the client's own, sent with every event
        well_known_kinds()  # now, not on the first track(): which module has which kind
        self.batch = batch
        self.retry = retry
        self.timeout = timeout
        self.on_error = on_error
        self.before_send = before_send
        self.strict = strict
        self.spool = spool
        self.encoder = EventEncoder(ids.uuid7(time.time_ns() // 1_000_000), AUTO_PROPERTIES)
        self._start_empty()
        lifecycle.add_live(self)
        if len(self.queue):  # what an earlier process left in the spool
            self._after_put(0)

    def _start_empty(self) -> None:
        batch = self.batch
        self._spooled: SpoolQueue | None = None
        if self.spool is not None:
            from pug._ingest.spool import SpoolError, SpoolQueue  # a client with a spool only

            try:
                self._spooled = SpoolQueue(
                    self.spool,
                    max_items=batch.max_queue_size,
                    max_bytes=batch.max_queue_bytes,
                    batch_size=batch.max_size,
                    max_wait=batch.max_wait,
                )
            except SpoolError as exc:
                logger.error(
                    "pug spool disabled: %s; the client keeps its events in memory only "
                    "(they are lost if the process dies)", exc,
                )  # fmt: skip
        self.queue: IngestQueue
        if self._spooled is not None:  # (a queue is falsy when empty: no `or` here)
            self.queue = self._spooled
        else:
            self.queue = EventQueue(
                max_items=batch.max_queue_size,
                max_bytes=batch.max_queue_bytes,
                batch_size=batch.max_size,
                max_wait=batch.max_wait,
            )
        self._worker_lock = threading.Lock()  # exactly one worker is started
        self._worker: Worker | None = None

    @property
    def session_id(self) -> str:
        return self.encoder.session_id

    @property
    def exit_timeout(self) -> float:
        return self.batch.exit_timeout

    # ---- track ----------------------------------------------------------------------

    def track(
        self,
        distinct_id: str | None,
        event: PugEvent | str,
        properties: Mapping[Any, Any] | None,
        timestamp: datetime.datetime | None,
        session_id: str | None,
    ) -> None:
        """Validate and encode one event, and queue it (see `Pug.track`). What the call
        does not give (a distinct id of None) comes from the context (pug.context)."""
        try:
            frame = current_frame()
            if frame is not None or self.properties is not None or distinct_id is None:
                body = self._encode_in_context(
                    frame, distinct_id, event, properties, timestamp, session_id
                )
            elif timestamp is None and session_id is None and self.before_send is None:
                # The common call: the encoder checks a kind once, when it first holds
                # it, and a distinct id unless it is the kind's last one.
                body = self.encoder.encode_now(distinct_id, event, properties)
                if body is None:  # not so common after all
                    body = self._encode_checked(distinct_id, event, properties, None, None)
            else:
                body = self._encode_checked(distinct_id, event, properties, timestamp, session_id)
            if body is None:  # before_send dropped it
                return
        except PugValidationError as exc:
            self._reject(exc)
            return
        except Exception:
            logger.exception("track() failed unexpectedly; the event was dropped")
            self.queue.count_invalid()
            return
        outcome = self.queue.put(body)
        if outcome or self._worker is None:
            self._after_put(outcome)

    def _encode_in_context(
        self,
        frame: _Frame | None,
        distinct_id: str | None,
        event: PugEvent | str,
        properties: Mapping[Any, Any] | None,
        timestamp: datetime.datetime | None,
        session_id: str | None,
    ) -> bytes | None:
        """`track` where the context (`frame`, if any) or the client adds something: the
        distinct id and session id the call did not give, and properties under the event's
        own (the event's win, then the context's, then the client's). A typed event's
        fields are its own too: what is added never fills one it left unset."""
        added = self.properties
        if frame is not None:
            resolved = frame.resolution
            if resolved.generation != GENERATION[0]:  # not made yet, or set_context since
                resolved = frame.resolved()
            if distinct_id is None:
                distinct_id = resolved.distinct_id
            if session_id is None:
                session_id = resolved.session_id
            added = resolved.properties if added is None else resolved.with_client(added)
        if distinct_id is None:
            raise PugValidationError(
                f"event {echo(_kind_of(event))} has no distinct id: pass one to track() or "
                "track it inside pug.context(distinct_id=...)",
                field="distinct_id",
            )
        if properties is not None and type(properties) is not dict:
            check_mapping(properties)
        if timestamp is None and session_id is None and self.before_send is None:
            if added is None:
                body = self.encoder.encode_now(distinct_id, event, properties)
            else:
                # Encoded once, appended: but for keys the event has (its own win) and a
                # typed event's fields (never filled from outside).
                owned = properties if isinstance(event, str) else _field_names(type(event))
                if not owned or added.keys.isdisjoint(owned):
                    extra = added.data
                else:
                    extra = added.without(owned)
                body = self.encoder.encode_now(distinct_id, event, properties, extra)
            if body is not None:
                return body  # else: a typed event, or a kind string naming one
        if added is not None:
            properties = _merged(added, event, properties)
        return self._encode_checked(distinct_id, event, properties, timestamp, session_id)

    def _encode_checked(
        self,
        distinct_id: str,
        event: PugEvent | str,
        properties: Mapping[Any, Any] | None,
        timestamp: datetime.datetime | None,
        session_id: str | None,
    ) -> bytes | None:
        """Any track() call: typed events given with extra properties, kind strings that
        name typed events, explicit timestamps and session ids, before_send. None when
        before_send drops the event."""
        validate.check_distinct_id(distinct_id, "distinct_id")
        kind, wired = event_wire(event, properties)
        validate.check_kind(kind)
        if session_id is None:
            session_id = self.session_id
        else:
            validate.check_session_id(session_id)
        if timestamp is None:
            seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        else:
            seconds, nanos = validate.timestamp_parts(timestamp, "timestamp")
        event_id = ids.uuid7(seconds * 1000 + nanos // 1_000_000)
        if self.before_send is not None:
            plain = {k: v[1] for k, v in wired.items()}
            occur = pb.datetime_from_parts(seconds, nanos)
            hooked = self._before_send(
                TrackedEvent(event_id, kind, distinct_id, session_id, occur, plain)
            )
            if hooked is None:
                return None
            kind, distinct_id = hooked.kind, hooked.distinct_id
            event_id, session_id = hooked.event_id, hooked.session_id
            if hooked.occur_time != occur:
                seconds, nanos = validate.timestamp_parts(hooked.occur_time, "occur_time")
            wired = _keep_variants(wired, hooked.properties)
        return self.encoder.encode(event_id, seconds, nanos, distinct_id, kind, session_id, wired)

    def _before_send(self, tracked: TrackedEvent) -> TrackedEvent | None:
        """Run the hook; what it returns is checked like a caller's input."""
        assert self.before_send is not None
        try:
            result = self.before_send(tracked)
        except Exception:
            logger.exception("before_send raised; the event was dropped")
            self.queue.count_invalid()
            return None
        if result is None:
            return None
        validate.check_hooked(
            result.distinct_id, result.kind, result.event_id, result.session_id,
            result.occur_time,
        )  # fmt: skip
        return result

    # ---- identify, resend -------------------------------------------------------------

    def identify(
        self,
        external_id: str,
        traits_given: Mapping[Any, Any] | None,
        anonymous_id: str | None,
        device_id: str | None,
    ) -> concurrent.futures.Future[bool]:
        """Queue an identify; the future says whether it was delivered (never raises)."""
        failed: concurrent.futures.Future[bool] = concurrent.futures.Future()
        try:
            if self.queue.closed:
                logger.warning("identify() after close(); it was dropped")
                failed.set_result(False)
                return failed
            validate.check_identify(external_id, traits_given, anonymous_id, device_id)
            body = pb.identify(
                external_id=external_id,
                traits=traits(traits_given) if traits_given is not None else None,
                anonymous_id=anonymous_id,
                device_id=device_id,
            )
            validate.check_identify_size(len(body))
        except PugValidationError as exc:
            self._reject(exc, what="identify")
            failed.set_result(False)
            return failed
        except Exception:
            logger.exception("identify() failed unexpectedly; it was dropped")
            failed.set_result(False)
            return failed
        item = QueuedIdentify(body)
        self._put(item)
        return item.done

    def resend(self, items: Iterable[Undelivered]) -> None:
        """Queue dead letters again, unchanged (same ids and times: the server keeps one)."""
        for item in items:
            self._put(QueuedIdentify(item.queued) if item.is_identify else item.queued)

    def _put(self, item: Item) -> None:
        outcome = self.queue.put(item)
        if outcome or self._worker is None:
            self._after_put(outcome)

    def _after_put(self, outcome: int) -> None:
        """What a put asks of the worker (or of the caller, if the client is closed)."""
        if outcome == REFUSED:  # close() won the race since the caller checked
            logger.warning("track() after close(); the event was dropped")
            return
        worker = self._worker or self._start_worker()
        if worker is not None:
            worker.wake()

    def _reject(self, exc: PugValidationError, what: str = "event") -> None:
        self.queue.count_invalid()
        if self.strict:
            raise exc
        # The message, not the exception: its traceback holds the caller's frames (and the
        # input in them, however large) for as long as a handler keeps the record.
        logger.warning("invalid %s dropped: %s", what, str(exc))

    # ---- the worker -----------------------------------------------------------------

    def worker_for_reads(self) -> Worker:
        """The worker whose loop runs reads (started if needed); raises once closed."""
        if self.queue.closed:
            raise PugError("failed_precondition", "the client is closed")
        worker = self._worker or self._start_worker()
        if worker is None:
            if self.queue.closed:
                raise PugError("failed_precondition", "the client is closed")
            raise PugError("unavailable", "the client's worker thread could not start")
        return worker

    def _start_worker(self) -> Worker | None:
        """The worker, started if there is none yet (None once the client is closed).

        It is made under the lock, so callers racing here start exactly one, and its thread
        is started outside it, with nothing waiting for the thread: under gevent, starting
        or waiting for a thread may switch to another greenlet, which may take this lock."""
        with self._worker_lock:
            worker = self._worker
            if worker is not None or self.queue.closed:
                return worker
            worker = self._worker = Worker(
                self.queue,
                self.transport,
                retry=self.retry,
                timeout=self.timeout,
                on_error=self.on_error,
                on_failed=self._forget_worker,
            )
        try:
            worker.start()
        except Exception:  # e.g. "can't start new thread": the next call tries again
            logger.exception("could not start the pug worker thread")
            self._forget_worker(worker)
            return None
        lifecycle.hold_while_running(self)
        return worker

    def _forget_worker(self, worker: Worker) -> None:
        """A worker that did not start (its thread, or its loop in that thread): the next
        item starts another."""
        with self._worker_lock:
            if self._worker is worker:
                self._worker = None

    # ---- flush, close, stats, fork --------------------------------------------------

    def flush_future(self) -> concurrent.futures.Future[bool]:
        """Resolves True once everything queued before the call is sent or failed."""
        done = self.queue.flush_waiter()
        worker = self._worker
        if worker is not None and not done.done():
            worker.wake()
        return done

    def flush(self, timeout: float | None) -> bool:
        try:
            return lifecycle.wait_for(self.flush_future(), timeout)
        except concurrent.futures.TimeoutError:
            logger.warning("flush() timed out after %ss with events still queued", timeout)
            return False

    def close(self, timeout: float | None) -> None:
        """Send what is queued (one attempt, within `timeout`), dead-letter the rest."""
        with self._worker_lock:  # no worker starts once the queue is closed
            if not self.queue.close():
                return
            worker = self._worker
        if worker is not None:
            worker.stop(timeout)
        if self._spooled is not None:
            self._spooled.release()
        lifecycle.discard_live(self)

    def stats(self) -> Stats:
        return self.queue.stats()

    def after_fork_in_child(self) -> None:
        """The child starts empty: the parent's queue is the parent's to send."""
        if self._worker is not None:  # its loop's selector is shared with the parent
            INHERITED_FROM_PARENT.append(self._worker)
        if self._spooled is not None:  # the parent's files stay the parent's
            self._spooled.abandon_after_fork()
        self._start_empty()
        self.encoder.after_fork_in_child(ids.uuid7(time.time_ns() // 1_000_000))
        self.transport.reset_after_fork()


def _merged(
    added: AddedProperties, event: PugEvent | str, properties: Mapping[Any, Any] | None
) -> dict[Any, Any]:
    """The properties added under an event's own, but for the fields of its typed event
    (the kind string's, if it names one)."""
    if isinstance(event, PugEvent):
        cls: type[PugEvent] | None = type(event)
    else:
        cls = event_class(event) if type(event) is str else None
    fields = _field_names(cls) if cls is not None else {}
    merged = {k: v for k, v in added.plain.items() if k not in fields}
    if properties:
        merged.update(properties)
    return merged


def _kind_of(event: object) -> str:
    kind = event if type(event) is str else getattr(event, "KIND", None)
    return kind if type(kind) is str else f"<{type(event).__name__}>"


def _keep_variants(wired: WireProperties, hooked: dict[str, Any]) -> WireProperties:
    """The properties before_send returned, keeping the declared variant of values it
    left alone (a double stays one)."""
    out: WireProperties = {}
    for key, value in hooked.items():
        before = wired.get(key)
        if before is not None and before[1] is value:
            out[key] = before
        else:
            out.update(custom_properties({key: value}))
    return out
