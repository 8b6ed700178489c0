"""Events per second delivered end to end, per transport, against posthog-python.

    python bench/bench_delivery.py [--events 10000] [--rounds 3]

One process tracks 8-property events (batches of 100) to a local server in another
process: this SDK over Connect (HTTP/1.1) and over gRPC (h2c), posthog-python to a
minimal HTTP sink; and this SDK to its in-memory transport (FakePug decodes and checks
every event in this process, so its CPU is counted too). Reports delivered events per
second (first call until the last is acknowledged) and the process's CPU seconds per
10 000 events, interleaved round by round. Writes bench/results/delivery.md.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from collections.abc import Callable

from common import PROPS, median, sink, spread, versions, write
from pug import BatchConfig, Pug
from pug.testing import InMemoryTransport


def run(track: Callable[[], object], flush: Callable[[], object], n: int) -> tuple[float, float]:
    """(events per second, CPU seconds per 10 000 events) for n events."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        track()
    flush()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, cpu / n * 10_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("posthog").setLevel(logging.CRITICAL)
    from posthog import Posthog

    batch = BatchConfig(max_size=100)
    with sink("http") as http_url, sink("grpc") as grpc_url:
        connect = Pug(api_key="prv_bench", base_url=http_url, batch=batch)
        grpc = Pug(api_key="prv_bench", base_url=grpc_url, transport="grpc", batch=batch)
        memory = Pug(api_key="prv_bench", transport=InMemoryTransport(), batch=batch)
        ph = Posthog("phc_bench", host=http_url, flush_at=100, max_queue_size=args.events * 2)
        contenders: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "pug, Connect over HTTP/1.1": (
                lambda: connect.track("user_42", "order.completed", PROPS),
                lambda: connect.flush(60),
            ),
            "pug, gRPC over h2c": (
                lambda: grpc.track("user_42", "order.completed", PROPS),
                lambda: grpc.flush(60),
            ),
            "pug, InMemoryTransport": (
                lambda: memory.track("user_42", "order.completed", PROPS),
                lambda: memory.flush(60),
            ),
            "posthog-python, HTTP sink": (
                lambda: ph.capture("order.completed", distinct_id="user_42", properties=PROPS),
                ph.flush,
            ),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        for track, flush in contenders.values():  # warm up connections and caches
            run(track, flush, 500)
        for _ in range(args.rounds):
            for name, (track, flush) in contenders.items():
                results[name].append(run(track, flush, args.events))
        for client in (connect, grpc, memory):
            assert client.stats().failed == 0
            client.close()
        ph.shutdown()

    base_rate = median([r for r, _ in results["posthog-python, HTTP sink"]])
    base_cpu = median([c for _, c in results["posthog-python, HTTP sink"]])
    lines = [
        f"Delivery to a local server, 8-property events in batches of 100 "
        f"({versions('posthog')}; {platform.python_implementation()} "
        f"{platform.python_version()}; {args.rounds} interleaved rounds of {args.events}).",
        "",
        "| sender | events/s (median) | spread | × posthog | CPU s per 10k events | × posthog |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in results.items():
        rates, cpus = [r for r, _ in values], [c for _, c in values]
        lines.append(
            f"| {name} | {median(rates):,.0f} | {spread(rates, ',.0f')} | "
            f"{median(rates) / base_rate:.2f} | {median(cpus):.3f} | "
            f"{median(cpus) / base_cpu:.3f} |"
        )
    write("delivery.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
