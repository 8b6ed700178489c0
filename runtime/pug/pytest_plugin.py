"""The pytest plugin (entry point `pytest11`): fixtures for testing code that uses Pug.

    def test_checkout(pug_client, pug_fake):
        checkout(pug_client, order_id="o1")          # your code tracks with pug_client
        pug_fake.assert_tracked(OrderCompleted(order_id="o1"), distinct_id="u1")

`pug_fake` is a fresh `pug.testing.FakePug`; `pug_client` a strict `Pug` wired to it,
flushed before every look at the fake, so tests need no sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pug.client import Pug
from pug.testing import FakePug


@pytest.fixture
def pug_fake() -> FakePug:
    """An in-memory Pug that records what it receives."""
    return FakePug()


@pytest.fixture
def pug_client(pug_fake: FakePug) -> Iterator[Pug]:
    """A strict `Pug` (invalid input raises) sending to `pug_fake`."""
    client = Pug(api_key="prv_pytest", transport=pug_fake, strict=True)
    pug_fake.attach(client)
    yield client
    client.close()
