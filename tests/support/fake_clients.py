"""The fixtures of the fake's own tests: a new `FakePug`, and a `Pug` client over it that
retries fast and is attached (the fake's assertions flush it first). A test module takes
them with `fake = pytest.fixture(new_fake, name="fake")` and the same for `client_over`."""

from __future__ import annotations

from collections.abc import Iterator

from pug import Pug, RetryPolicy
from pug.testing import FakePug


def new_fake() -> FakePug:
    return FakePug()


def client_over(fake: FakePug) -> Iterator[Pug]:
    pug = Pug(api_key="prv_test", transport=fake, retry=RetryPolicy(base=0.001, cap=0.01))
    fake.attach(pug)
    yield pug
    pug.close()
