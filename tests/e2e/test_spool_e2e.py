"""The durable spool against real processes and a real Connect server on 127.0.0.1.

A process that tracks with the server down is SIGKILLed at random points; a new process on
the same directory, with the server up, delivers every event that was on disk (read from the
files by tests/support/spool_files.py, not by the SDK), each at least once, with its id and
time unchanged; only a batch in flight when the process died may arrive twice. Two live
processes share a directory, and the survivor sends what the killed one left. A damaged
record costs only itself.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from accounting import wait_until
from processes import process_group
from protoc_helpers import GoogleMessages
from pug import BatchConfig, Pug, Spool
from servers import BATCH_CREATE, ConnectServer, FakePug, closed_port
from spool_files import HEADER, MAGIC, decode, identity, records, unsent_events

TRACKED = 10_000

TRACKER = """
import sys, time
from pug import BatchConfig, Pug, RetryPolicy, Spool

pug = Pug(
    api_key="prv_spool",
    spool=Spool(sys.argv[1], adopt_interval=0.2),
    batch=BatchConfig(max_wait=0.02),
    retry=RetryPolicy(base=0.01, cap=0.05),
)
print("ready", flush=True)
for n in range(int(sys.argv[2])):
    pug.track(f"user_{n % 50}", "job.finished", {"n": n})
print("tracked", flush=True)
for line in sys.stdin:  # "close" ends it; SIGKILL usually comes first
    pug.flush(30)
    pug.close()
    print("closed", pug.stats(), flush=True)
    break
"""

RECOVERER = """
import sys
from pug import Pug

pug = Pug(api_key="prv_spool", spool=sys.argv[1])
delivered = pug.flush(30)
pug.close()
stats = pug.stats()
print(delivered, stats.recovered, stats.sent, stats.queue_length, flush=True)
"""


@contextlib.contextmanager
def program(
    source: str, args: list[str], base_url: str, tmp_path: Path
) -> Iterator[subprocess.Popen[str]]:
    """`source` running as a script, its stdin and stdout piped."""
    script = tmp_path / f"program_{abs(hash(source))}.py"
    script.write_text(textwrap.dedent(source))
    with process_group(
        [sys.executable, str(script), *args],
        env={**os.environ, "PUG_BASE_URL": base_url},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as process:
        yield process


_LINES: dict[int, queue.Queue[str]] = {}


def read_line(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The program's next line of output (a thread reads them: a buffered readline after
    select() would hide a second line already read into the buffer)."""
    lines = _LINES.get(process.pid)
    if lines is None:
        lines = _LINES[process.pid] = queue.Queue()
        stdout = process.stdout
        assert stdout is not None
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        return lines.get(timeout=timeout).strip()
    except queue.Empty:
        pytest.fail(f"no output from the program within {timeout} s")


def kill(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def recover(spool: Path, server: ConnectServer, tmp_path: Path) -> list[int]:
    """Run a new process on `spool` with the server up; its printed figures."""
    with program(RECOVERER, [str(spool)], server.url, tmp_path) as process:
        out = read_line(process, 60)
        process.wait(30)
    delivered, *counts = out.split()
    assert delivered == "True", out
    return [int(c) for c in counts]


# Where the tracking process is killed: while it appends (tracking, the server down),
# mid-outage (everything tracked, retrying against a closed port), while it sends (the
# server up but slow, so a batch is in flight). 20 runs in all, each with its own seed.
KILLS = [("appending", seed) for seed in range(8)] + [
    *(("outage", seed) for seed in range(6)),
    *(("sending", seed) for seed in range(6)),
]


@pytest.mark.parametrize(("when", "seed"), KILLS)
def test_sigkill_then_a_new_process_delivers_what_was_on_disk(
    when: str,
    seed: int,
    server: ConnectServer,
    fake: FakePug,
    google_pb2: GoogleMessages,
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    chance = random.Random(seed)
    up = when == "sending"
    if up:
        fake.delay_next(1000, 0.05)
    url = server.url if up else f"http://127.0.0.1:{closed_port()}"
    with program(TRACKER, [str(spool), str(TRACKED)], url, tmp_path) as tracker:
        assert read_line(tracker) == "ready"
        if when == "outage":
            assert read_line(tracker) == "tracked"
            time.sleep(chance.uniform(0.0, 0.3))  # the kill's random point, not a wait
        elif when == "sending":
            wait_until(lambda: len(fake.calls(BATCH_CREATE)) >= 1, "a first batch on the wire", 15)
            time.sleep(chance.uniform(0.0, 0.2))
        else:
            time.sleep(chance.uniform(0.0, 0.12))
        kill(tracker)
    first_calls = fake.calls(BATCH_CREATE)
    first = [identity(e) for e in fake.delivered_events()]
    in_flight = {identity(e) for e in first_calls[-1].request.events} if first_calls else set()  # type: ignore[union-attr]
    on_disk_events = decode(unsent_events(spool), google_pb2)
    on_disk = [identity(e) for e in on_disk_events]
    fake.reset()

    recovered, sent, left = recover(spool, server, tmp_path)

    second = [identity(e) for e in fake.delivered_events()]
    counts = collections.Counter(second)
    assert [e for e, n in counts.items() if n > 1] == []
    assert set(second) == set(on_disk)  # all of it, ids and times unchanged, nothing else
    assert (recovered, sent, left) == (len(on_disk), len(on_disk), 0)
    assert set(first) & set(second) <= in_flight  # duplicates: only a batch in flight
    # Durable in order: what was delivered or on disk is every event up to some n (what
    # was lost is the tail still in memory when the process died).
    numbers = {e.custom_properties["n"].int_value for e in on_disk_events}
    numbers |= {e.custom_properties["n"].int_value for e in first_calls_events(first_calls)}
    assert numbers == set(range(len(numbers)))
    assert list(spool.iterdir()) == []  # everything delivered: the files are gone


def first_calls_events(calls: list[Any]) -> list[Any]:
    return [e for call in calls if call.outcome == "ok" for e in call.request.events]


def test_two_processes_share_a_directory_and_the_survivor_sends_the_dead_ones_events(
    server: ConnectServer, fake: FakePug, google_pb2: GoogleMessages, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    down = f"http://127.0.0.1:{closed_port()}"
    with (
        contextlib.ExitStack() as stack,
        program(TRACKER, [str(spool), "500"], down, tmp_path) as doomed,
    ):
        assert read_line(doomed) == "ready"
        assert read_line(doomed) == "tracked"
        wait_until(lambda: len(unsent_events(spool)) == 500, "the 500 events on disk", 15)
        doomed_events = {identity(e) for e in decode(unsent_events(spool), google_pb2)}
        survivor = stack.enter_context(program(TRACKER, [str(spool), "10"], server.url, tmp_path))
        assert read_line(survivor) == "ready"
        assert read_line(survivor) == "tracked"
        wait_until(lambda: len(fake.delivered_events()) == 10, "the survivor's own events", 15)
        # Both alive: the survivor looked at the directory (when it started, and every
        # 0.2 s since) and sent nothing of the other's.
        assert not doomed_events & {identity(e) for e in fake.delivered_events()}
        kill(doomed)
        wait_until(lambda: len(fake.delivered_events()) == 510, "the dead one's events", 15)
        assert survivor.stdin is not None
        survivor.stdin.write("close\n")
        survivor.stdin.flush()
        assert read_line(survivor).startswith("closed")
    delivered = [identity(e) for e in fake.delivered_events()]
    assert len(set(delivered)) == 510
    assert doomed_events <= set(delivered)
    assert list(spool.iterdir()) == []


def left_on_disk(tmp_path: Path, count: int) -> tuple[Path, Path]:
    """`count` events tracked with the server down and left by close() in a new spool
    directory: the directory and its one file."""
    spool = tmp_path / "spool"
    spool.mkdir()
    pug = Pug(
        api_key="prv_spool",
        base_url=f"http://127.0.0.1:{closed_port()}",
        spool=Spool(spool),
        batch=BatchConfig(max_wait=60),
    )
    for n in range(count):
        pug.track("user_1", "job.finished", {"n": n})
    pug.close(0.2)
    assert pug.stats().queue_length == count
    (path,) = spool.iterdir()
    return spool, path


def send_from(
    spool: Path, server: ConnectServer, caplog: pytest.LogCaptureFixture, more: range = range(0)
) -> None:
    """A client on `spool` with the server up sends what is there (and tracks `more`)."""
    caplog.set_level(logging.INFO, "pug")
    pug = Pug(api_key="prv_spool", base_url=server.url, spool=spool)
    for n in more:
        pug.track("user_1", "job.finished", {"n": n})
    assert pug.flush(10)
    pug.close()


def delivered_ns(fake: FakePug) -> list[int]:
    return sorted(e.custom_properties["n"].int_value for e in fake.delivered_events())


def test_a_torn_last_record_is_skipped_and_everything_before_and_after_is_delivered(
    server: ConnectServer, fake: FakePug, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool, path = left_on_disk(tmp_path, 50)
    size = path.stat().st_size
    with path.open("ab") as file:  # a crash 20 bytes into a 300-byte record
        file.write(HEADER.pack(b"\xa5\x50", 300, 12345) + b"x" * 20)
    send_from(spool, server, caplog, more=range(50, 60))  # more: tracked after it
    assert delivered_ns(fake) == list(range(60))
    assert (
        f"pug spool: {path}: skipped 30 damaged byte(s) at offset {size} "
        "(a write cut short by a crash); the records after it are kept"
    ) in caplog.messages
    assert list(spool.iterdir()) == []


def test_a_corrupt_record_is_skipped_and_the_records_after_it_are_delivered(
    server: ConnectServer, fake: FakePug, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool, path = left_on_disk(tmp_path, 50)
    data = bytearray(path.read_bytes())
    start, _, body = records(bytes(data))[10]
    data[start + HEADER.size + 5] ^= 0xFF  # one flipped bit pattern in the 11th event
    path.write_bytes(bytes(data))
    send_from(spool, server, caplog)
    assert delivered_ns(fake) == [n for n in range(50) if n != 10]
    assert (
        f"pug spool: {path}: skipped {HEADER.size + 1 + len(body)} damaged byte(s) at offset "
        f"{start} (a corrupt record); the records after it are kept"
    ) in caplog.messages
    assert len(MAGIC) < start


def test_events_left_at_close_with_the_server_down_are_sent_by_the_next_client(
    server: ConnectServer, fake: FakePug, google_pb2: GoogleMessages, tmp_path: Path
) -> None:
    spool, _ = left_on_disk(tmp_path, 300)
    on_disk = [identity(e) for e in decode(unsent_events(spool), google_pb2)]
    pug = Pug(api_key="prv_spool", base_url=server.url, spool=spool)
    assert pug.flush(10)
    pug.close()
    stats = pug.stats()
    assert (stats.recovered, stats.enqueued, stats.sent, stats.queue_length) == (300, 300, 300, 0)
    assert [identity(e) for e in fake.delivered_events()] == on_disk


FORKING = """
import multiprocessing, os, sys, time
from pug import BatchConfig, Pug

pug = Pug(api_key="prv_spool", spool=sys.argv[1], batch=BatchConfig(max_wait=60.0))

def child():
    for n in range(1000, 1005):
        pug.track("child", "job.finished", {"n": n})

if __name__ == "__main__":
    for n in range(20):
        pug.track("parent", "job.finished", {"n": n})
    (own,) = os.scandir(sys.argv[1])
    deadline = time.monotonic() + 10
    while os.stat(own).st_size == len(b"PUGSPOOL1\\n"):  # until the writer wrote them
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join()
    print("child", process.exitcode, flush=True)
"""


def test_a_forked_child_sends_only_its_own_events_and_leaves_the_parents_files_alone(
    server: ConnectServer, fake: FakePug, tmp_path: Path
) -> None:
    """The parent's events are on disk (written within 0.05 s) when it forks, and it is
    alive while the child runs: the child neither sends them nor adopts the parent's
    file; both send at their exit (the 60 s max_wait sends nothing before)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    with program(FORKING, [str(spool)], server.url, tmp_path) as parent:
        assert read_line(parent) == "child 0"
        parent.wait(30)
    assert delivered_ns(fake) == [*range(20), *range(1000, 1005)]
    assert list(spool.iterdir()) == []


GEVENT = """
from gevent import monkey

monkey.patch_all()
import sys
import gevent
from pug import BatchConfig, Pug

pug = Pug(api_key="prv_spool", spool=sys.argv[1], batch=BatchConfig(max_wait=0.05))

def job(k):
    for n in range(k * 100, k * 100 + 100):
        pug.track("user_1", "job.finished", {"n": n})
        gevent.sleep(0)

gevent.joinall([gevent.spawn(job, k) for k in range(4)])
print(pug.flush(10), flush=True)
pug.close()
"""


def test_under_gevent_the_spool_delivers_from_greenlets(
    server: ConnectServer, fake: FakePug, tmp_path: Path
) -> None:
    """Its writer is a real thread on bare locks, as the worker is, not a greenlet."""
    spool = tmp_path / "spool"
    spool.mkdir()
    with program(GEVENT, [str(spool)], server.url, tmp_path) as process:
        assert read_line(process) == "True"
        process.wait(30)
    assert delivered_ns(fake) == list(range(400))
    assert list(spool.iterdir()) == []
