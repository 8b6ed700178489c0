"""What gzip buys and costs on a batch of events: bytes on the wire and CPU per event.

    python bench/bench_gzip.py

Builds one BatchCreateRequest of 1000 events as `track()` encodes them: 8 properties with
varied users, order ids and amounts (seeded; only the event ids and times differ from run to run).
Times `gzip.compress(level 1)` of it, which is what ConnectTransport does to request
bodies over 16 KiB, and as the baseline, in the same rounds, the `track()` calls that
encoded it (in-memory transport, no worker sending; most values are new to the client,
so its entry cache misses, unlike the repeated event of the other benchmarks).
Writes bench/results/gzip.md.
"""

from __future__ import annotations

import gzip
import logging
import random
import time

from common import PROPS, median, spread, versions, write
from pug import BatchConfig, Pug
from pug._wire import protobuf as pb
from pug.testing import InMemoryTransport

EVENTS = 1000
ROUNDS = 7


def varied_calls(n: int) -> list[tuple[str, dict[str, object]]]:
    rng = random.Random(42)
    return [
        (
            f"user_{rng.randrange(200)}",
            dict(
                PROPS,
                order_id=f"ord_{rng.getrandbits(40):010x}",
                amount=rng.randrange(100, 50000) / 100,
            ),
        )
        for _ in range(n)
    ]


def main() -> None:
    logging.getLogger("pug").setLevel(logging.CRITICAL)  # close(0) dead-letters the queue
    calls = varied_calls(EVENTS)
    # max_wait long and max_size 1000: the worker never sends while calls are timed.
    batch_config = BatchConfig(max_size=EVENTS, max_wait=3600.0)
    compress_us: list[float] = []
    track_us: list[float] = []
    body = b""
    for _ in range(ROUNDS):
        pug = Pug(api_key="prv_bench", transport=InMemoryTransport(), batch=batch_config)
        start = time.perf_counter()
        for distinct_id, props in calls[:-1]:  # the 1000th would wake the worker
            pug.track(distinct_id, "order.completed", props)
        track_us.append((time.perf_counter() - start) / (EVENTS - 1) * 1e6)
        queued = list(pug._core.queue._items)  # type: ignore[attr-defined]
        pug.close(0)
        body = pb.batch(queued)
        start = time.perf_counter()
        gzip.compress(body, compresslevel=1)
        compress_us.append((time.perf_counter() - start) / len(queued) * 1e6)
    packed = gzip.compress(body, compresslevel=1)
    ratios = [c / t for c, t in zip(compress_us, track_us, strict=True)]
    lines = [
        "# gzip on a batch of events",
        "",
        f"{versions('pug-sdk')}; {EVENTS - 1} events of 8 properties (varied users, order ids "
        f"and amounts), {ROUNDS} rounds.",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| request body, uncompressed | {len(body):,} bytes |",
        f"| request body, gzip level 1 | {len(packed):,} bytes |",
        f"| size ratio | {len(body) / len(packed):.1f}× smaller |",
        f"| gzip µs per event (median, spread) | {median(compress_us):.2f} "
        f"({spread(compress_us, '.2f')}) |",
        f"| track() µs per call of the same events, same rounds | {median(track_us):.2f} "
        f"({spread(track_us, '.2f')}) |",
        f"| gzip per event × track() (median of rounds) | {median(ratios):.2f} |",
    ]
    write("gzip.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
