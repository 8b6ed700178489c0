"""Events per second the dev server ingests from the SDK, against a minimal sink.

    python bench/bench_devserver.py [--events 20000] [--rounds 3]

The SDK (`Pug(base_url=...)`, Connect over HTTP/1.1, batches of 100) tracks 8-property
events to `pug devserver` running in another process, which reads, checks and stores every
event and prints them (at most 1 000 a second by default, the others counted in a line a
second; once with `--lines-per-second 0`, every one): its stdout to a file (what a terminal
costs is not measured), and to a pipe this script reads line by line (every event must be
printed or counted). The baseline, measured in the same run, is the
same client against bench/sink.py (answers every POST without reading it): the ratio is
what the dev server's work costs the client's throughput. Events per second are from the
first `track()` until `flush()` returns, interleaved round by round; the dev server's CPU
seconds per 10 000 events are read from /proc. Writes bench/results/devserver.md.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from common import PROPS, Realistic, machine_lines, median, sink, spread, write
from pug import BatchConfig, Pug
from pug._wire.reader import event_spans
from pug.testing import InMemoryTransport
from pug.transports.base import BATCH_CREATE

_BANNER = "Pug dev server: Connect on "


@contextmanager
def devserver(stdout: str, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes], list[int]]]:
    """`pug devserver` in another process, its stdout to a file ("file") or a pipe read
    here ("pipe"); yields its Connect URL, the process and [events printed or counted as
    not printed] (pipe only)."""
    out_path = Path(tempfile.mkdtemp()) / "stdout"
    out: IO[bytes] | int = out_path.open("wb") if stdout == "file" else subprocess.PIPE
    command = [sys.executable, "-m", "pug", "devserver", "--connect-port", "0", "--grpc-port", "0"]
    command += args
    proc = subprocess.Popen(command, stdout=out)
    lines = [0]
    try:
        if stdout == "file":
            banner = _wait_for_banner(out_path, proc)
        else:
            assert proc.stdout is not None
            banner = proc.stdout.readline().decode()
            threading.Thread(target=_count_lines, args=(proc.stdout, lines), daemon=True).start()
        yield banner.removeprefix(_BANNER).split(",")[0], proc, lines
    finally:
        proc.terminate()
        proc.wait()
        if not isinstance(out, int):
            out.close()


def _wait_for_banner(path: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        first = path.read_text().partition("\n")
        if first[1]:
            return first[0]
        time.sleep(0.02)
    raise RuntimeError("the dev server did not start")


def _count_lines(pipe: IO[bytes], lines: list[int]) -> None:
    for line in pipe:
        told = _NOT_PRINTED.match(line)
        lines[0] += int(told[1].replace(b",", b"")) if told else 1


_NOT_PRINTED = re.compile(rb"\.\.\. ([\d,]+) more events not printed")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def track_all(client: Pug, n: int, realistic: Realistic | None) -> None:
    """n `track()` calls in a loop: the same event, or realistic traffic (prepared)."""
    if realistic is None:
        for _ in range(n):
            client.track("user_42", "order.completed", PROPS)
        return
    pop = realistic.pop
    for _ in range(n):
        distinct_id, properties = pop()
        client.track(distinct_id, "order.completed", properties)


def run(
    client: Pug, n: int, pid: int | None, realistic: Realistic | None = None
) -> tuple[float, float | None]:
    """(events per second, the server's CPU seconds per 10 000 events) for n events: the
    same event, or realistic traffic (a new distinct id and two new values every call)."""
    if realistic is not None:
        realistic.prepare(n)
    cpu = cpu_seconds(pid) if pid else 0.0
    start = time.perf_counter()
    track_all(client, n, realistic)
    if not client.flush(120):
        raise RuntimeError("flush timed out")
    wall = time.perf_counter() - start
    used = (cpu_seconds(pid) - cpu) / n * 10_000 if pid else None
    return n / wall, used


def sdk_batches(n: int, realistic: Realistic | None) -> list[bytes]:
    """The request bodies the SDK sends for n events, as it sends them over Connect (gzip
    above 16 KiB, its default)."""
    transport = InMemoryTransport()
    client = Pug(api_key="prv_bench", transport=transport, batch=BatchConfig(max_size=100))
    if realistic is not None:
        realistic.prepare(n)
    for _ in range(n):
        distinct_id, properties = ("user_42", PROPS) if realistic is None else realistic.pop()
        client.track(distinct_id, "order.completed", properties)
    client.close()
    bodies = [body for method, body in transport.requests if method == BATCH_CREATE]
    if sum(len(event_spans(body)) for body in bodies) != n:
        raise RuntimeError("the SDK did not send every event")
    return bodies


def replay(url: str, bodies: list[bytes], n: int) -> float:
    """Events per second the dev server takes when the SDK's batches come back to back: each
    POSTed over one keep-alive connection once the last one's answer is read (as the SDK
    sends), by a client that does nothing else (the server's own limit)."""
    where = urlsplit(url)
    head = (
        f"POST /{BATCH_CREATE} HTTP/1.1\r\nhost: {where.netloc}\r\n"
        "content-type: application/proto\r\nx-api-key: prv_bench\r\n"
    ).encode()
    requests = [
        head
        + (b"content-encoding: gzip\r\n" if len(body) > 16 * 1024 else b"")
        + b"content-length: %d\r\n\r\n" % len(packed)
        + packed
        for body in bodies
        for packed in [gzip.compress(body, 1) if len(body) > 16 * 1024 else body]
    ]
    with socket.create_connection((where.hostname, where.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answers = sock.makefile("rb")
        start = time.perf_counter()
        for request in requests:
            sock.sendall(request)
            if b" 200 " not in answers.readline():
                raise RuntimeError("the dev server refused a batch")
            length = 0
            while (line := answers.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answers.read(length)
        return n / (time.perf_counter() - start)


# An app that tracks n events and exits without flush() or close(): what is queued goes out
# at exit (within exit_timeout, 5 s by default). It prints when its tracking began and
# ended (time.monotonic(), one clock for every process) and how many were sent by then.
_EXIT_APP = """
import sys, time
sys.path.insert(0, sys.argv[4])
from bench_devserver import track_all
from common import PROPS, Realistic
from pug import BatchConfig, Pug
url, n, offset = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = Pug(api_key="prv_bench", base_url=url, batch=BatchConfig(max_size=100))
client.track("warm_up", "order.completed", PROPS)
client.flush(10)
realistic = None if offset < 0 else Realistic(offset)
if realistic is not None:
    realistic.prepare(n)
first = time.monotonic()
track_all(client, n, realistic)
last = time.monotonic()
print(first, last, client.stats().sent - 1, flush=True)
"""


def exit_burst(url: str, n: int, offset: int | None) -> tuple[float, float]:
    """An app in its own process tracks n events (the same one, or realistic traffic from
    `offset`) and exits: (seconds from its last track() until its process ended, events/s
    its exit delivered in them)."""
    app = subprocess.Popen(
        [sys.executable, "-c", _EXIT_APP, url, str(n), str(-1 if offset is None else offset),
         str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert app.stdout is not None
    _, last, sent = app.stdout.readline().split()
    if app.wait() != 0:
        raise RuntimeError("the app failed")
    seconds = time.monotonic() - float(last)
    return seconds, (n - int(sent)) / seconds


# The exit burst of issue 18: the events an app has queued when it exits.
EXIT_BURST = 10_000


def exit_targets(dev_url: str, sink_url: str) -> list[tuple[str, str, int | None]]:
    """The exit bursts' rows: (name, where the app sends, realistic traffic's first index
    or None for the repeated event)."""
    return [
        ("an app's exit, to the dev server (stdout to a file)", dev_url, None),
        ("an app's exit, to the dev server, realistic traffic", dev_url, 3 * 10**8),
        ("an app's exit, to the sink (baseline)", sink_url, None),
        ("an app's exit, to the sink (baseline), realistic traffic", sink_url, 4 * 10**8),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    batch = BatchConfig(max_size=100)
    names = (
        "dev server, stdout to a file",
        "dev server, stdout to a pipe",
        "dev server, stdout to a file, realistic traffic",
        "dev server, every event printed to a file, realistic traffic",
        "sink (baseline)",
        "sink (baseline), realistic traffic",
    )
    alone = (
        "dev server alone: the SDK's batches back to back",
        "dev server alone: the SDK's batches back to back, realistic traffic",
    )
    rates: dict[str, list[float]] = {name: [] for name in names}
    exits: dict[str, list[float]] = {name: [] for name, _, _ in exit_targets("", "")}
    exit_rates: dict[str, list[float]] = {name: [] for name in exits}
    cpus: dict[str, list[float]] = {name: [] for name in names}
    with (
        devserver("file") as (file_url, file_proc, _),
        devserver("pipe") as (
            pipe_url,
            pipe_proc,
            printed,
        ),
        devserver("file", "--lines-per-second", "0") as (all_url, all_proc, _),
        sink("http") as sink_url,
    ):
        targets = {
            names[0]: (Pug(api_key="prv_bench", base_url=file_url, batch=batch), file_proc.pid),
            names[1]: (Pug(api_key="prv_bench", base_url=pipe_url, batch=batch), pipe_proc.pid),
            names[2]: (Pug(api_key="prv_bench", base_url=file_url, batch=batch), file_proc.pid),
            names[3]: (Pug(api_key="prv_bench", base_url=all_url, batch=batch), all_proc.pid),
            names[4]: (Pug(api_key="prv_bench", base_url=sink_url, batch=batch), None),
            names[5]: (Pug(api_key="prv_bench", base_url=sink_url, batch=batch), None),
        }
        realistic = {names[2]: Realistic(0), names[3]: Realistic(10**8), names[5]: Realistic(0)}
        for client, _ in targets.values():  # warm up: connections, caches
            run(client, 1_000, None)
        for _ in range(args.rounds):
            for name, (client, pid) in targets.items():
                rate, cpu = run(client, args.events, pid, realistic.get(name))
                rates[name].append(rate)
                if cpu is not None:
                    cpus[name].append(cpu)
        for name, traffic in zip(alone, [None, Realistic(2 * 10**8)], strict=True):
            rates[name] = []
            for _ in range(args.rounds):
                bodies = sdk_batches(args.events, traffic)
                rates[name].append(replay(file_url, bodies, args.events))
        for r in range(args.rounds):
            for name, url, realistic_from in exit_targets(file_url, sink_url):
                offset = None if realistic_from is None else realistic_from + r * EXIT_BURST
                seconds, rate = exit_burst(url, EXIT_BURST, offset)
                exits[name].append(seconds)
                exit_rates[name].append(rate)
        expected = 1_000 + args.events * args.rounds  # what the piped one received
        deadline = time.monotonic() + 30
        while printed[0] < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        for client, _ in targets.values():
            client.close(10)
    load_after = os.getloadavg()
    if printed[0] != expected:
        raise RuntimeError(f"the piped dev server printed or counted {printed[0]} of {expected}")
    # Each row against the sink with the same traffic: what the client itself can send.
    base = {n: median(rates[names[5] if n in realistic else names[4]]) for n in names}
    rows = [
        f"| {name} | {median(rates[name]):,.0f} | {spread(rates[name], ',.0f')} | "
        f"{median(rates[name]) / base[name]:.2f}× | "
        + (f"{median(cpus[name]):.2f} |" if cpus[name] else "— |")
        for name in names
    ] + [
        f"| {name} | {median(rates[name]):,.0f} | {spread(rates[name], ',.0f')} | — | — |"
        for name in alone
    ]
    sinks = {"realistic" in n: n for n in exits if "sink" in n}  # the same traffic's
    exit_base = {n: median(exits[sinks["realistic" in n]]) for n in exits}
    exit_rows = [
        f"| {name} | {median(exits[name]):.3f} | {spread(exits[name], '.3f')} | "
        f"{median(exits[name]) / exit_base[name]:.2f}× | {median(exit_rates[name]):,.0f} |"
        for name in exits
    ]
    text = "\n".join(
        [
            "# The dev server's ingestion: SDK → `pug devserver` over Connect",
            "",
            f"`python bench/bench_devserver.py --events {args.events} --rounds {args.rounds}`: "
            f"{args.rounds} interleaved rounds of {args.events:,} 8-property events, batches "
            "of 100, one client per server, each server in its own process (the dev server "
            "reads, checks and stores every event). Target: 50 000 events/s.",
            "",
            "The first rows send the same properties in every event (bench/common.py's "
            "`PROPS`), as an app's repeated event does. The dev server "
            "(`pug.testing.fake.ingest`) splits each event into its fields and judges each "
            "field once by its bytes (a kind, a session id, a property entry), reads each "
            "event's id, time and distinct id every time, and keeps the event's bytes until "
            "a read or the page asks for it. The "
            "realistic rows send what bench_compare.py calls realistic traffic: a new "
            "distinct id on every call and 2 of the 8 values never seen before. The dev "
            "server prints at most 1 000 events a second by default and counts the others "
            "in a line a second (the pipe's reader checks that every event was printed or "
            "counted); one realistic row prints every event (`--lines-per-second 0`).",
            "",
            "Events/s of the first rows run from the first `track()` until `flush()` "
            "returns: the client's own work counts (realistic traffic costs the caller "
            "several times the repeated event, and its worker shares the GIL with the "
            "caller), so the sinks' rows say what the client alone can send. The last two "
            "rows take the client out: the same SDK-made batches (gzip above 16 KiB, as the "
            "SDK sends them) POSTed back to back over one connection, each once the last "
            "one's answer is read, by a client doing nothing else: the dev server's own "
            "limit (stdout to a file).",
            "",
            "| server | events/s (median) | range | of the sink's (same traffic) | "
            "server CPU s / 10k events |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"An app's exit burst, the case issue 18 names: an app in its own process tracks "
            f"{EXIT_BURST:,} events in a loop and exits without flush() or close(), so what "
            "it queued goes out at exit, within `exit_timeout` (5 s by default). Seconds "
            "from its last `track()` until its process ended (interpreter shutdown "
            "included), and the events its exit delivered a second in them (all but the few "
            "sent while it tracked).",
            "",
            f"| {EXIT_BURST:,} events at exit | seconds to the app's end (median) | range | "
            "× the sink's (same traffic) | events/s delivered at exit (median) |",
            "|---|---|---|---|---|",
            *exit_rows,
            "",
            *machine_lines(load_before, load_after),
            "",
        ]
    )
    write("devserver.md", text)


if __name__ == "__main__":
    main()
