"""The durable spool against the in-memory queue, in the same run.

    python bench/bench_spool.py [--rounds 3] [--calls 5000] [--events 50000]

Clients sending the same 8-property event to one local HTTP sink (another process): one
with the in-memory queue, one with `spool=` (a temporary directory, fsync off, and once
with fsync on for its cost); and both to the in-memory transport, without a server process,
for what the client itself can deliver on the machine. Interleaved round by round:

1. Caller path: the time of each `track()` call (median and p99), the server up, while
   the worker (and the spool's writer) run as they do in production; 500 calls a client
   at a time, client after client.
2. Delivery: events per second from the first call until the last is acknowledged, and
   the process's CPU (all threads) per delivered event.

Targets (issue 17): the spool's caller path at most 1.5× the in-memory client's, its CPU
per delivered event at most 2×, and at least 50 000 events/s. Writes bench/results/spool.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

from bench_track import p99, per_call_ns
from common import PROPS, median, sink, write
from pug import BatchConfig, Pug, Spool
from pug.testing import InMemoryTransport


def deliver(pug: Pug, n: int) -> tuple[float, float]:
    """(events per second, CPU µs per event) for n events, first call to last answer."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        pug.track("user_42", "order.completed", PROPS)
    assert pug.flush(120)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    batch = BatchConfig(max_size=100)
    with (
        sink("http") as url,
        tempfile.TemporaryDirectory() as a,
        tempfile.TemporaryDirectory() as b,
        tempfile.TemporaryDirectory() as c,
    ):
        clients = {
            "in memory": Pug(api_key="prv_bench", base_url=url, batch=batch),
            "spool": Pug(api_key="prv_bench", base_url=url, batch=batch, spool=a),
            "spool, fsync": Pug(
                api_key="prv_bench", base_url=url, batch=batch, spool=Spool(b, fsync=True)
            ),
            # No server process: what the client itself can deliver on this machine.
            "in memory → InMemoryTransport": Pug(
                api_key="prv_bench", transport=InMemoryTransport(), batch=batch
            ),
            "spool → InMemoryTransport": Pug(
                api_key="prv_bench", transport=InMemoryTransport(), batch=batch, spool=c
            ),
        }
        calls: dict[str, list[int]] = {name: [] for name in clients}
        rates: dict[str, list[float]] = {name: [] for name in clients}
        cpus: dict[str, list[float]] = {name: [] for name in clients}
        for pug in clients.values():  # warm up connections, caches, files
            deliver(pug, 1000)
        for _ in range(args.rounds):
            # The calls in chunks of 500, client after client: the machine's load drifts.
            for _ in range(args.calls // 500):
                for name, pug in clients.items():
                    track: Callable[[int], object] = lambda i, pug=pug: pug.track(  # noqa: E731
                        "user_42", "order.completed", PROPS
                    )
                    calls[name] += per_call_ns(track, 500)
            for name, pug in clients.items():
                assert pug.flush(60)
                rate, cpu = deliver(pug, args.events)
                rates[name].append(rate)
                cpus[name].append(cpu)
        for pug in clients.values():
            assert pug.stats().failed == 0
            pug.close()

    base_call = statistics.median(calls["in memory"])
    base_cpu = median(cpus["in memory"])
    lines = [
        f"The spool against the in-memory queue, 8-property events in batches of 100 to a "
        f"local HTTP sink ({platform.python_implementation()} {platform.python_version()}; "
        f"{args.rounds} interleaved rounds of {args.calls} timed calls and "
        f"{args.events} delivered events; the spool in a temporary directory on the "
        "machine's disk).",
        "",
        "| client | track() median / p99 (µs) | × in memory | delivered events/s "
        "(median) | CPU per delivered event (µs) | × in memory |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in clients:
        call = statistics.median(calls[name])
        lines.append(
            f"| {name} | {call / 1000:.2f} / {p99(calls[name]) / 1000:.1f} | "
            f"{call / base_call:.2f} | {median(rates[name]):,.0f} | "
            f"{median(cpus[name]):.2f} | {median(cpus[name]) / base_cpu:.2f} |"
        )
    spool_call = statistics.median(calls["spool"]) / base_call
    spool_cpu = median(cpus["spool"]) / base_cpu
    spool_rate = median(rates["spool"])
    base_ratio = spool_rate / median(rates["in memory"])
    lines += [
        "",
        "Targets (issue 17), spool with fsync off: track() ≤ 1.5× — "
        f"{spool_call:.2f}× {'met' if spool_call <= 1.5 else 'NOT met'}; CPU per delivered "
        f"event ≤ 2× — {spool_cpu:.2f}× {'met' if spool_cpu <= 2 else 'NOT met'}; delivery "
        f"≥ 50 000 events/s — {spool_rate:,.0f} {'met' if spool_rate >= 50_000 else 'NOT met'} "
        f"({base_ratio:.2f}× the in-memory client's to the same sink).",
    ]
    write("spool.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
