"""Test helpers for users' suites and ours.

- `FakePug`: an in-memory Pug server that plugs into the SDK as its transport, checks every
  request by the server's rules and answers the read API from what it received.
- `InMemoryTransport` (`pug.transports.memory`): records every request, can be told to fail.
- `ReceivedEvent`: one event FakePug accepted, in plain Python values.

The pytest plugin (`pug.pytest_plugin`, installed with the SDK) gives the `pug_fake` and
`pug_client` fixtures.
"""

from __future__ import annotations

from pug.testing.fake.assertions import ReceivedEvent
from pug.testing.fake.server import FakePug
from pug.transports.memory import Handler, InMemoryTransport, StreamHandler

__all__ = ["FakePug", "Handler", "InMemoryTransport", "ReceivedEvent", "StreamHandler"]
