"""`client.flushing(timeout=...)`: a handler's events are delivered when it returns or
raises, before anything else runs (a Lambda's process may be frozen right after it).

Each test runs a real script against the Connect server on 127.0.0.1. The script ends
with `os._exit`, which skips the exit flush: what arrived was sent by the decorator.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable

import pytest
from hostile import Handler, Hostile
from servers import ConnectServer, FakePug

PROGRAM = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from pug import AsyncPug, BatchConfig, Pug

    url, case, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    batch = BatchConfig(max_wait=60.0)  # nothing is sent on its own during the test
    client = (AsyncPug if case.startswith("async client") else Pug)(
        api_key="prv_flushing", base_url=url, batch=batch
    )

    @client.flushing(timeout=timeout)
    def handler(event):
        for i in range(10):
            client.track("user_1", "lambda.handled", {"i": i})
        if case.endswith("raises"):
            raise RuntimeError("handler failed")
        return {"status": 200}

    @client.flushing(timeout=timeout)
    async def async_handler(event):
        await asyncio.sleep(0)
        return handler.__wrapped__(event)

    start = time.monotonic()
    try:
        if "async" in case:
            print(asyncio.run(async_handler({})))
        else:
            print(handler({}))
    except RuntimeError as exc:
        print("raised", exc)
    print("took", round(time.monotonic() - start, 3))
    stats = client.stats()
    print("sent", stats.sent, "of", stats.enqueued, flush=True)
    os._exit(0)  # no exit flush: a frozen or killed process
    """
)


def run(url: str, case: str, timeout: float = 5.0) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, url, case, str(timeout)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [*result.stdout.splitlines(), *result.stderr.splitlines()]


CASES = [
    "sync returns",
    "sync raises",
    "async function, sync client, returns",
    "async client returns",
    "async client raises",
]


@pytest.mark.parametrize("case", CASES)
def test_events_arrive_when_the_handler_ends(
    server: ConnectServer, fake: FakePug, case: str
) -> None:
    lines = run(server.url, case)
    first, _, result = lines
    assert first == ("raised handler failed" if case.endswith("raises") else "{'status': 200}")
    assert result == "sent 10 of 10"
    events = fake.delivered_events()
    assert sorted(e.custom_properties["i"].int_value for e in events) == list(range(10))


@pytest.mark.parametrize("case", ["sync returns", "async client raises"])
def test_the_flush_gives_up_at_its_timeout(
    hostile: Callable[[Handler], Hostile], case: str
) -> None:
    answered = threading.Event()

    def hold(conn: socket.socket, n: int, request: bytes) -> bool:
        answered.wait(30)  # no answer while the script runs
        return False

    server = hostile(hold)
    try:
        first, took, result, warning = run(f"http://127.0.0.1:{server.port}", case, timeout=0.5)
    finally:
        answered.set()
    assert first == ("raised handler failed" if case.endswith("raises") else "{'status': 200}")
    assert 0.5 <= float(took.split()[1]) < 2.0
    assert result == "sent 0 of 10"  # still in flight
    assert warning == "flush() timed out after 0.5s with events still queued"
    assert len(server.requests) == 1  # the flush did send them
