"""How the background worker starts: once per client, without waiting, also under gevent.

`track()` makes the worker under the client's lock and starts its thread outside it, with
nothing waiting for the thread. Under gevent (threading monkey-patched after the client was
made, as in gunicorn's `--preload -k gevent`) the worker is still a real OS thread, so the
client's asyncio loop is not the running loop of the request handlers' greenlets.
"""

from __future__ import annotations

import _thread
import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pug import BatchConfig, Pug
from pug.testing import InMemoryTransport
from servers import ConnectServer


class CountingStarts:
    """Stands in for `_thread.start_new_thread`: counts worker threads started (and can
    refuse the first one, as the interpreter does when it cannot start a thread)."""

    def __init__(self, refuse_first: bool = False) -> None:
        self.started = 0
        self.refused = 0
        self._refuse = refuse_first
        self._lock = threading.Lock()

    def __call__(self, function: Callable[..., object], args: tuple[object, ...]) -> int:
        with self._lock:
            if self._refuse and not self.refused:
                self.refused += 1
                raise RuntimeError("can't start new thread")
            self.started += 1
        return REAL_START(function, args)


REAL_START = _thread.start_new_thread


def test_racing_first_tracks_start_exactly_one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = 8
    for _ in range(20):  # the race is in the first track() of each client
        starts = CountingStarts()
        monkeypatch.setattr(_thread, "start_new_thread", starts)
        transport = InMemoryTransport()
        pug = Pug(api_key="prv_test", transport=transport, batch=BatchConfig(max_wait=60.0))
        start = threading.Barrier(threads)

        def first_track(n: int, pug: Pug = pug, start: threading.Barrier = start) -> None:
            start.wait(5)
            pug.track("user_1", "start.race", {"n": n})

        racers = [threading.Thread(target=first_track, args=(n,)) for n in range(threads)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(5)
        assert pug.flush(5)
        pug.close(5)
        assert starts.started == 1
        ns = [e.custom_properties["n"].int_value for e in transport.events()]
        assert sorted(ns) == list(range(threads))


def test_a_worker_that_cannot_start_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    transport = InMemoryTransport()
    pug = Pug(api_key="prv_test", transport=transport, batch=BatchConfig(max_wait=60.0))
    starts = CountingStarts(refuse_first=True)
    monkeypatch.setattr(_thread, "start_new_thread", starts)
    with caplog.at_level(logging.ERROR, logger="pug"):
        pug.track("user_1", "start.retry", {"n": 0})  # no worker: logged, the event stays queued
    assert "could not start the pug worker thread" in caplog.text
    pug.track("user_1", "start.retry", {"n": 1})  # starts it
    assert pug.flush(5)
    pug.close(5)
    assert (starts.refused, starts.started) == (1, 1)
    assert [e.custom_properties["n"].int_value for e in transport.events()] == [0, 1]


GEVENT_PROGRAM = """
import asyncio, json, sys, time
from pug import BatchConfig, Pug

# Made before gevent patches threading (gunicorn --preload -k gevent): its lock is a real one.
pug = Pug(api_key="prv_gevent", base_url=sys.argv[1],
          batch=BatchConfig(max_wait=60.0, exit_timeout=5.0))

from gevent import monkey
monkey.patch_all()
import gevent

report = {}

def handler(n):
    pug.track("user_gevent", "request.served", {"n": n})
    gevent.sleep(0)  # let the other handlers in

handlers = [gevent.spawn(handler, n) for n in range(50)]
report["handled"] = sum(1 for g in gevent.joinall(handlers, timeout=10) if g.successful())

# While the client's loop runs, a greenlet must still be able to run one of its own.
report["asyncio_run"] = gevent.spawn(asyncio.run, asyncio.sleep(0, result="ran")).get(timeout=5)
report["flushed"] = gevent.spawn(pug.flush).get(timeout=10)  # no timeout of its own
for n in range(50, 60):
    pug.track("user_gevent", "request.served", {"n": n})
start = time.monotonic()
gevent.spawn(pug.close, 5.0).get(timeout=15)
report["close_took"] = time.monotonic() - start
print(json.dumps(report))
"""


def test_under_gevent_greenlets_track_flush_and_close_with_a_host_name_url(
    server: ConnectServer, tmp_path: Path
) -> None:
    """The client is made before gevent's monkey-patching; the base URL is a host name, so
    the worker resolves it (asyncio's default executor) under gevent too."""
    server.fake.reset()
    url = server.url.replace("127.0.0.1", "localhost")
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(GEVENT_PROGRAM))
    process = subprocess.Popen(
        [sys.executable, str(script), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the gevent program hung")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    assert process.returncode == 0, err
    report = json.loads(out)
    assert report["handled"] == 50
    assert report["asyncio_run"] == "ran"
    assert report["flushed"] is True
    assert report["close_took"] < 5.0
    events = server.fake.delivered_events()
    assert max(collections.Counter(e.event_id for e in events).values()) == 1
    assert sorted(e.custom_properties["n"].int_value for e in events) == list(range(60))


class HeldStarts:
    """Stands in for `_thread.start_new_thread`: keeps the worker's start until `release`,
    as a thread that is slow to begin (importing asyncio) would be."""

    def __init__(self) -> None:
        self.held: list[tuple[Callable[..., object], tuple[object, ...]]] = []

    def __call__(self, function: Callable[..., object], args: tuple[object, ...]) -> int:
        self.held.append((function, args))
        return 0

    def release(self) -> None:
        for function, args in self.held:
            REAL_START(function, args)


def test_what_is_asked_before_the_worker_runs_is_done_once_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wake (flush) and a stop (close) asked before the worker's thread has made its loop
    are kept, and done in order once it has: everything tracked is delivered."""
    starts = HeldStarts()
    monkeypatch.setattr(_thread, "start_new_thread", starts)
    transport = InMemoryTransport()
    pug = Pug(api_key="prv_test", transport=transport, batch=BatchConfig(max_wait=60.0))
    pug.track("user_1", "early.asked", {"n": 0})
    flushed = pug._core.flush_future()  # a wake, before the loop exists
    pug.track("user_1", "early.asked", {"n": 1})
    closing = threading.Thread(target=pug.close, args=(5,))  # a stop, before it too
    closing.start()
    assert len(starts.held) == 1 and not flushed.done()
    starts.release()
    assert flushed.result(5) is True
    closing.join(5)
    assert not closing.is_alive()
    assert [e.custom_properties["n"].int_value for e in transport.events()] == [0, 1]


def test_a_worker_that_cannot_make_its_loop_hands_its_events_to_on_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop could not be made in the worker's thread: what was queued goes to on_error
    (logged), and the next track() starts another worker, which delivers."""
    import asyncio

    failed: list[int] = []
    made = threading.Event()
    real_new_event_loop = asyncio.new_event_loop

    def new_event_loop_once_refused() -> asyncio.AbstractEventLoop:
        if not made.is_set():
            made.set()
            raise OSError("too many open files")
        return real_new_event_loop()

    monkeypatch.setattr(asyncio, "new_event_loop", new_event_loop_once_refused)
    transport = InMemoryTransport()
    done = threading.Event()

    def on_error(error: object, items: list[object]) -> None:
        failed.append(len(items))
        done.set()

    pug = Pug(
        api_key="prv_test", transport=transport, batch=BatchConfig(max_wait=60.0),
        on_error=on_error,
    )  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="pug"):
        pug.track("user_1", "loop.refused", {"n": 0})
        assert done.wait(5)
    assert failed == [1]
    assert "the pug worker thread could not start" in caplog.text
    pug.track("user_1", "loop.refused", {"n": 1})
    assert pug.flush(5)
    pug.close(5)
    assert [e.custom_properties["n"].int_value for e in transport.events()] == [1]
    assert pug.stats().failed == 1


FORK_PROGRAM = """
import json, os, sys
import pug

client = pug.Pug(api_key="prv_fork", base_url="http://127.0.0.1:9")
client.track("user_1", "fork.early")  # starts the worker's thread, which imports asyncio
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
worker = client._core._worker
print(json.dumps({"loop_made": worker is not None and worker._loop is not None}))
os._exit(0)
"""


def test_a_fork_waits_for_a_worker_still_importing() -> None:
    """A fork right after the first track(): it waits for the worker's thread to finish
    importing asyncio and making its loop, so the child inherits no import lock held by a
    thread it does not have (its own worker would wait on it forever)."""
    result = subprocess.run(
        [sys.executable, "-c", FORK_PROGRAM], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"loop_made": True}
