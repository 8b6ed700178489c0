"""Celery with Pug: the context a task is sent from travels with it, so the task tracks for
the user who started it, in the worker's prefork children.

    pug devserver                                                  # prints what arrives
    celery -A examples.celery_app worker -P prefork -c 2           # from the repository root
    python -m examples.celery_app                                  # sends two tasks

The broker is a folder (Kombu's filesystem transport), so nothing else has to run;
CELERY_BROKER_URL picks a real one. PUG_BASE_URL and PUG_API_KEY point the client elsewhere.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pug
from celery import Celery
from pug import Pug
from pug.integrations.celery import setup

# Made in the worker's main process, before it forks its children: each child starts with
# an empty queue and its own sender, and what it tracked is delivered before it exits
# (recycled by --max-tasks-per-child, or at shutdown).
client = Pug(
    api_key=os.environ.get("PUG_API_KEY", "prv_local"),
    base_url=os.environ.get("PUG_BASE_URL", "http://127.0.0.1:8700"),
)
setup(client, track_exceptions=True)  # here: producers and workers both import this module

BROKER = Path(tempfile.gettempdir()) / "pug-celery-example"
for folder in ("queue", "processed"):
    (BROKER / folder).mkdir(parents=True, exist_ok=True)
app = Celery("examples", broker=os.environ.get("CELERY_BROKER_URL", "filesystem://"))
app.conf.update(
    broker_transport_options={
        "data_folder_in": str(BROKER / "queue"),
        "data_folder_out": str(BROKER / "queue"),
        "processed_folder": str(BROKER / "processed"),
    },
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
)


def export_report(report_id: str) -> None:
    client.track("report.exported", {"report_id": report_id})  # for the sender's user


# app.task as a call, not a decorator: Celery has no type hints, and mypy --strict refuses
# an untyped decorator on a typed function.
export_report_task = app.task(name="examples.export_report")(export_report)


if __name__ == "__main__":
    for user_id in ("user_42", "user_7"):
        # In a web app the integration's middleware has opened this context already.
        with pug.context(distinct_id=user_id, properties={"source": "example"}):
            export_report_task.delay(f"report-of-{user_id}")
    print("sent 2 tasks: start a worker to run them")
