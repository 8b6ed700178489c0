"""The process around the clients: which are live, what a forked child resets, and
how every live client is closed at exit (atexit, multiprocessing's and billiard's
finalizers, Celery's prefork children), plus what gevent changes for waiting.

A client registers here when it is made (`add_live`); this module calls back only its
`close(timeout)`, `after_fork_in_child()` and `exit_timeout` (the `LiveClient` protocol),
never its internals.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import sys
import time
import weakref
from typing import Any, Protocol, TypeVar

logger = logging.getLogger("pug")
T = TypeVar("T")


class LiveClient(Protocol):
    """What lifecycle asks of a client (the ingestion core)."""

    @property
    def exit_timeout(self) -> float: ...
    def close(self, timeout: float | None) -> None: ...
    def after_fork_in_child(self) -> None: ...


# ---- gevent --------------------------------------------------------------------------


def gevent_monkey() -> Any:
    """gevent's `monkey` module if it has patched `threading` (a Thread is then a greenlet)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey
    return None


def wait_for(future: concurrent.futures.Future[T], timeout: float | None) -> T:
    """`future.result(timeout)` for a future the worker thread resolves. Under gevent the
    wait is made in short slices: before gevent 26.8 a greenlet waiting on a lock that
    another OS thread releases is never woken."""
    if gevent_monkey() is None:
        return future.result(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
        try:
            return future.result(max(left, 0.0))
        except concurrent.futures.TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise


# ---- live clients, fork and exit ---------------------------------------------------------

# Every open client, for fork and exit handling; weak so clients can be collected.
_LIVE: weakref.WeakSet[LiveClient] = weakref.WeakSet()


def add_live(client: LiveClient) -> None:
    _LIVE.add(client)
    _hook_child_exits()


# A client whose worker thread runs is also held strongly, as that thread would hold it:
# one dropped without close() (made in a function, a child's target) still sends what it
# queued at exit. Until close(), or a fork (the child has no worker thread).
_RUNNING: set[LiveClient] = set()


def hold_while_running(client: LiveClient) -> None:
    _RUNNING.add(client)


def discard_live(client: LiveClient) -> None:
    """A closed client: nothing left to do for it at exit or fork."""
    _LIVE.discard(client)
    _RUNNING.discard(client)


def _after_fork_in_child() -> None:
    _RUNNING.clear()
    for client in list(_LIVE):
        client.after_fork_in_child()
    _hook_child_exits()


def _at_exit() -> None:
    for client in list(_LIVE):
        try:
            client.close(client.exit_timeout)
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
# start empty (after_fork_in_child), so a child sends only what it tracked itself.

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
