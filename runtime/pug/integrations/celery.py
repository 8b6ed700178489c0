"""Pug for Celery: the context a task is sent from travels in the task's message headers,
and the task runs in it on the worker; failed tasks can be tracked as `ErrorOccurred`.

    # tasks.py, imported by the producers and the workers alike
    pug_client = Pug(...)                      # made in the worker's main process is fine:
    pug.integrations.celery.setup(pug_client)  # each forked child gets its own queue

Delivery in the worker needs nothing more: the SDK closes its clients when a prefork child
ends (recycled by `--max-tasks-per-child`, or at a warm shutdown) and when the worker
exits, so what a task tracked is delivered then at the latest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pug
from pug.errors import PugValidationError
from pug.integrations._common import Client, needs, require_client, track_exception

try:
    from celery import signals
except ImportError as exc:
    raise needs("celery", exc) from exc

logger = logging.getLogger("pug")

# The message header that carries {"distinct_id", "session_id", "properties"} (Celery's
# task protocol 2, the default: custom headers become attributes of `task.request`).
HEADER = "pug_context"
_OPEN = "_pug_open_context"  # the running task's context, on its task.request
_UID = "pug.integrations.celery."


class _Settings:
    client: Client | None = None
    track_exceptions = False


def setup(client: Client | None = None, *, track_exceptions: bool = False) -> None:
    """Connect the signal handlers (again: the last call's settings hold). Call it where
    both the producers and the workers run it, such as the module that defines the tasks.
    `client` is needed only to track failed tasks (`task_failure`)."""
    _Settings.client = require_client(client, track_exceptions)
    _Settings.track_exceptions = track_exceptions
    signals.before_task_publish.connect(_publish, weak=False, dispatch_uid=_UID + "publish")
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid=_UID + "prerun")
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid=_UID + "postrun")
    signals.task_failure.connect(_failure, weak=False, dispatch_uid=_UID + "failure")


def _serializable(properties: Mapping[str, Any]) -> dict[str, Any]:
    """The properties a JSON task message can carry; the others are left out with a warning
    (a task must still be sent)."""
    kept = {}
    for key, value in properties.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            logger.warning("context property %r not sent with the task: not JSON", key[:200])
        else:
            kept[key] = value
    return kept


def _publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    current = pug.current_context()
    if current is None or headers is None:
        return
    headers[HEADER] = {
        "distinct_id": current.distinct_id,
        "session_id": current.session_id,
        "properties": _serializable(current.properties),
    }


def _prerun(task: Any = None, **_: Any) -> None:
    """Every task runs in a context (so `pug.set_context` works in it), the producer's if
    it sent one."""
    if task is None:
        return
    # A worker's request has the message headers as attributes; `apply(headers=...)` (eager)
    # keeps them in `headers`.
    sent = getattr(task.request, HEADER, None) or (task.request.headers or {}).get(HEADER)
    if not isinstance(sent, dict):
        sent = {}
    distinct_id, session_id = _text(sent.get("distinct_id")), _text(sent.get("session_id"))
    properties = sent.get("properties")
    try:
        context = pug.context(distinct_id, session_id, properties or None)
    except PugValidationError as exc:  # not from our publisher: a `$` key, not a mapping
        logger.warning("task %s: context properties left out: %s", task.name, exc)
        context = pug.context(distinct_id, session_id)
    context.__enter__()
    setattr(task.request, _OPEN, context)


def _postrun(task: Any = None, **_: Any) -> None:
    # Sent in a `finally` after the task ran, its request still current, in the same thread.
    context = getattr(task.request, _OPEN, None) if task is not None else None
    if context is not None:
        delattr(task.request, _OPEN)
        context.__exit__(None, None, None)


def _failure(exception: BaseException | None = None, **_: Any) -> None:
    # Sent before task_postrun: the task's context is still the current one.
    if _Settings.track_exceptions and exception is not None:
        track_exception(_Settings.client, exception)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
