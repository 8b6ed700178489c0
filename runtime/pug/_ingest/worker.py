"""The worker: one thread per client running an asyncio loop, which takes requests from
the queue, sends them through the transport, retries transient failures with backoff,
finds the events a server refuses by halving the batch, and finishes every item in the
queue (sent, or failed and handed to `on_error`). It uses only the queue's public methods.

The same loop runs the client's reads (`pug.reads` submits coroutines to it).

asyncio is imported by the worker's thread, when it makes its loop, and by the methods that
run on that loop: the caller's first `track()` (which starts the thread) neither imports it
(~30 ms) nor waits for it.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

# Imported now, not when the worker's thread needs it: at exit the import itself fails.
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from pug._ingest.lifecycle import gevent_monkey
from pug._ingest.queue import IngestQueue, Item, QueuedIdentify
from pug._wire.protobuf import parse_batch_response
from pug.config import RetryPolicy
from pug.errors import PugError
from pug.transports.base import BATCH_CREATE, IDENTIFY, Transport
from pug.undelivered import Undelivered

if TYPE_CHECKING:
    import asyncio

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


class Worker:
    """One daemon thread with its own asyncio loop; owns the transport's connections.

    Made by the core's `_start_worker` under its lock, then started outside it; nobody
    waits for the thread to run. The thread imports asyncio and makes the loop; what is
    asked of the loop before it exists (a wake, a stop) is kept and runs first, in order.

    Under gevent (`threading` monkey-patched, as in gunicorn's gevent workers) the thread is
    a real OS thread all the same, not a greenlet: asyncio's running loop is per OS thread,
    so a loop running in a greenlet would be the running loop of every greenlet of that
    thread, and `asyncio.run()` in a request handler would refuse to start. The loop's
    selector is then gevent's, made in that thread: what is gevent-patched there (the
    default executor's threads, DNS) is served by that thread's own hub while the loop
    waits, never by the hub of the thread that made the worker.
    """

    def __init__(
        self,
        queue: IngestQueue,
        transport: Transport,
        *,
        retry: RetryPolicy,
        timeout: float,
        on_error: OnError | None,
        on_failed: Callable[[Worker], None],
    ) -> None:
        self.queue = queue
        self.transport = transport
        self.retry = retry
        self.timeout = timeout  # of one attempt
        self.on_error = on_error
        self._on_failed = on_failed  # the core forgets this worker
        self._monkey = gevent_monkey()
        # A bare thread (no threading.Thread): starting it does not wait for it to run.
        self._start_new_thread: Callable[..., Any] = _thread.start_new_thread
        allocate_lock: Callable[[], Any] = _thread.allocate_lock
        if self._monkey is not None:  # real locks: the thread is a real OS thread
            self._start_new_thread = self._monkey.get_original("_thread", "start_new_thread")
            allocate_lock = self._monkey.get_original("_thread", "allocate_lock")
        self.thread: threading.Thread | None = None  # set by the thread itself
        self.loop: asyncio.AbstractEventLoop  # made by the thread (_make_loop)
        self._wake: asyncio.Event
        # What other threads see of the loop: None until it is made (`_early` holds what
        # they ask of it meanwhile); `failed` if it could not be.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._early: list[Callable[[], object]] = []
        self._failed = False
        self._calls = allocate_lock()  # guards _loop, _early, _failed
        self._booted = allocate_lock()  # held until the loop is made (or could not be)
        self._booted.acquire()
        self._stopping = False
        self._close_deadline: float | None = None
        self._inflight: asyncio.Timeout | None = None
        # Held until _run ends: what stop() waits on, also before the thread has started.
        self._ended = allocate_lock()
        self._ended.acquire()

    def start(self) -> None:
        """Start the thread (the caller holds no lock: see the core's `_start_worker`)."""
        _BOOTING.add(self)
        try:
            self._start_new_thread(self._run, ())
        except BaseException:
            _BOOTING.discard(self)
            raise

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the loop, from any thread; before the loop is made, as soon as
        it is. Raises RuntimeError once the loop is closed (or could not be made)."""
        with self._calls:
            if self._failed:
                raise RuntimeError("the pug worker could not start")
            loop = self._loop
            if loop is None:
                self._early.append(callback)
                return
        loop.call_soon_threadsafe(callback)

    def ready_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, once the thread has made it (a read waits that long: its import of
        asyncio). Raises PugError if it could not be made."""
        self._wait_booted(None)
        if self._loop is None:
            raise PugError("unavailable", "the client's worker thread could not start")
        return self._loop

    def _wait_booted(self, timeout: float | None) -> None:
        if self._booted.acquire(timeout=-1 if timeout is None else timeout):
            self._booted.release()

    def wake(self) -> None:
        # A closed loop raises RuntimeError: the client was closed meanwhile.
        with contextlib.suppress(RuntimeError):
            self.call_soon_threadsafe(self._set_wake)

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
            self.call_soon_threadsafe(begin)
        except RuntimeError:
            return
        if threading.current_thread() is not self.thread:
            # What is left at the deadline goes to on_error at once (no decoding, no I/O):
            # the slack covers handing over a large backlog, so close() returns within
            # its timeout + 0.5 s with on_error done.
            if self._join(None if deadline is None else deadline + _CLOSE_SLACK - time.monotonic()):
                return
            # The worker is late (a CPU starved of time; a transport that ignored the
            # cancel): what it has not taken yet goes to on_error from here, so close()
            # still returns with it handed over.
            error = PugError("deadline_exceeded", "close() timed out before delivery")
            self._fail(self.queue.take_all(), error)

    def _join(self, timeout: float | None) -> bool:
        """Wait (at most `timeout`) for the thread to end: whether it did. A plain lock, not
        Thread.join: the thread may not have started yet, and under gevent it is not a
        Thread (a greenlet calling close() then blocks its OS thread, for at most `timeout`)."""
        if self._ended.acquire(timeout=-1 if timeout is None else timeout):
            self._ended.release()
            return True
        return False

    def _cancel_inflight(self) -> None:
        if self._inflight is not None and not self._inflight.expired():
            self._inflight.reschedule(self.loop.time())

    async def _attempt(self, method: str, body: bytes, timeout: float) -> bytes:
        """One request, cut off if close()'s deadline passes meanwhile. In this task, not
        one of its own: a task is two more turns of the loop a request, and each turn lets
        go of the GIL, which a busy caller then holds up to sys.getswitchinterval() (5 ms)."""
        import asyncio

        cutoff = asyncio.timeout(None)  # rescheduled by _cancel_inflight at the deadline
        try:
            async with cutoff:
                self._inflight = cutoff
                return await self.transport.unary(method, body, timeout=timeout)
        except TimeoutError:
            if cutoff.expired():
                raise PugError("deadline_exceeded", "close() timed out during delivery") from None
            raise
        finally:
            self._inflight = None

    def _run(self) -> None:
        try:
            self.thread = threading.current_thread()
            self.thread.name = "pug-worker"
            try:
                self._make_loop()
            except BaseException:
                self._could_not_start()
                return
            try:
                self.loop.run_until_complete(self._main())
            finally:
                _cancel_leftovers(self.loop)
                if self._monkey is not None:
                    # The default executor's threads are then greenlets of this thread's
                    # hub, which runs only while this loop waits: end them now.
                    self.loop.run_until_complete(self.loop.shutdown_default_executor())
                self.loop.close()
        finally:
            self._ended.release()

    def _make_loop(self) -> None:
        """In the worker's thread: import asyncio, make the loop, then run on it what was
        asked of it before (in order), and let other threads use it directly."""
        try:
            import asyncio

            if self._monkey is None:
                loop = asyncio.new_event_loop()
            else:  # gevent's selector, on this thread's hub (see the class's docstring)
                import selectors

                loop = asyncio.SelectorEventLoop(selectors.DefaultSelector())
            self.loop = loop
            asyncio.set_event_loop(loop)
            loop.set_default_executor(_ResolverPool())
            self._wake = asyncio.Event()
            with self._calls:
                for callback in self._early:
                    loop.call_soon(callback)
                self._early.clear()
                self._loop = loop
        finally:
            self._booted.release()
            _BOOTING.discard(self)

    def _could_not_start(self) -> None:
        """The loop could not be made: what is queued goes to on_error, and the core
        forgets this worker first (what comes next starts another)."""
        logger.exception("the pug worker thread could not start")
        with self._calls:
            self._failed = True
            self._early.clear()
        self._on_failed(self)
        error = PugError("unavailable", "the client's worker thread could not start")
        self._fail(self.queue.take_all(), error)

    async def _main(self) -> None:
        import asyncio

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
        import asyncio

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
    import asyncio

    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


# Workers whose thread is importing asyncio and making its loop. A fork waits (a little) for
# them: a module's import lock held by a thread that the child does not have would stay
# held there, and the child's own worker would wait for it forever.
_BOOTING: set[Worker] = set()
_FORK_WAIT = 2.0


def _before_fork() -> None:
    deadline = time.monotonic() + _FORK_WAIT
    for worker in list(_BOOTING):
        worker._wait_booted(max(0.0, deadline - time.monotonic()))


# (The child has none of those threads: its workers are its own.)
os.register_at_fork(before=_before_fork, after_in_child=_BOOTING.clear)
