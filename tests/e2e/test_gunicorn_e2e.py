"""gunicorn `--preload` with sync and gevent workers: every request's event arrives once.

The Pug client is made at import in the gunicorn master (the module level of the WSGI app),
so every worker inherits it by fork; a gevent worker monkey-patches only after that. Each
request tracks one event with its number `n`; the server (a real Connect server on
127.0.0.1) counts by event id. The client waits `max_wait=60` s, so what a worker still
holds when gunicorn is stopped (SIGTERM to the master, a graceful stop) is delivered only
by the workers' exit. Every wait is bounded: a worker that hangs fails the test by timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from accounting import delivered_ns
from servers import ConnectServer, FakePug

WORKERS = 4
REQUESTS = 40
REQUEST_TIMEOUT = 10.0  # one request; the first track() of a worker imports the catalog
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20

APP = """
import asyncio
import os
import threading

from pug import BatchConfig, Pug

# Made at import, in the gunicorn master (--preload); PUG_BASE_URL is the test's server.
pug = Pug(api_key="prv_gunicorn", batch=BatchConfig(max_wait=60.0, exit_timeout=10.0))
asyncio_run_lock = None


async def double(n):
    await asyncio.sleep(0)
    return 2 * n


def run_alone(coroutine):
    # The running loop is per OS thread: two greenlets inside asyncio.run() at once clash
    # whatever the SDK does, so they take turns (a lock made after gevent's patching).
    global asyncio_run_lock
    if asyncio_run_lock is None:
        asyncio_run_lock = threading.Lock()
    with asyncio_run_lock:
        return asyncio.run(coroutine)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/ping":
        body = "pong"
    elif path == "/flush":
        body = str(pug.flush())  # no timeout of its own: the test's request has one
    else:
        n = int(path.rsplit("/", 1)[-1])
        pug.track("user_gunicorn", "request.served", {"n": n})
        # The client's asyncio loop must not be this thread's running loop (under gevent,
        # the greenlets of a thread share it): asyncio.run must work here.
        doubled = run_alone(double(n))
        body = f"{doubled} {os.getpid()}"
    data = body.encode()
    start_response("200 OK", [("content-type", "text/plain"), ("content-length", str(len(data)))])
    return [data]
"""

CONFIG = """
import os

control_socket_disable = True  # gunicorn >= 27 (older ones ignore it): no file in ~/.gunicorn


def post_worker_init(worker):
    # After the worker set its signal handlers: a SIGTERM sent to a worker sooner is lost.
    open(os.path.join(os.environ["BOOTED_DIR"], str(worker.pid)), "w").close()
"""


@pytest.fixture
def socket_path() -> Iterator[str]:
    # A short directory of its own: a unix socket's path is limited to ~100 bytes.
    with tempfile.TemporaryDirectory(prefix="pug-gunicorn-") as directory:
        yield os.path.join(directory, "gunicorn.sock")


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (gunicorn's `--bind unix:PATH`)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def get(path: str, url_path: str) -> str:
    """GET `url_path` from gunicorn; the body, or a failed test."""
    connection = UnixHTTPConnection(path, REQUEST_TIMEOUT)
    try:
        connection.request("GET", url_path, headers={"connection": "close"})
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200, f"GET {url_path}: {response.status} {body}"
    return body


@contextlib.contextmanager
def gunicorn(
    worker_class: str, socket_path: str, tmp_path: Path, base_url: str
) -> Iterator[subprocess.Popen[str]]:
    """gunicorn serving the app, in a session of its own (killed whole if the test fails)."""
    (tmp_path / "pug_gunicorn_app.py").write_text(APP)
    (tmp_path / "gunicorn_conf.py").write_text(CONFIG)
    (tmp_path / "booted").mkdir()
    args = [
        sys.executable, "-m", "gunicorn", "--config", "gunicorn_conf.py", "--preload",
        "--workers", str(WORKERS), "--worker-class", worker_class,
        "--bind", f"unix:{socket_path}",
        "--graceful-timeout", str(STOP_TIMEOUT), "--timeout", "30",
        "pug_gunicorn_app:app",
    ]  # fmt: skip
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PUG_BASE_URL": base_url,
        "PYTHONPATH": path,
        "BOOTED_DIR": str(tmp_path / "booted"),
    }
    with (tmp_path / "gunicorn.log").open("w") as log:  # a file: a full pipe would block it
        process = subprocess.Popen(
            args,
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        yield process
    except BaseException:
        print((tmp_path / "gunicorn.log").read_text())  # shown with the failure
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def wait_ready(process: subprocess.Popen[str], socket_path: str, booted: Path) -> None:
    """Poll (bounded) until every worker has booted and one answers."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail("gunicorn ended at start")
        if len(list(booted.iterdir())) >= WORKERS:
            try:
                if get(socket_path, "/ping") == "pong":
                    return
            except OSError:  # not listening yet
                pass
        if time.monotonic() > deadline:
            pytest.fail(f"gunicorn's workers did not all answer within {START_TIMEOUT} s")
        time.sleep(0.05)


def track_requests(socket_path: str, ns: range) -> list[str]:
    """One request per n, 8 at a time; the first failure cancels the rest."""
    pool = ThreadPoolExecutor(max_workers=8)
    try:
        return list(pool.map(lambda n: get(socket_path, f"/track/{n}"), ns))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # running ones end with gunicorn


def stop(process: subprocess.Popen[str]) -> tuple[int, float]:
    """A graceful stop: SIGTERM to the master; its exit code and how long it took."""
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        pytest.fail("gunicorn did not stop after SIGTERM")
    return process.returncode, time.monotonic() - start


@pytest.mark.parametrize("worker_class", ["sync", "gevent"])
def test_gunicorn_preload_delivers_every_event_once(
    worker_class: str,
    fake: FakePug,
    server: ConnectServer,
    socket_path: str,
    tmp_path: Path,
) -> None:
    with gunicorn(worker_class, socket_path, tmp_path, server.url) as process:
        wait_ready(process, socket_path, tmp_path / "booted")
        half = REQUESTS // 2
        answers = track_requests(socket_path, range(half))
        # flush() from a request handler (a greenlet under gevent) returns once delivered.
        assert get(socket_path, "/flush") == "True"
        answers += track_requests(socket_path, range(half, REQUESTS))
        held_at_stop = REQUESTS - len(fake.delivered_events())
        returncode, took = stop(process)

    err = (tmp_path / "gunicorn.log").read_text()
    assert returncode == 0, err
    assert "WORKER TIMEOUT" not in err and "Traceback" not in err, err
    assert [int(answer.split()[0]) for answer in answers] == [2 * n for n in range(REQUESTS)]
    # max_wait=60: what the last requests tracked was still queued when gunicorn stopped.
    assert held_at_stop > 0
    assert delivered_ns(fake) == list(range(REQUESTS)), err
    assert took < STOP_TIMEOUT
