"""CPU instructions per `track()` call, counted by valgrind, for any git revisions.

    python bench/instructions.py [REV ...] [--calls 400] [--cases custom context]

Wall-clock figures on a shared machine move by tens of percent from run to run; counted
instructions do not, so this is how each optimization of the hot path is measured. Each
revision (default: the working tree) is checked out in a temporary git worktree and put
first on PYTHONPATH; a child interpreter makes a client (in-memory transport, no batch
sent during the count), warms it up, and calls `track()` N times under
`valgrind --tool=callgrind`. The count of a run with 0 calls is subtracted, so the figure
is instructions per call. The clock is pinned (`time.time_ns` returns a constant) so
every revision does the same work for the same millisecond; the worker thread idles.
The "realistic" case is real traffic's call: a distinct id the client has not seen and 2
of the 8 values new (an order id and an amount) on every call. The "delivered" case
counts the whole process instead, caller and worker: 5×N events
with default settings through Connect to a local sink (bench/sink.py, another process,
not counted), until flush() returns.

Needs valgrind (Debian: `apt install valgrind`). Writes bench/results/instructions.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import sink, write

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import os, sys, time
time.time_ns = lambda: 1_790_000_000_123_456_789  # pinned: the same ms for every call
import pug as sdk
from pug import BatchConfig, Pug
from pug.events import Purchase
from pug.testing import InMemoryTransport
PROPS = {"amount": 49.99, "currency": "USD", "order_id": "ord_8f14e45f", "items": 3,
         "coupon": "SPRING", "gift": True, "source": "checkout_page", "ratio": 0.25}
typed = Purchase(product_id="ord_8f14e45f", amount=49.99, currency="USD", quantity=3)
case, n = sys.argv[2], int(sys.argv[1])
if case == "delivered":
    # Batches of exactly 100 (the default size; no timer sends a part of one): gzip's work
    # per event then depends on the events, not on when the worker happened to wake.
    pug = Pug(api_key="prv_bench", base_url=os.environ["BENCH_SINK"],
              batch=BatchConfig(max_wait=600.0))
    pug.track("user_42", "order.completed", PROPS)
    assert pug.flush(60)
    for _ in range(n):
        pug.track("user_42", "order.completed", PROPS)
    assert pug.flush(600)
    os._exit(0)
pug = Pug(api_key="prv_bench", transport=InMemoryTransport(),
          batch=BatchConfig(max_size=1000, max_wait=1000.0))
# Built for the largest run whatever n is (so the 0-call run builds them too): an order
# id and an amount that the client has not seen, as in real traffic, and for "realistic"
# a distinct id not seen either.
size = int(sys.argv[3])
VARIED = iter([dict(PROPS, order_id=f"ord_{i:08x}", amount=i / 100) for i in range(size)])
USERS = iter([f"user_{i:08x}" for i in range(size)])
calls = {
    "custom": lambda: pug.track("user_42", "order.completed", PROPS),
    "varied": lambda: pug.track("user_42", "order.completed", next(VARIED)),
    "realistic": lambda: pug.track(next(USERS), "order.completed", next(VARIED)),
    "typed": lambda: pug.track("user_42", typed),
    "context": lambda: pug.track("order.completed", PROPS),
}
call = calls[case]
if case == "context":  # entered once: what a request's calls pay, not its entry
    sdk.context(distinct_id="user_42", properties={"plan": "pro", "region": "eu"}).__enter__()
for _ in range(int(sys.argv[4])):  # warm-up: the client in its steady state
    call()
# The warm-up's events sent: the worker's thread has started its loop (it imports asyncio
# there, off the caller's path), so neither run counts part of that.
assert pug.flush(60)
for _ in range(n):
    call()
os._exit(0)  # no exit flush: only the calls are counted
"""

CASES = {
    "custom": "track(), custom 8 properties",
    "varied": "track(), the same with 2 values new each call",
    "realistic": "track(), realistic: a new distinct id and 2 new values each call",
    "typed": "track(), typed Purchase (built once)",
    "context": "track() in a context (its distinct id, 2 properties), custom 8 properties",
    "delivered": "per event delivered over Connect (caller + worker)",
}
SCALE = {"custom": 1, "varied": 1, "realistic": 1, "typed": 1, "context": 1, "delivered": 5}


# Calls before the count: past the 256th different value a key turns volatile
# (pug._ingest.encode.VOLATILE_AFTER), so every case is counted in its steady state.
WARM_UP = 300


def instructions(tree: Path, calls: int, case: str, sink_url: str, size: int) -> int:
    env = {
        **os.environ,
        "PYTHONPATH": f"{tree / 'runtime'}:{tree / 'generated'}",
        "BENCH_SINK": sink_url,
        # String hashes, and with them dict probe counts, change with the seed: fixed, so
        # the same revision counts the same from run to run.
        "PYTHONHASHSEED": "0",
    }
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-c", CHILD, str(calls), case, str(size), str(WARM_UP)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError("valgrind printed no count:\n" + out.stderr[-2000:])
    return int(found.group(1))


def per_call(tree: Path, calls: int, case: str, sink_url: str) -> float:
    n = calls * SCALE[case]
    size = n + WARM_UP  # the warm-up's calls too
    return (
        instructions(tree, n, case, sink_url, size) - instructions(tree, 0, case, sink_url, size)
    ) / n


def describe(rev: str | None) -> str:
    if rev is None:
        return "working tree"
    line = subprocess.run(
        ["git", "log", "-1", "--format=%h %s", rev], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return line if len(line) <= 90 else line[:87] + "..."


def measure(rev: str | None, calls: int, sink_url: str, cases: list[str]) -> dict[str, float]:
    if rev is None:
        return {case: per_call(REPO, calls, case, sink_url) for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), rev], cwd=REPO)
        try:
            return {case: per_call(tree, calls, case, sink_url) for case in cases}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("revs", nargs="*", help="git revisions (default: the working tree)")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()
    revs: list[str | None] = list(args.revs) or [None]
    cases: list[str] = args.cases
    with sink("http") as url, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(lambda r: measure(r, args.calls, url, cases), revs))
    first = results[0]
    lines = [
        f"Instructions per `track()` call (valgrind callgrind, {args.calls} calls, clock "
        f"pinned; Python {sys.version.split()[0]}). Ratios against the first row.",
        "",
        "| revision | " + " | ".join(f"{CASES[c]} | ×" for c in cases) + " |",
        "|---|" + "---:|---:|" * len(cases),
    ]
    for rev, result in zip(revs, results, strict=True):
        cells = " | ".join(f"{result[c]:,.0f} | {result[c] / first[c]:.2f}" for c in cases)
        lines.append(f"| {describe(rev)} | {cells} |")
    if "context" in cases and "custom" in cases:  # issue 16's target: at most 1.25
        lines += [
            "",
            "Context over custom: "
            + ", ".join(
                f"{describe(rev)}: {r['context'] / r['custom']:.2f}×"
                for rev, r in zip(revs, results, strict=True)
            ),
        ]
    # A run of some cases only keeps the full table of the last full run.
    write(
        "instructions.md" if cases == list(CASES) else "instructions-cases.md",
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
