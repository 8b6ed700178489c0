"""The worker: one thread per client running an asyncio loop, which takes requests from
the queue, sends them through the transport, retries transient failures with backoff,
finds the events a server refuses by halving the batch, and finishes every item in the
queue (sent, or failed and handed to `on_error`). It uses only the queue's public methods.

The same loop runs the client's reads (`pug.reads` submits coroutines to it).
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import contextlib
import logging
import selectors
import threading
import time
from collections.abc import Callable, Mapping

# Imported now, not when the first lookup needs it: at exit the import itself fails.
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from pug._ingest.lifecycle import gevent_monkey
from pug._ingest.queue import IngestQueue, Item, QueuedIdentify
from pug._wire.protobuf import parse_batch_response
from pug.config import RetryPolicy
from pug.errors import PugError
from pug.transports.base import BATCH_CREATE, IDENTIFY, Transport
from pug.undelivered import Undelivered

logger = logging.getLogger("pug")

OnError = Callable[[PugError, list[Undelivered]], None]

# How long close() waits past its timeout for the worker to hand what is left to on_error.
_CLOSE_SLACK = 0.4


def undelivered(items: list[Item]) -> list[Undelivered]:
    """Queued items as `on_error` gets them: wrapped, not decoded (see pug.undelivered)."""
    return [
        Undelivered(i) if isinstance(i, bytes) else Undelivered(i.body, is_identify=True)
        for i in items
    ]


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


class Worker:
    """One daemon thread with its own asyncio loop; owns the transport's connections.

    Made (with its loop) by the core's `_start_worker` under its lock, then started outside
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

    def __init__(
        self,
        queue: IngestQueue,
        transport: Transport,
        *,
        retry: RetryPolicy,
        timeout: float,
        on_error: OnError | None,
    ) -> None:
        self.queue = queue
        self.transport = transport
        self.retry = retry
        self.timeout = timeout  # of one attempt
        self.on_error = on_error
        self._monkey = gevent_monkey()
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
        """Start the thread (the caller holds no lock: see the core's `_start_worker`)."""
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
        reserve = 0.0 if timeout is None else min(timeout / 4, len(self.queue) * 2e-6)

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
        task = asyncio.ensure_future(self.transport.unary(method, body, timeout=timeout))
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
        queue = self.queue
        try:
            while not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), queue.next_wake(time.monotonic()))
                self._wake.clear()
                self._drain_overflow()
                await self._send(force=False)
            self._drain_overflow()
            await self._send(force=True)
        finally:
            try:
                await self.transport.aclose()
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
                # close() ran out of time: everything still queued goes to on_error at once.
                error = PugError("deadline_exceeded", "close() timed out before delivery")
                self._fail(self.queue.take_all(), error)
                return
            taken = self.queue.take(force)
            if taken is None:
                return
            await self._deliver(IDENTIFY if taken.identify else BATCH_CREATE, taken.items)

    async def _deliver(self, method: str, items: list[Item]) -> None:
        if method == BATCH_CREATE:
            body = b"".join(cast("list[bytes]", items))  # a run of framed events
        else:
            (identify,) = items
            assert type(identify) is QueuedIdentify
            body = identify.body
        attempt = 0
        while True:
            left = self._time_left()
            if left is not None and left <= 0:
                error = PugError("deadline_exceeded", "close() timed out before delivery")
                self._fail(items, error)
                return
            timeout = self.timeout if left is None else min(self.timeout, left)
            try:
                response = await self._attempt(method, body, timeout)
            except PugError as exc:
                error = exc
            except Exception as exc:  # a transport bug must not kill the worker
                logger.exception("the transport raised a non-PugError")
                error = PugError("unknown", f"{type(exc).__name__}: {exc}")
            else:
                try:
                    self._on_response(method, items, response)
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
            if self.retry.is_permanent(error.code) or self._stopping:
                self._fail(items, error)
                return
            delay = self.retry.wait_before_retry(attempt, error.retry_after)
            attempt += 1
            self.queue.count_retry()
            logger.warning(
                "sending %d item(s) failed (%s); retry %d in %.2fs",
                len(items), error, attempt, delay,
            )  # fmt: skip
            await self._backoff(delay)
            self._drain_overflow()

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
            self._drain_overflow()

    # ---- finishing items in the queue ---------------------------------------------

    def _on_response(self, method: str, items: list[Item], response: bytes) -> None:
        """Finish a delivered request's items. Raises PugError (transient) for an answer
        that is not what the server sends: the items are then retried (same ids)."""
        if method != BATCH_CREATE:
            self.queue.finish(items, sent=True)
            return
        try:
            accepted, dropped, reasons = parse_batch_response(response)
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
        self.queue.finish(items, sent=True, dropped=dropped, reasons=reasons)

    def _fail(self, items: list[Item], error: PugError, *, already_counted: bool = False) -> None:
        """Finish items that will not be delivered; on_error gets them before anyone
        waiting on flush() or identify() is released."""
        self.queue.finish(
            items,
            sent=False,
            already_counted=already_counted,
            before_release=lambda: self._dead_letter(error, items),
        )

    def _dead_letter(self, error: PugError, items: list[Item]) -> None:
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
        """Hand what a full queue dropped to on_error (counted when it was dropped)."""
        items, lost = self.queue.take_overflow()
        if not items and not lost:
            return
        logger.warning("queue full: %d oldest item(s) dropped", len(items) + lost)
        if lost:
            logger.warning(
                "%d of them were not handed to on_error: they came faster than it took them",
                lost,
            )
        self._fail(items, PugError("resource_exhausted", "queue full"), already_counted=True)


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
