"""Child processes that end with `os._exit` deliver what they tracked, with no code of the user's.

`multiprocessing` fork and forkserver children and Celery's prefork pool children never run
`atexit`: they end with `os._exit`. The SDK closes its clients in the exit handling those
processes do run (multiprocessing's finalizers; Celery's `worker_process_shutdown`). Each test
runs real processes against a real Connect server on 127.0.0.1 and counts by event id; the
clients wait `max_wait=60` s, so nothing is sent unless the way the process ends sends it.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from accounting import delivered_ns
from child_processes import EXIT_TIMEOUT, CeleryWorker, process_group, program_env
from servers import ConnectServer, FakePug


@pytest.fixture
def env(server: ConnectServer, tmp_path: Path) -> dict[str, str]:
    return program_env(server.url, tmp_path)


def run_program(source: str, tmp_path: Path, env: dict[str, str]) -> tuple[str, float]:
    """Run `source` as a script to its end (bounded); return its stdout and duration."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(source))
    start = time.monotonic()
    with process_group(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the program did not end within 60 s")
    elapsed = time.monotonic() - start
    assert process.returncode == 0, err
    return out, elapsed


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)


# ---- multiprocessing ---------------------------------------------------------------------

CHILDREN, PER_CHILD, IN_PARENT = 4, 10, 5


def child_ns() -> list[int]:
    return [1000 * (i + 1) + j for i in range(CHILDREN) for j in range(PER_CHILD)]


def test_multiprocessing_fork_children_deliver_at_their_exit(
    fake: FakePug, tmp_path: Path, env: dict[str, str]
) -> None:
    """The client is made in the parent; the parent has events queued when it forks, which
    the children must not send (their queue starts empty), and the parent sends at exit."""
    out, elapsed = run_program(
        f"""
        import multiprocessing, os, time
        from pug_test_client import make_client

        pug = make_client()

        def child(index):
            for j in range({PER_CHILD}):
                pug.track(f"child_{{index}}", "job.finished", {{"n": 1000 * (index + 1) + j}})
            os.write(1, f"tracked {{pug.stats().enqueued}}\\n".encode())  # one write: whole lines

        if __name__ == "__main__":
            for n in range({IN_PARENT}):
                pug.track("parent", "job.finished", {{"n": n}})
            ctx = multiprocessing.get_context("fork")
            children = [ctx.Process(target=child, args=(i,)) for i in range({CHILDREN})]
            start = time.monotonic()
            for process in children:
                process.start()
            for process in children:
                process.join()
            print("children", [p.exitcode for p in children], time.monotonic() - start)
        """,
        tmp_path,
        env,
    )
    lines = out.splitlines()
    assert lines.count(f"tracked {PER_CHILD}") == CHILDREN, out
    exitcodes, children_took = lines[-1].removeprefix("children ").rsplit(" ", 1)
    assert exitcodes == str([0] * CHILDREN)
    assert float(children_took) < EXIT_TIMEOUT  # the children sent at once, not at a deadline
    assert delivered_ns(fake) == sorted([*range(IN_PARENT), *child_ns()])
    assert elapsed < EXIT_TIMEOUT + 10


@pytest.mark.parametrize("made", ["at import", "in the target"])
def test_multiprocessing_forkserver_children_deliver_at_their_exit(
    made: str, fake: FakePug, tmp_path: Path, env: dict[str, str]
) -> None:
    """Each child makes its own client: while it imports the target's module (before
    multiprocessing's bootstrap, which clears the finalizers), or in the target."""
    (tmp_path / "forkserver_child.py").write_text(
        textwrap.dedent(
            f"""
            import os

            from pug_test_client import make_client

            pug = make_client() if {made == "at import"} else None

            def child(index):
                client = pug or make_client()
                for j in range({PER_CHILD}):
                    n = 1000 * (index + 1) + j
                    client.track(f"child_{{index}}", "job.finished", {{"n": n}})
                os.write(1, f"tracked {{client.stats().enqueued}}\\n".encode())
            """
        )
    )
    out, elapsed = run_program(
        f"""
        import importlib, multiprocessing

        if __name__ == "__main__":
            # Imported here, not at the top: the forkserver imports this script (its
            # preload) but not the module, so each child imports it itself.
            child = importlib.import_module("forkserver_child").child
            ctx = multiprocessing.get_context("forkserver")
            children = [ctx.Process(target=child, args=(i,)) for i in range({CHILDREN})]
            for process in children:
                process.start()
            for process in children:
                process.join()
            print("children", [p.exitcode for p in children])
        """,
        tmp_path,
        env,
    )
    lines = out.splitlines()
    assert lines.count(f"tracked {PER_CHILD}") == CHILDREN, out
    assert lines[-1] == f"children {[0] * CHILDREN}"
    assert delivered_ns(fake) == child_ns()
    assert elapsed < EXIT_TIMEOUT + 10


# ---- Celery prefork ----------------------------------------------------------------------

TASKS = """
pug = make_client()  # at import, in the worker's main process: the children are forked


@app.task(name="tasks.work")
def work(n):
    pug.track("celery_user", "job.finished", {"n": n})
    (HERE / "done" / f"{n}.{os.getpid()}").touch()  # for the test: which child ran it
"""


@pytest.fixture
def celery_worker(tmp_path: Path, env: dict[str, str]) -> CeleryWorker:
    return CeleryWorker(tmp_path, env, TASKS)


def test_celery_children_recycled_by_max_tasks_per_child_deliver(
    celery_worker: CeleryWorker, fake: FakePug
) -> None:
    max_tasks, count = 5, 25
    celery_worker.send(count)
    with celery_worker.running("--max-tasks-per-child", str(max_tasks)) as worker:
        wait_until(lambda: len(celery_worker.done()) == count, 30, f"{count} tasks run")
        by_child = collections.defaultdict(list)
        for n, pid in celery_worker.done().items():
            by_child[pid].append(n)
        # A child that ran max_tasks has been recycled; the rest still run. At least
        # (25 - 2·4) / 5 = 4 children were recycled, whatever the tasks' order.
        recycled = sorted(n for ns in by_child.values() if len(ns) == max_tasks for n in ns)
        assert len(recycled) >= count - 2 * (max_tasks - 1)
        wait_until(
            lambda: set(recycled) <= set(delivered_ns(fake)),
            EXIT_TIMEOUT + 5,
            "the recycled children's events delivered",
        )
        assert delivered_ns(fake) == recycled  # and nothing else: the others still run
        celery_worker.warm_shutdown(worker)
    assert delivered_ns(fake) == list(range(count))


def test_celery_warm_shutdown_delivers_the_childrens_events(
    celery_worker: CeleryWorker, fake: FakePug
) -> None:
    count = 20
    celery_worker.send(count)
    with celery_worker.running() as worker:
        wait_until(lambda: len(celery_worker.done()) == count, 30, f"{count} tasks run")
        assert delivered_ns(fake) == []  # max_wait is 60 s: still queued in the children
        celery_worker.warm_shutdown(worker)
    assert delivered_ns(fake) == list(range(count))
