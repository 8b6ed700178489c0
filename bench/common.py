"""What the benchmarks share: the event, sinks in their own processes, medians."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"

# The same 8-property event for every SDK.
PROPS = {
    "amount": 49.99,
    "currency": "USD",
    "order_id": "ord_8f14e45f",
    "items": 3,
    "coupon": "SPRING",
    "gift": True,
    "source": "checkout_page",
    "ratio": 0.25,
}


@contextmanager
def sink(kind: str = "http") -> Iterator[str]:
    """A local sink in another process; yields its base URL."""
    port_file = Path(tempfile.mkdtemp()) / "port"
    proc = subprocess.Popen([sys.executable, str(HERE / "sink.py"), kind, str(port_file)])
    try:
        deadline = time.monotonic() + 15
        while not (port_file.exists() and port_file.read_text()):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the {kind} sink did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        proc.terminate()
        proc.wait()


def sink_count(url: str) -> int:
    with urllib.request.urlopen(url + "/count") as r:
        return int(r.read())


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str = ".1f") -> str:
    return f"{min(values):{fmt}}–{max(values):{fmt}}"


def versions(*dists: str) -> str:
    return ", ".join(f"{d} {version(d)}" for d in dists)


def machine_lines(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> list[str]:
    """The lines under a result that say what the machine was doing and what ran."""
    before, after = (", ".join(f"{x:.2f}" for x in load) for load in (load_before, load_after))
    return [
        f"Load average (1, 5, 15 min) before: {before}; after: {after} "
        f"({os.cpu_count()} CPUs, shared with other work).",
        f"Python {platform.python_version()}, {platform.machine()}; {versions('pug-sdk')}.",
    ]


def write(name: str, text: str) -> None:
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(text)


class Realistic:
    """Arguments of realistic traffic: a new distinct id on every call, and 2 of the 8
    values (an order id, an amount) never seen before; built ahead, outside the timings."""

    def __init__(self, offset: int) -> None:
        self.next_index = offset  # contenders apart: no SDK sees another's ids (no matter)
        self.queued: list[tuple[str, dict[str, object]]] = []
        self.pop = self.queued.pop

    def prepare(self, n: int) -> None:
        start, self.next_index = self.next_index, self.next_index + n
        self.queued[:] = [
            (f"user_{i:09x}", dict(PROPS, order_id=f"ord_{i:09x}", amount=i / 100 + 0.01))
            for i in range(start + n - 1, start - 1, -1)
        ]  # reversed: pop() from the end gives them in order
