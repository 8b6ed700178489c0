"""`pug.integrations.celery` in-process, with tasks run eagerly (`Task.apply`): every task
runs in a context, a context sent in the headers is the task's, and one a foreign publisher
got wrong costs only its properties, with a warning."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pug
import pytest
from celery import Celery
from integrations import client_on_fake, fake_of, session
from pug import Pug
from pug.integrations.celery import HEADER, setup

app = Celery("pug_eager_tests", broker="memory://")
_clients: list[Pug] = []  # the running test's client (tasks are registered once, by name)


@app.task(name="pug_eager_tests.work")
def work(n: int) -> None:
    if n == 2:
        pug.set_context(distinct_id="user_set_in_the_task")
    _clients[-1].track("job.finished", {"n": n})


@app.task(name="pug_eager_tests.fail")
def fail() -> None:
    raise ValueError("declined")


@pytest.fixture
def client() -> Iterator[Pug]:
    made = client_on_fake()
    assert isinstance(made, Pug)
    setup(made, track_exceptions=True)
    _clients.append(made)
    yield made
    _clients.remove(made)
    made.close()


def seen(client: Pug) -> list[tuple[Any, ...]]:
    return [
        (e.kind, e.distinct_id, e.session_id, e.properties.get("n"), e.properties.get("plan"))
        for e in fake_of(client).events()
    ]


def test_a_context_in_the_headers_is_the_tasks(client: Pug) -> None:
    sent = {"distinct_id": "user_1", "session_id": session(1), "properties": {"plan": "pro"}}
    work.apply((1,), headers={HEADER: sent})
    assert seen(client) == [("job.finished", "user_1", session(1), 1, "pro")]


def test_every_task_runs_in_a_context_of_its_own(client: Pug) -> None:
    work.apply((2,))
    assert seen(client) == [("job.finished", "user_set_in_the_task", client.session_id, 2, None)]
    assert pug.current_context() is None  # left when the task ended


def test_a_foreign_header_costs_only_its_properties(
    client: Pug, caplog: pytest.LogCaptureFixture
) -> None:
    sent = {"distinct_id": "user_3", "properties": {"$plan": "pro"}}
    work.apply((3,), headers={HEADER: sent})
    assert seen(client) == [("job.finished", "user_3", client.session_id, 3, None)]
    assert any(
        "task pug_eager_tests.work: context properties left out" in m for m in caplog.messages
    )


def test_a_failed_task_is_tracked_in_its_context(client: Pug) -> None:
    fail.apply(headers={HEADER: {"distinct_id": "user_4"}})
    (error,) = fake_of(client).events("error_occurred")
    assert (error.distinct_id, error.properties["errorCode"]) == ("user_4", "ValueError")
