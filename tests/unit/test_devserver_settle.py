"""The dev server stores what the fake took once batches stop coming (`IdleSettler`):
never while a batch is being taken, never sooner than its pause after the last one, always
after it; and a real dev server answers a burst without storing it, then stores it in the
pause that follows, on the settler's thread."""

from __future__ import annotations

import io
import threading
import time
from typing import cast

from accounting import wait_until
from pug import BatchConfig, Pug
from pug.devserver import DevServer
from pug.devserver.dispatch import IdleSettler
from pug.testing import FakePug


class _Settles:
    """Stands for the fake: when settle() ran, and on which thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []
        self.called = threading.Event()

    def settle(self) -> None:
        self.calls.append((time.monotonic(), threading.current_thread().name))
        self.called.set()


def test_nothing_is_stored_while_a_batch_is_taken_and_it_is_after_the_pause() -> None:
    fake = _Settles()
    settler = IdleSettler(cast(FakePug, fake), idle=0.05)
    try:
        with settler.taking():  # a batch, then at once one that takes six pauses
            pass
        with settler.taking():
            began = time.monotonic()
            fake.called.wait(0.3)
            ended = time.monotonic()  # (no later than the batch's end)
        assert fake.called.wait(10)
        assert not any(began <= at <= ended for at, _ in fake.calls)
        at, thread = fake.calls[-1]
        assert at - ended >= 0.05
        assert thread == "pug-dev-settle"
    finally:
        settler.stop()


def test_batches_back_to_back_are_stored_only_in_a_pause_after_them() -> None:
    fake = _Settles()
    settler = IdleSettler(cast(FakePug, fake), idle=0.2)
    taken: list[tuple[float, float]] = []
    try:
        for _ in range(3):  # bursts, a pause after each
            fake.called.clear()
            for _ in range(50):
                with settler.taking():  # (times taken within: no later than its ends)
                    start = time.monotonic()
                    end = time.monotonic()
                taken.append((start, end))
            assert fake.called.wait(10)
    finally:
        settler.stop()
    assert len(fake.calls) >= 3  # one a pause (more only if this thread stalled a pause)
    for at, _ in fake.calls:
        assert not any(start <= at <= end for start, end in taken)
        last_end = max(end for _, end in taken if end <= at)
        assert at - last_end >= 0.2


def test_the_settler_thread_starts_with_the_first_batch_and_stop_ends_it() -> None:
    never = IdleSettler(cast(FakePug, _Settles()))
    never.stop()  # no batch: no thread, nothing to wait for
    assert never._thread.ident is None
    settler = IdleSettler(cast(FakePug, _Settles()))
    with settler.taking():
        assert settler._thread.is_alive()
    settler.stop()
    assert not settler._thread.is_alive()


def test_a_dev_server_answers_a_burst_then_stores_it_on_the_settler_thread() -> None:
    fake = FakePug()
    calls: list[str] = []
    settle = fake.settle

    def recorded() -> None:
        calls.append(threading.current_thread().name)
        settle()

    fake.settle = recorded  # type: ignore[method-assign]
    with DevServer(fake, out=io.StringIO()) as server:
        client = Pug(api_key="prv_dev", base_url=server.connect_url,
                     batch=BatchConfig(max_size=100))  # fmt: skip
        for i in range(3_000):
            client.track(f"user_{i}", "order.completed", {"n": i})
        assert client.flush(30)
        # Stored without a read (after the burst; in it too if a pause came mid-way).
        wait_until(lambda: bool(calls) and not fake._store._pending, "the burst stored")
        assert set(calls) == {"pug-dev-settle"}
        assert [e.properties["n"] for e in fake.events()] == list(range(3_000))
        client.close()
