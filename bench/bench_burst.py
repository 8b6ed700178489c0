"""What the worker's turn in a burst costs the caller and buys delivery.

    python bench/bench_burst.py [--events 50000] [--rounds 3]

A caller tracks realistic events in a loop (bench/common.py's `Realistic`) to `pug
devserver` and to bench/sink.py, each in its own process. Once a whole batch waits behind
the one that woke the worker, each further batch's `track()` gives the GIL a turn
(`pug._ingest.core.give_the_gil_a_turn`, a `time.sleep(0)`); the baseline, measured in the
same run, interleaved round by round, is the same client with that turn taken out. For
each: the time of each `track()` call (median, p99, p999) and events per second from the
first `track()` until `flush()` returns. Writes bench/results/burst.md.
"""

from __future__ import annotations

import argparse
import os
import time

from bench_devserver import devserver
from common import Realistic, machine_lines, median, sink, spread, write
from pug import Pug
from pug._ingest import core

TURN = core.give_the_gil_a_turn


def burst(client: Pug, n: int, realistic: Realistic) -> tuple[list[int], float]:
    """Each call's nanoseconds, and events per second to the end of flush()."""
    realistic.prepare(n)
    pop, clock = realistic.pop, time.perf_counter_ns
    times = []
    start = time.perf_counter()
    for _ in range(n):
        distinct_id, properties = pop()
        before = clock()
        client.track(distinct_id, "order.completed", properties)
        times.append(clock() - before)
    if not client.flush(120):
        raise RuntimeError("flush timed out")
    return times, n / (time.perf_counter() - start)


def percentile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] / 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    variants = {"a turn for the worker (the SDK)": TURN, "no turn (baseline)": lambda: None}
    rows: dict[tuple[str, str], dict[str, list[float]]] = {}
    with devserver("file") as (dev_url, _, _), sink("http") as sink_url:
        targets = {"pug devserver": dev_url, "sink": sink_url}
        clients = {
            (target, variant): Pug(api_key="prv_bench", base_url=url)
            for target, url in targets.items()
            for variant in variants
        }
        offset = 0
        for key, client in clients.items():  # warm up: connections, caches
            offset += 1
            burst(client, 1_000, Realistic(offset * 10**8))
            rows[key] = {"median": [], "p99": [], "p999": [], "rate": []}
        for round_ in range(args.rounds):
            order = list(clients.items())
            for key, client in order if round_ % 2 == 0 else reversed(order):
                core.give_the_gil_a_turn = variants[key[1]]
                offset += 1
                times, rate = burst(client, args.events, Realistic(offset * 10**8))
                rows[key]["median"].append(percentile(times, 0.5))
                rows[key]["p99"].append(percentile(times, 0.99))
                rows[key]["p999"].append(percentile(times, 0.999))
                rows[key]["rate"].append(rate)
        core.give_the_gil_a_turn = TURN
        for client in clients.values():
            client.close(10)
    load_after = os.getloadavg()
    table = [
        f"| {target} | {variant} | {median(r['median']):.2f} | {median(r['p99']):.1f} | "
        f"{median(r['p999']):.1f} | {median(r['rate']):,.0f} | {spread(r['rate'], ',.0f')} |"
        for (target, variant), r in rows.items()
    ]
    text = "\n".join(
        [
            "# A burst: the caller's time per `track()` and events per second, with and "
            "without the worker's turn",
            "",
            f"`python bench/bench_burst.py --events {args.events} --rounds {args.rounds}`: "
            f"{args.rounds} interleaved rounds of {args.events:,} realistic events (a new "
            "distinct id and 2 new values each) tracked in a loop, default settings. Medians "
            "of the rounds.",
            "",
            "| server | client | `track()` median µs | p99 µs | p999 µs | events/s | range |",
            "|---|---|---|---|---|---|---|",
            *table,
            "",
            *machine_lines(load_before, load_after),
            "",
        ]
    )
    write("burst.md", text)


if __name__ == "__main__":
    main()
