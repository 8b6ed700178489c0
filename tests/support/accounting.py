"""How the reliability tests account for events: `stats()` adding up, an `on_error` that
records what it was given, and waiting for states the SDK gives no signal for."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from pug import Pug, PugError

if TYPE_CHECKING:
    from servers import FakePug


def assert_stats_add_up(pug: Pug) -> None:
    """Every item enqueued ended one way: sent, failed (on_error), dropped for a full
    queue, or dropped by the server; nothing is left once the client is closed."""
    s = pug.stats()
    ended = (
        s.sent
        + s.identifies_sent
        + s.failed
        + s.dropped_queue_full
        + sum(s.dropped_by_server.values())
    )
    assert (s.enqueued, s.queue_length) == (ended, 0), s


@dataclass
class DeadLetters:
    """An `on_error` that records what it is given; `wait_for(n)` blocks until n items came."""

    calls: list[tuple[PugError, list[Any]]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, error: PugError, items: list[Any]) -> None:
        with self._changed:
            self.calls.append((error, items))
            self._changed.notify_all()

    @property
    def items(self) -> list[Any]:
        return [item for _, items in self.calls for item in items]

    @property
    def codes(self) -> list[str]:
        return [error.code for error, _ in self.calls]

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.items) >= count, timeout)


def ids(events: list[Any]) -> list[str]:
    """The event ids of `events` (stubs or Google messages), in order."""
    return [event.event_id for event in events]


def delivered_ns(fake: FakePug) -> list[int]:
    """The `n` of every event `fake` was delivered, after checking no event id arrived twice."""
    events: list[Any] = fake.delivered_events()  # Google protobuf Events
    counts = collections.Counter(e.event_id for e in events)
    assert [i for i, count in counts.items() if count > 1] == []
    return sorted(e.custom_properties["n"].int_value for e in events)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; only for states the SDK gives no signal for."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.001)
