"""The cost of `track()` against posthog-python's `capture()`, measured in the same run.

    python bench/bench_track.py [--rounds 5] [--calls 2000] [--deliver 20000]

1. Caller path: the time of each call (median and p99), for the same 8-property custom
   event (and, for this SDK, the same as a typed catalog event), interleaved A B A B.
2. Total CPU per delivered event: process CPU (all threads) from the first call until
   every event is delivered: this SDK through the in-memory transport, posthog-python
   to a minimal local HTTP sink running in another process.
Writes a Markdown table to bench/results/track.md.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
from collections.abc import Callable

from common import PROPS, sink, sink_count, versions, write
from pug import Pug
from pug.events import Purchase
from pug.testing import InMemoryTransport


def typed_event() -> Purchase:
    return Purchase(product_id="ord_8f14e45f", amount=49.99, currency="USD", quantity=3)


def per_call_ns(call: Callable[[int], object], n: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        call(i)
        out.append(clock() - start)
    return out


def p99(values: list[int]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--deliver", type=int, default=20_000)
    args = parser.parse_args()
    logging.getLogger("posthog").setLevel(logging.CRITICAL)
    from posthog import Posthog

    with sink("http") as sink_url:
        transport = InMemoryTransport()
        pug = Pug(api_key="prv_bench", transport=transport)
        ph = Posthog(
            "phc_bench", host=sink_url, flush_interval=0.5, max_queue_size=args.deliver * 2
        )
        callers: dict[str, tuple[Callable[[int], object], Callable[[], object]]] = {
            "pug track(), custom 8 properties": (
                lambda i: pug.track("user_42", "order.completed", PROPS),
                pug.flush,
            ),
            "pug track(), typed Purchase": (
                lambda i: pug.track("user_42", typed_event()),
                pug.flush,
            ),
            "posthog capture(), 8 properties": (
                lambda i: ph.capture("order.completed", distinct_id="user_42", properties=PROPS),
                ph.flush,
            ),
        }
        samples: dict[str, list[int]] = {name: [] for name in callers}
        for call, flush in callers.values():  # warm up
            per_call_ns(call, 200)
            flush()
        for _ in range(args.rounds):
            for name, (call, flush) in callers.items():
                samples[name] += per_call_ns(call, args.calls)
                flush()

        cpu: dict[str, list[float]] = {"pug (in-memory transport)": [], "posthog (local sink)": []}
        for _ in range(3):
            delivered = len(transport.events())
            start = time.process_time()
            for _ in range(args.deliver):
                pug.track("user_42", "order.completed", PROPS)
            pug.flush()
            cpu["pug (in-memory transport)"].append(
                (time.process_time() - start) / args.deliver * 1e6
            )
            assert len(transport.events()) - delivered == args.deliver
            before = sink_count(sink_url)
            start = time.process_time()
            for _ in range(args.deliver):
                ph.capture("order.completed", distinct_id="user_42", properties=PROPS)
            ph.flush()
            cpu["posthog (local sink)"].append((time.process_time() - start) / args.deliver * 1e6)
            assert sink_count(sink_url) > before
        pug.close()
        ph.shutdown()

    base = samples["posthog capture(), 8 properties"]
    lines = [
        f"`track()` vs {versions('posthog')} ({platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}; {args.rounds} interleaved rounds "
        f"of {args.calls} calls; CPU over 3 × {args.deliver} delivered events).",
        "",
        "| caller path | median µs | p99 µs | median × posthog | p99 × posthog |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in samples.items():
        median, tail = statistics.median(values) / 1e3, p99(values) / 1e3
        lines.append(
            f"| {name} | {median:.1f} | {tail:.1f} | "
            f"{median / (statistics.median(base) / 1e3):.3f} | {tail / (p99(base) / 1e3):.3f} |"
        )
    lines += ["", "| CPU per delivered event | median µs | × posthog |", "|---|---:|---:|"]
    ph_cpu = statistics.median(cpu["posthog (local sink)"])
    for name, values in cpu.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {median / ph_cpu:.3f} |")
    write("track.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
