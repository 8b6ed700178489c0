"""Cold start: `import pug`, `Pug(...)` and the first `track()`, in a fresh interpreter per
sample, against posthog-python's `import posthog`, `Posthog(...)` and first `capture()`
measured in the same run (samples interleaved, so both see the same machine load).

    python bench/bench_coldstart.py [--samples 21]

What a serverless function or a short script pays before its first event is queued. Each
sample is a new `python` process timing the three steps with `perf_counter`, and the
process's CPU time over them (interpreter start-up is not counted: it is the same for
both), then leaving with `os._exit` so no exit flush is timed. Modules are read from their
cached bytecode, as from an installed wheel: the children may write it
(PYTHONDONTWRITEBYTECODE is dropped), and one run of each program before the samples
writes it. The client points at a closed port on 127.0.0.1: nothing is sent during the
count. One more `pug` run under `python -X importtime` lists the heaviest modules the
three steps import on the caller's thread: from `import pug` on (not the interpreter's
start-up, `site` and what it imports), and with the worker's thread held back (it imports
asyncio when it starts, which the caller does not wait for; it is not started in that run).
Writes bench/results/coldstart.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

from common import median, spread, versions, write

PUG = """
import time
c0, t0 = time.process_time(), time.perf_counter()
import pug
t1 = time.perf_counter()
client = pug.Pug(api_key="prv_bench", base_url="http://127.0.0.1:9")
t2 = time.perf_counter()
client.track("user_42", "order.completed", {"amount": 49.99, "currency": "USD"})
t3, c3 = time.perf_counter(), time.process_time()
print(t1 - t0, t2 - t1, t3 - t2, c3 - c0)
import os; os._exit(0)
"""

POSTHOG = """
import time
c0, t0 = time.process_time(), time.perf_counter()
import posthog
t1 = time.perf_counter()
client = posthog.Posthog("phc_bench", host="http://127.0.0.1:9")
t2 = time.perf_counter()
client.capture("order.completed", distinct_id="user_42",
               properties={"amount": 49.99, "currency": "USD"})
t3, c3 = time.perf_counter(), time.process_time()
print(t1 - t0, t2 - t1, t3 - t2, c3 - c0)
import os; os._exit(0)
"""

# Before PUG in the `-X importtime` run: a marker after the interpreter's start-up, and the
# worker's thread recorded instead of started (see the module's docstring).
CALLERS_PATH = """
import _thread, sys
_thread.start_new_thread = lambda function, args: 0
sys.stderr.write("--- import pug\\n")
"""
MARKER = "--- import pug\n"

STEPS = ("import", "client", "first event")  # wall-clock; then the CPU of all three
# Bytecode cached, as an installed package has it (compiling the sources would be timed).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def sample(program: str) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, env=ENV
    ).stdout
    return [float(x) * 1000 for x in out.split()]


def heaviest_imports(program: str, count: int = 12) -> list[tuple[str, float]]:
    """The modules imported at the top level (or by the SDK's own modules) that took the
    most time, cumulative, from one `-X importtime` run of the caller's path."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", CALLERS_PATH + program],
        capture_output=True,
        text=True,
        check=True,
        env=ENV,
    ).stderr
    rows = []
    for line in err.split(MARKER, 1)[1].splitlines():
        found = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if found and (not found.group(2).strip(" ") and len(found.group(2)) <= 3):
            rows.append((found.group(3), int(found.group(1)) / 1000))
    return sorted(rows, key=lambda row: -row[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=21)
    args = parser.parse_args()
    runs: dict[str, list[list[float]]] = {"pug": [], "posthog-python": []}
    sample(PUG), sample(POSTHOG)  # writes the bytecode caches; not counted
    for _ in range(args.samples):  # interleaved: both see the same load
        runs["pug"].append(sample(PUG))
        runs["posthog-python"].append(sample(POSTHOG))
    totals = {name: [sum(s[: len(STEPS)]) for s in samples] for name, samples in runs.items()}
    lines = [
        f"Cold start, median of {args.samples} fresh interpreters per SDK, interleaved "
        f"(ms; Python {sys.version.split()[0]}; {versions('posthog')}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores). Wall-clock per step; CPU: the "
        "process's CPU time over the three (any thread), which the machine's load moves less. "
        "Interpreter start-up not counted.",
        "",
        "| SDK | import | client | first event | total | spread of total | × posthog | CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    baseline = median(totals["posthog-python"])
    for name, samples in runs.items():
        steps = [median([s[i] for s in samples]) for i in range(len(STEPS))]
        total = median(totals[name])
        cells = " | ".join(f"{step:.1f}" for step in steps)
        cpu = median([s[len(STEPS)] for s in samples])
        lines.append(
            f"| {name} | {cells} | **{total:.1f}** | {spread(totals[name])} | "
            f"{total / baseline:.2f} | {cpu:.1f} |"
        )
    lines += [
        "",
        "The heaviest imports of pug's three steps on the caller's thread (one "
        "`python -X importtime` run from `import pug` on, the worker's thread held back; "
        "cumulative ms, modules imported by pug's own):",
        "",
        "| module | ms |",
        "|---|---:|",
    ]
    lines += [f"| `{module}` | {ms:.1f} |" for module, ms in heaviest_imports(PUG)]
    write("coldstart.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
