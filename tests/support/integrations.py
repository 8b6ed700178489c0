"""What the framework integration tests (tests/e2e/test_integration_*.py) share: reading back
who each event a fake received was for, checking that none arrived twice."""

from __future__ import annotations

import collections
import uuid
from typing import Any, NamedTuple

from accounting import wait_until
from pug import AsyncPug, Pug
from pug.testing import FakePug


def session(n: int) -> str:
    """A session id (the server takes UUIDs only) that tells request n apart."""
    return str(uuid.UUID(int=n))


class Seen(NamedTuple):
    """One received event, as the integration tests compare them."""

    kind: str
    distinct_id: str
    session_id: str | None
    n: Any  # the `n` property the apps send, to tell requests apart


def received_once(fake: FakePug) -> list[Seen]:
    """What `fake` received (sorted), after checking no event id arrived twice."""
    events = fake.events()
    twice = [i for i, count in collections.Counter(e.event_id for e in events).items() if count > 1]
    assert twice == []
    return sorted(
        (Seen(e.kind, e.distinct_id, e.session_id, e.properties.get("n")) for e in events),
        key=repr,
    )


def wait_for_events(fake: FakePug, count: int, timeout: float = 10.0) -> list[Seen]:
    """`received_once` once `count` events arrived (background work ends after the
    response does)."""
    wait_until(lambda: len(fake.events()) >= count, f"{count} events", timeout)
    return received_once(fake)


def client_on_fake(kind: type[Pug] | type[AsyncPug] = Pug, **options: Any) -> Pug | AsyncPug:
    """A strict client delivering to a FakePug of its own (`fake_of`), flushed before
    every look at it."""
    fake = FakePug()
    client = kind(api_key="prv_test", transport=fake, strict=True, **options)
    fake.attach(client)
    return client


def fake_of(client: Pug | AsyncPug) -> FakePug:
    transport = client._core.transport
    assert isinstance(transport, FakePug)
    return transport
