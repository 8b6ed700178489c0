"""`pug.integrations.celery` with a real Celery worker (prefork pool, a filesystem broker, no
other service) and a real Connect server on 127.0.0.1, counting events by id.

A producer process sends each task inside its own `pug.context`; the task tracks without a
distinct id, and what it tracked must arrive once, for the producer's user and session with
the context's properties, including from a task sent by a task and a task that fails
(`ErrorOccurred`), when the children are recycled and when the worker stops. The worker's
client is made once in its main process, before the children are forked.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

import pytest
from child_processes import EXIT_TIMEOUT, CeleryWorker, program_env
from integrations import session
from servers import ConnectServer, FakePug

TASKS = """
import pug
from pug.integrations.celery import setup

pug_client = make_client()  # in the worker's main process: the children are forked
setup(pug_client, track_exceptions=True)


@app.task(name="tasks.work")
def work(n):
    pug_client.track("job.finished", {"n": n})
    if n % 4 == 0:
        follow_up.delay(n)  # sent from the task: its context goes along
    (HERE / "done" / f"{n}.{os.getpid()}").touch()


@app.task(name="tasks.follow_up")
def follow_up(n):
    pug_client.track("job.followed_up", {"n": n})
    (HERE / "done" / f"{1000 + n}.{os.getpid()}").touch()


@app.task(name="tasks.fail")
def fail(n):
    (HERE / "done" / f"{2000 + n}.{os.getpid()}").touch()
    raise ValueError(f"declined {n}")
"""

WORK, FAILING = 12, 2
PRODUCER = f"""
import uuid

import pug
from tasks import app, fail, work

for n in range({WORK}):
    with pug.context(distinct_id=f"user_{{n}}", session_id=str(uuid.UUID(int=n)),
                     properties={{"plan": "pro", "n_sent": n}}):
        work.delay(n)
for n in range({FAILING}):
    with pug.context(distinct_id=f"user_{{n}}", session_id=str(uuid.UUID(int=n))):
        fail.delay(n)
"""
FOLLOW_UPS = [n for n in range(WORK) if n % 4 == 0]
TASKS_RUN = WORK + len(FOLLOW_UPS) + FAILING


@pytest.fixture
def celery_worker(server: ConnectServer, tmp_path: Path) -> CeleryWorker:
    return CeleryWorker(tmp_path, program_env(server.url, tmp_path), TASKS)


def value(property_value: Any) -> Any:
    return getattr(property_value, property_value.WhichOneof("value"))


def delivered(fake: FakePug) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(kind, distinct id, session id, properties) of each event delivered, after checking
    no event id arrived twice."""
    events = fake.delivered_events()
    counts = collections.Counter(e.event_id for e in events)
    assert [i for i, count in counts.items() if count > 1] == []
    found = [
        (
            e.kind,
            e.distinct_id,
            e.session_id,
            {k: value(v) for k, v in e.custom_properties.items() if k != "stack"},
        )
        for e in events
    ]
    return sorted(found, key=repr)


def expected() -> list[tuple[str, str, str, dict[str, Any]]]:
    context = {"plan": "pro"}
    found = [
        ("job.finished", f"user_{n}", session(n), {**context, "n": n, "n_sent": n})
        for n in range(WORK)
    ]
    found += [
        ("job.followed_up", f"user_{n}", session(n), {**context, "n": n, "n_sent": n})
        for n in FOLLOW_UPS
    ]
    error = {"errorCode": "ValueError", "severity": "error", "unhandled": True}
    found += [
        ("error_occurred", f"user_{n}", session(n), {**error, "message": f"declined {n}"})
        for n in range(FAILING)
    ]
    return sorted(found, key=repr)


def wait_until_run(worker: CeleryWorker, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(worker.done()) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"not within 60 s: {count} tasks run")
        time.sleep(0.05)


def test_the_producers_context_reaches_the_task_and_its_events_arrive_at_shutdown(
    celery_worker: CeleryWorker, fake: FakePug
) -> None:
    celery_worker.produce(PRODUCER)
    with celery_worker.running() as worker:
        wait_until_run(celery_worker, TASKS_RUN)
        assert delivered(fake) == []  # max_wait is 60 s: still queued in the children
        celery_worker.warm_shutdown(worker)
    assert delivered(fake) == expected()


def test_events_arrive_when_the_children_are_recycled(
    celery_worker: CeleryWorker, fake: FakePug
) -> None:
    celery_worker.produce(PRODUCER)
    with celery_worker.running("--max-tasks-per-child", "3") as worker:
        wait_until_run(celery_worker, TASKS_RUN)
        # A child is recycled after 3 tasks: the 2 still running ran at most 2 each.
        deadline = time.monotonic() + EXIT_TIMEOUT + 5
        while len(fake.delivered_events()) < TASKS_RUN - 2 * 2:
            if time.monotonic() > deadline:
                pytest.fail("the recycled children's events were not delivered")
            time.sleep(0.05)
        assert all(event in expected() for event in delivered(fake))
        celery_worker.warm_shutdown(worker)
    assert delivered(fake) == expected()
