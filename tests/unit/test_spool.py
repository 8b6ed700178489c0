"""The spool in one process, with the in-memory transport: what is sent, what is dropped
past max_bytes, the errors that leave the client working in memory (and the log line that
says so), and two clients sharing one directory."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from pathlib import Path

import pytest
from accounting import DeadLetters, assert_stats_add_up, wait_until
from pug import AsyncPug, BatchConfig, Pug, RetryPolicy, Spool
from pug._ingest.spool import SpoolQueue
from pug._ingest.validate import BATCH_MAX_EVENTS
from pug.testing import InMemoryTransport

FAST = RetryPolicy(base=0.01, cap=0.02)


def numbers(transport: InMemoryTransport) -> list[int]:
    return sorted(int(e.custom_properties["n"].int_value) for e in transport.events())


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    directory = tmp_path / "spool"
    directory.mkdir()
    return directory


@pytest.fixture
def clients() -> Iterator[list[Pug]]:
    made: list[Pug] = []
    yield made
    for client in made:
        client.close(0.5)


def test_events_go_through_the_spool_and_the_files_are_gone_once_sent(
    spool: Path, transport: InMemoryTransport, clients: list[Pug]
) -> None:
    pug = Pug(api_key="prv_test", transport=transport, spool=spool)
    clients.append(pug)
    assert isinstance(pug._core.queue, SpoolQueue)
    for n in range(250):
        pug.track("user_1", "job.finished", {"n": n})
    pug.identify("user_1", {"plan": "pro"})
    assert pug.flush(10)
    assert numbers(transport) == list(range(250))
    assert len(transport.identifies()) == 1
    pug.close()
    assert_stats_add_up(pug)
    assert list(spool.iterdir()) == []


def test_async_client_takes_a_spool_too(spool: Path, transport: InMemoryTransport) -> None:
    async def main() -> bool:
        pug = AsyncPug(api_key="prv_test", transport=transport, spool=Spool(spool))
        pug.track("user_1", "job.finished", {"n": 1})
        delivered = await pug.identify("user_1", {"plan": "pro"})
        await pug.close()
        return delivered

    assert asyncio.run(main())
    assert numbers(transport) == [1]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: tmp / "missing", "the spool directory {path!r} does not exist"),
        (lambda tmp: tmp / "a_file", "the spool path {path!r} is not a directory"),
        (
            lambda tmp: Path("/sys"),
            "cannot write in the spool directory {path!r}: Permission denied",
        ),
    ],
    ids=["missing", "a file", "read-only"],
)
def test_a_spool_that_cannot_be_used_is_said_at_construction_and_the_client_works_in_memory(
    make: object,
    reason: str,
    tmp_path: Path,
    transport: InMemoryTransport,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    path = make(tmp_path)  # type: ignore[operator]
    pug = Pug(api_key="prv_test", transport=transport, spool=path)
    message = reason.format(path=str(path))
    assert caplog.messages == [
        f"pug spool disabled: {message}; the client keeps its events in memory only "
        "(they are lost if the process dies)"
    ]
    pug.track("user_1", "job.finished", {"n": 7})
    assert pug.flush(5)
    pug.close()
    assert numbers(transport) == [7]


def test_a_file_that_is_not_ours_is_left_alone_with_an_error(
    spool: Path,
    transport: InMemoryTransport,
    clients: list[Pug],
    caplog: pytest.LogCaptureFixture,
) -> None:
    foreign = spool / "backup.pugspool"
    foreign.write_bytes(b"something else entirely")
    pug = Pug(api_key="prv_test", transport=transport, spool=spool)
    clients.append(pug)
    assert caplog.messages == [
        f"pug spool: {foreign} is not a pug spool file (it does not start with the spool's "
        "header); it was left untouched"
    ]
    pug.track("user_1", "job.finished", {"n": 1})
    assert pug.flush(5)
    assert numbers(transport) == [1]
    assert foreign.read_bytes() == b"something else entirely"


def test_a_full_disk_turns_the_client_to_memory_and_says_so(
    spool: Path,
    transport: InMemoryTransport,
    clients: list[Pug],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pug = Pug(api_key="prv_test", transport=transport, spool=spool)
    clients.append(pug)
    queue = pug._core.queue
    assert isinstance(queue, SpoolQueue)
    (path,) = spool.iterdir()

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    queue._write = full
    for n in range(150):
        pug.track("user_1", "job.finished", {"n": n})
    assert pug.flush(5)
    assert numbers(transport) == list(range(150))
    assert (
        f"pug spool: writing to {path} failed (the disk is full); the client keeps its "
        "events in memory from now on (they are lost if the process dies); what is on "
        "disk is still sent"
    ) in caplog.messages
    pug.close()
    assert_stats_add_up(pug)


def test_past_max_bytes_the_oldest_go_to_on_error_and_the_stats_add_up(
    spool: Path, transport: InMemoryTransport
) -> None:
    dead = DeadLetters()
    options = Spool(spool, max_bytes=512 * 1024, segment_bytes=64 * 1024)
    pug = Pug(api_key="prv_test", transport=transport, spool=options, on_error=dead, retry=FAST)
    transport.fail("unavailable", count=None)
    for n in range(6000):  # ~200 bytes each: 1.2 MB
        pug.track("user_1", "job.finished", {"n": n})
    pug.flush(0.5)  # (written, then over the bound)
    on_disk = sum(p.stat().st_size for p in spool.iterdir())
    # One file may be held for the batch in flight, one is being written.
    assert on_disk <= options.max_bytes + 2 * options.segment_bytes + 4096
    transport.recover()
    assert pug.flush(10)
    pug.close()
    stats = pug.stats()
    assert stats.dropped_queue_full > 0
    assert stats.sent + stats.dropped_queue_full == 6000
    assert_stats_add_up(pug)
    dropped, sent = sorted(numbers_of(dead)), numbers(transport)
    assert sorted(dropped + sent) == list(range(6000))
    # The oldest not taken yet are dropped: what was sent from before the last one dropped
    # is the one batch the worker held through the outage (taken before the first drop or
    # between two, as the threads ran), consecutive events.
    held = [n for n in sent if n < dropped[-1]]
    if held:
        assert held == list(range(held[0], held[-1] + 1))
    assert len(held) <= BATCH_MAX_EVENTS


def numbers_of(dead: DeadLetters) -> list[int]:
    return [int(item.message.custom_properties["n"].int_value) for item in dead.items]


def test_two_clients_on_one_directory_never_send_each_others_files_while_open(
    spool: Path, clients: list[Pug]
) -> None:
    down, up = InMemoryTransport(), InMemoryTransport()
    down.fail("unavailable", count=None)
    options = Spool(spool, adopt_interval=0.01)
    first = Pug(api_key="prv_test", transport=down, spool=options, retry=FAST)
    for n in range(100):
        first.track("user_1", "job.finished", {"n": n})
    assert not first.flush(0.2)  # written, and the server is down
    second = Pug(api_key="prv_test", transport=up, spool=options)
    clients.append(second)
    for n in range(100, 110):
        second.track("user_2", "job.finished", {"n": n})
    assert second.flush(5)
    assert numbers(up) == list(range(100, 110))  # its own only: the other's file is held
    first.close(0.1)  # gives up: its events stay in its file, now held by nobody
    assert first.stats().queue_length == 100
    wait_until(lambda: second.stats().sent == 110, "the second client adopting the file")
    assert numbers(up) == list(range(110))


def test_what_waits_to_be_written_is_bounded_like_the_in_memory_queue(
    spool: Path, transport: InMemoryTransport, clients: list[Pug]
) -> None:
    """While the disk is slow (here: its lock held), what waits to be written is bounded
    like the in-memory queue: past max_queue_size the oldest are dropped."""
    batch = BatchConfig(max_queue_size=50, max_wait=60)
    pug = Pug(api_key="prv_test", transport=transport, spool=spool, batch=batch)
    clients.append(pug)
    queue = pug._core.queue
    assert isinstance(queue, SpoolQueue)
    with queue._io:
        for n in range(80):
            pug.track("user_1", "job.finished", {"n": n})
        assert pug.stats().dropped_queue_full == 30
    assert pug.flush(5)
    assert numbers(transport) == list(range(30, 80))


def test_past_the_memory_bound_what_was_written_is_read_back_from_the_files(
    spool: Path, transport: InMemoryTransport, clients: list[Pug]
) -> None:
    """The spool keeps what it wrote in memory to take it from there, within
    max_queue_bytes; past it, it reads it back from its files."""
    batch = BatchConfig(max_queue_bytes=512 * 1024)
    pug = Pug(api_key="prv_test", transport=transport, spool=spool, batch=batch, retry=FAST)
    clients.append(pug)
    transport.fail("unavailable", count=None)
    queue = pug._core.queue
    assert isinstance(queue, SpoolQueue)
    for start in range(0, 4000, 500):  # ~800 KB, each 100 KB written before the next
        for n in range(start, start + 500):
            pug.track("user_1", "job.finished", {"n": n})
        wait_until(lambda: not queue._pending, "the writer")
    pug.identify("user_1", {"plan": "pro"})
    for n in range(4000, 4010):
        pug.track("user_1", "job.finished", {"n": n})
    assert not pug.flush(0.3)
    assert queue._window_bytes <= batch.max_queue_bytes
    assert [s.window for s in queue._segments] == [None]  # read back from the file
    transport.recover()
    assert pug.flush(10)
    assert numbers(transport) == list(range(4010))
    assert len(transport.identifies()) == 1
    assert pug.stats().dropped_queue_full == 0


def test_one_object_resent_twice_is_sent_twice_and_its_file_still_goes(
    spool: Path, transport: InMemoryTransport, clients: list[Pug]
) -> None:
    dead = DeadLetters()
    pug = Pug(api_key="prv_test", transport=transport, spool=spool, on_error=dead)
    clients.append(pug)
    transport.fail("invalid_argument", count=1)
    pug.track("user_1", "job.finished", {"n": 1})
    assert pug.flush(5)
    (item,) = dead.items
    pug.resend([item, item])
    assert pug.flush(5)
    assert numbers(transport) == [1, 1]
    pug.close()
    assert list(spool.iterdir()) == []
