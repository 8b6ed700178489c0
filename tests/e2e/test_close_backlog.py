"""`close(timeout=t)` returns within t + 0.5 s whatever the backlog, and by then `on_error`
has been handed every item that was not delivered; the same at interpreter exit.

The server is down in the two ways that matter: nothing listens (every attempt is refused
at once), or a server accepts and never answers (the attempt in flight must be cut off).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
from pug import BatchConfig, Pug, PugError, RetryPolicy, Undelivered

BACKLOG = 100_000
SLACK = 0.5  # what close() may take past its timeout
# close()'s timeout and exit_timeout: a silent server holds each test that long.
TIMEOUT = 1.0


@pytest.fixture(params=["refused", "silent"])
def down_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A server that is down: nothing listening, or a listener that never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if request.param == "refused":
        listener.close()
    else:
        listener.listen(16)  # the kernel accepts; nobody reads or answers
    yield f"http://127.0.0.1:{port}"
    listener.close()


@pytest.mark.parametrize("transport", ["connect", "grpc"])
def test_close_hands_a_100k_backlog_to_on_error_within_its_timeout(
    down_url: str, transport: str
) -> None:
    received: list[Undelivered] = []
    codes: set[str] = set()
    lock = threading.Lock()

    def on_error(error: PugError, items: list[Undelivered]) -> None:
        with lock:
            received.extend(items)
            codes.add(error.code)

    pug = Pug(
        api_key="prv_close_test",
        base_url=down_url,
        transport=transport,  # type: ignore[arg-type]
        batch=BatchConfig(max_wait=60.0, max_queue_size=BACKLOG),
        retry=RetryPolicy(base=5.0, cap=5.0),
        timeout=30.0,
        on_error=on_error,
    )
    for i in range(BACKLOG):
        pug.track("user_1", "job.finished", {"i": i})
    start = time.monotonic()
    pug.close(timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    assert elapsed <= TIMEOUT + SLACK
    stats = pug.stats()
    with lock:
        count = len(received)
    assert count == BACKLOG
    assert stats.failed == BACKLOG and stats.sent == 0 and stats.enqueued == BACKLOG
    assert codes <= {"unavailable", "deadline_exceeded"}
    # The items are the events tracked, whole and in order (decoded on first read).
    assert [received[n].custom_properties["i"].int_value for n in (0, 1, BACKLOG - 1)] == [
        0,
        1,
        BACKLOG - 1,
    ]
    assert len({item.encoded for item in received}) == BACKLOG


def test_at_exit_the_backlog_reaches_on_error_within_exit_timeout(down_url: str) -> None:
    program = textwrap.dedent(
        f"""
        import atexit, time

        # Registered before the SDK is imported, so it runs after the SDK's exit handler.
        atexit.register(lambda: print(len(handed), round(time.monotonic() - ended, 3)))

        from pug import BatchConfig, Pug, RetryPolicy

        handed = []
        def on_error(error, items):
            handed.extend(items)

        pug = Pug(
            api_key="prv_exit_test",
            base_url={down_url!r},
            batch=BatchConfig(max_wait=60.0, exit_timeout={TIMEOUT}),
            retry=RetryPolicy(base=5.0, cap=5.0),
            timeout=30.0,
            on_error=on_error,
        )
        for i in range({BACKLOG}):
            pug.track("user_1", "job.finished", {{"i": i}})
        ended = time.monotonic()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    handed, took = result.stdout.split()
    assert int(handed) == BACKLOG
    assert float(took) <= TIMEOUT + SLACK
