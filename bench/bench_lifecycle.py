"""What the edges of a client's life cost the application: handing undelivered items to
`on_error`, and the first `track()` of a kind string right after the client is made.

    python bench/bench_lifecycle.py

1. Hand-over: 100 000 events are queued with the server down (nothing listens), then
   `close(timeout=2)` gives them to `on_error`. Reported: the time `on_error` calls take
   per item as the worker makes them (wrapping included, the handler itself a no-op), the
   whole `close()`, and as the baseline in the same run what decoding one item into its
   protobuf message (betterproto2) costs, which is what the hand-over did before.
2. First call: in fresh interpreters, a client is made, then the same well-known kind
   string is tracked twice; the first call's extra cost over the second is what the
   application pays for anything done lazily. Also reported: how long construction takes.

Writes bench/results/lifecycle.md.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap
import time

from common import median, spread, versions, write
from pug import BatchConfig, Pug, PugError, RetryPolicy, Undelivered

BACKLOG = 100_000
ROUNDS = 5
FRESH_PROCESSES = 15


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def hand_over_round() -> dict[str, float]:
    """One client, 100 000 events queued, the server down: close(timeout=2)."""
    spent = 0.0
    count = 0
    last = time.perf_counter()

    def on_error(error: PugError, items: list[Undelivered]) -> None:
        nonlocal spent, count
        count += len(items)
        spent += time.perf_counter() - last

    pug = Pug(
        api_key="prv_bench",
        base_url=closed_port_url(),
        batch=BatchConfig(max_wait=60.0, max_queue_size=BACKLOG),
        retry=RetryPolicy(base=60.0, cap=60.0),
        on_error=on_error,
    )
    for i in range(BACKLOG):
        pug.track("user_1", "job.finished", {"i": i, "plan": "pro"})
    worker = pug._core._worker
    assert worker is not None
    # Time each on_error call from the moment the worker starts handing its items over.
    original = worker._dead_letter

    def timed(error: PugError, items: list[object]) -> None:
        nonlocal last
        last = time.perf_counter()
        original(error, items)  # type: ignore[arg-type]

    worker._dead_letter = timed  # type: ignore[method-assign]
    start = time.perf_counter()
    pug.close(timeout=2.0)
    close_s = time.perf_counter() - start
    assert count == BACKLOG, count
    return {"per_item_us": spent / count * 1e6, "close_s": close_s}


def decode_baseline() -> float:
    """µs to decode one queued item into its betterproto2 message (the old hand-over)."""
    from pug.testing import InMemoryTransport

    pug = Pug(
        api_key="prv_bench",
        transport=InMemoryTransport(),
        batch=BatchConfig(max_wait=60.0, max_size=1000),
    )
    for i in range(999):  # one short of max_size: all stay queued
        pug.track("user_1", "job.finished", {"i": i, "plan": "pro"})
    items = list(pug._core.queue._items)  # type: ignore[attr-defined]
    start = time.perf_counter()
    for item in items:
        Undelivered(item).message  # noqa: B018  (decoding is the point)
    took = time.perf_counter() - start
    pug.close(0.1)
    return took / len(items) * 1e6


FIRST_CALL = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    from pug import BatchConfig, Pug
    from pug.testing import InMemoryTransport
    t1 = time.perf_counter()
    pug = Pug(api_key="prv_bench", transport=InMemoryTransport(), batch=BatchConfig(max_wait=60))
    t2 = time.perf_counter()
    pug.track("user_1", "feature_used", {"feature_id": "export"})
    t3 = time.perf_counter()
    pug.track("user_1", "feature_used", {"feature_id": "export"})
    t4 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "construct": t2 - t1, "first": t3 - t2, "next": t4 - t3}))
    """
)


def first_call_round() -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, check=True
    ).stdout
    return {k: v * 1000 for k, v in json.loads(out).items()}  # milliseconds


def main() -> None:
    logging.getLogger("pug").setLevel(logging.CRITICAL)  # 100 "not delivered" lines a round
    hand = [hand_over_round() for _ in range(ROUNDS)]
    base = [decode_baseline() for _ in range(ROUNDS)]
    per_item = [h["per_item_us"] for h in hand]
    closes = [h["close_s"] for h in hand]
    firsts = [first_call_round() for _ in range(FRESH_PROCESSES)]
    extra = [f["first"] - f["next"] for f in firsts]
    lines = [
        "# The edges of a client's life: on_error hand-over, the first track()",
        "",
        f"{versions('pug-sdk', 'betterproto2')}; Python {sys.version.split()[0]}.",
        "",
        f"## Handing {BACKLOG:,} undelivered events to on_error ({ROUNDS} rounds)",
        "",
        "| measurement | median | spread |",
        "|---|---:|---:|",
        f"| on_error hand-over, µs per item | {median(per_item):.3f} | {spread(per_item, '.3f')} |",
        f"| baseline: decode one item (betterproto2), µs | {median(base):.1f} | {spread(base)} |",
        f"| hand-over × decode | {median(per_item) / median(base):.4f} | |",
        f"| close(timeout=2) with the backlog, s | {median(closes):.2f} "
        f"| {spread(closes, '.2f')} |",
        "",
        f"## The first track() of a kind string ({FRESH_PROCESSES} fresh interpreters, ms)",
        "",
        "| measurement | median | spread |",
        "|---|---:|---:|",
    ]
    for key, label in [
        ("import", "`import pug`"),
        ("construct", "`Pug(...)` (imports the well-known events)"),
        ("first", "first `track()` of a well-known kind string"),
        ("next", "the same call again"),
    ]:
        values = [f[key] for f in firsts]
        lines.append(f"| {label} | {median(values):.3f} | {spread(values, '.3f')} |")
    lines.append(f"| first − next | {median(extra):.3f} | {spread(extra, '.3f')} |")
    write("lifecycle.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
