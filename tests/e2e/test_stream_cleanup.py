"""A server stream leaves nothing behind when its client closes right after it.

Regression (issue 13, item 9): a Connect stream returned at its end-of-stream message with
httpx's body generators unfinished. The worker loop closed them with tasks it started one
level per turn, and a client closed next stopped the loop first: "Task was destroyed but it
is pending!", and on 3.13 "coroutine method 'aclose' of 'PoolByteStream.__aiter__' was
never awaited". Each case here reads a stream over each transport, in the ways a caller
ends one (to its end, stopping early, a server error), closes the client at once, and
fails on any such warning, asyncio error log or unraisable exception. It repeats the case
a few times: the leftovers depended on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from protoc_helpers import GoogleMessages
from pug import AsyncPug, Pug, PugError
from servers import Refusal

API_KEY = "prv_test_key"
ROUNDS = 5

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


@pytest.fixture(params=["connect", "grpc"])
def server(request: pytest.FixtureRequest, google_pb2: GoogleMessages) -> Any:
    """The server of the transport named by the parameter, streaming three List pages."""
    server: Any = request.getfixturevalue(f"{request.param}_server")
    server.fake.reset()
    server.fake.list_pages = [
        google_pb2["shared.profiles.v1.ListResponse"](
            profiles=[
                google_pb2["shared.profiles.v1.Profile"](id=f"p{page}-{n}", project_id="proj")
                for n in range(2)
            ]
        )
        for page in range(3)
    ]
    server.protocol = request.param
    return server


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def leftovers(run: Callable[[], None]) -> list[str]:
    """What `run` left behind: RuntimeWarnings, asyncio's error logs, unraisable errors."""
    records = _Records()
    asyncio_logger = logging.getLogger("asyncio")
    unraisable: list[str] = []
    previous_hook = sys.unraisablehook

    def hook(info: Any) -> None:
        unraisable.append(f"unraisable {info.exc_type.__name__}: {info.exc_value}")

    asyncio_logger.addHandler(records)
    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
            gc.collect()  # a coroutine or a task complains when it is collected
    finally:
        sys.unraisablehook = previous_hook
        asyncio_logger.removeHandler(records)
    found = [f"{w.category.__name__}: {w.message}" for w in caught]
    found += records.messages
    return found + unraisable


def sync_client(server: Any) -> Pug:
    return Pug(api_key=API_KEY, base_url=server.url, transport=server.protocol)


def test_sync_stream_read_to_its_end_then_close(server: Any) -> None:
    def run() -> None:
        for _ in range(ROUNDS):
            client = sync_client(server)
            assert len(list(client.profiles.list())) == 6
            client.close()

    assert leftovers(run) == []


def test_sync_stream_left_early_then_close(server: Any) -> None:
    def run() -> None:
        for _ in range(ROUNDS):
            client = sync_client(server)
            profiles = client.profiles.list()
            assert next(profiles).id == "p0-0"
            profiles.close()  # what leaving a for loop early does, once collected
            client.close()

    assert leftovers(run) == []


def test_sync_stream_ending_in_a_server_error_then_close(server: Any) -> None:
    server.fake.list_error = (1, Refusal("unavailable", "scripted"))

    def run() -> None:
        for _ in range(ROUNDS):
            client = sync_client(server)
            with pytest.raises(PugError):
                list(client.profiles.list())
            client.close()

    assert leftovers(run) == []


def run_async(server: Any, read: Callable[[AsyncPug], Any]) -> None:
    async def main() -> None:
        for _ in range(ROUNDS):
            async with AsyncPug(
                api_key=API_KEY, base_url=server.url, transport=server.protocol
            ) as client:
                await read(client)

    asyncio.run(main())


def test_async_stream_read_to_its_end_then_close(server: Any) -> None:
    async def read(client: AsyncPug) -> None:
        assert len([p async for p in client.profiles.list()]) == 6

    assert leftovers(lambda: run_async(server, read)) == []


def test_async_stream_left_early_then_close(server: Any) -> None:
    async def read(client: AsyncPug) -> None:
        async with contextlib.aclosing(client.profiles.list()) as profiles:
            async for profile in profiles:
                assert profile.id == "p0-0"
                break

    assert leftovers(lambda: run_async(server, read)) == []
