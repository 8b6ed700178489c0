"""`track` is an ordinary method of the client class: patching the class reaches it."""

from __future__ import annotations

from unittest import mock

from pug import Pug
from pug.testing import InMemoryTransport


def test_patching_the_class_method_catches_every_call() -> None:
    with Pug(api_key="prv_test", transport=InMemoryTransport()) as pug:
        with mock.patch.object(Pug, "track") as patched:
            pug.track("user_1", "kind.x", {"a": 1})
            pug.bind("user_2").track("kind.y")
        assert patched.call_count == 2
        assert pug.stats().enqueued == 0  # nothing reached the queue
        pug.track("user_1", "kind.x")
        assert pug.stats().enqueued == 1
