"""This SDK against posthog-python and Segment (analytics-python), all measured in one run.

    python bench/bench_compare.py [--quick]

Every client sends the same 8-property event to a local HTTP sink in another process
(this SDK over Connect). Contenders run interleaved, A B C A B C, for several rounds;
tables give medians and the spread of the round medians.

1. Caller path: time of each call, median and p99 (this SDK also as a typed Purchase),
   for the all-cached call (the same distinct id and 8 values every call) and for
   REALISTIC TRAFFIC: a distinct id never seen before on every call and 2 of the 8 values
   (order id, amount) new, the same pattern for every SDK. The realistic arguments are
   built before each timed run, outside the timings.
2. CPU per delivered event: process CPU (all threads) from the first call until flush
   returns, 50 000 events (10 000 with --quick); this SDK also with gzip off, via
   InMemoryTransport, and with realistic traffic (posthog-python too). Queues are large
   enough that nothing is dropped; delivery is checked. The upb floor is timed at each
   round's start and end, and each round's CPU is divided by its own floor.
3. Memory per queued event with the sink down (a closed port): tracemalloc growth over
   10 000 queued events, in a fresh client each.
4. Burst: 100 000 calls with each SDK's default settings; delivered vs dropped.
5. Reference costs: deque.append, uuid7, json.dumps(PROPS), upb SerializeToString (the floor).

Writes bench/results/compare.md, and bench/results/compare.png if matplotlib is installed.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import socket
import time
import timeit
import tracemalloc
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import PROPS, RESULTS, Realistic, median, sink, spread, versions, write
from pug import BatchConfig, Pug
from pug.events import Purchase
from pug.ids import uuid7
from pug.testing import InMemoryTransport
from pug.transports.connect import ConnectTransport

POSTHOG = "posthog-python"
SEGMENT = "Segment"
PUG_REALISTIC = "pug, realistic (Connect)"
POSTHOG_REALISTIC = "posthog-python, realistic"
SEGMENT_REALISTIC = "Segment, realistic"
FLUSH_TIMEOUT = 300.0
FLOOR = "upb Event.SerializeToString() (the floor)"
FLOOR_CALLS = 100_000
BUILD = "upb: build the same Event from its parts, then serialize"


@dataclass
class Contender:
    """One client under test: how to track, flush, count deliveries and close."""

    name: str
    track: Callable[[], object]
    flush: Callable[[], object]
    delivered: Callable[[], int]
    close: Callable[[], object]
    # Realistic traffic: builds the next n calls' arguments before a timed run.
    prepare: Callable[[int], None] | None = None


# --- clients -------------------------------------------------------------------------


def sink_events(url: str) -> int:
    with urllib.request.urlopen(url + "/events") as r:
        return int(r.read())


def typed_event() -> Purchase:
    return Purchase(product_id="ord_8f14e45f", amount=49.99, currency="USD", quantity=3)


def pug_contender(name: str, client: Pug, typed: bool = False) -> Contender:
    def track() -> object:
        if typed:
            return client.track("user_42", typed_event())
        return client.track("user_42", "order.completed", PROPS)

    return Contender(
        name, track, lambda: client.flush(FLUSH_TIMEOUT), lambda: client.stats().sent, client.close
    )


def pug_realistic(name: str, client: Pug, offset: int) -> Contender:
    args = Realistic(offset)

    def track() -> object:
        user, props = args.pop()
        return client.track(user, "order.completed", props)

    return Contender(
        name, track, lambda: client.flush(FLUSH_TIMEOUT), lambda: client.stats().sent,
        client.close, args.prepare,
    )  # fmt: skip


def posthog_client(url: str, **settings: Any) -> Any:
    from posthog import Posthog

    return Posthog("phc_bench", host=url, **settings)


def segment_client(url: str, **settings: Any) -> Any:
    import segment.analytics as analytics

    return analytics.Client("wk_bench", host=url, **settings)


def posthog_contender(url: str, **settings: Any) -> Contender:
    client = posthog_client(url, **settings)
    return Contender(
        POSTHOG,
        lambda: client.capture("order.completed", distinct_id="user_42", properties=PROPS),
        lambda: client.flush(FLUSH_TIMEOUT),
        lambda: sink_events(url),
        client.shutdown,
    )


def posthog_realistic(url: str, offset: int, **settings: Any) -> Contender:
    client = posthog_client(url, **settings)
    args = Realistic(offset)

    def track() -> object:
        user, props = args.pop()
        return client.capture("order.completed", distinct_id=user, properties=props)

    return Contender(
        POSTHOG_REALISTIC, track, lambda: client.flush(FLUSH_TIMEOUT), lambda: sink_events(url),
        client.shutdown, args.prepare,
    )  # fmt: skip


def segment_realistic(url: str, offset: int, **settings: Any) -> Contender:
    client = segment_client(url, **settings)
    args = Realistic(offset)

    def track() -> object:
        user, props = args.pop()
        return client.track(user_id=user, event="order.completed", properties=props)

    return Contender(
        SEGMENT_REALISTIC, track, client.flush, lambda: sink_events(url), client.shutdown,
        args.prepare,
    )  # fmt: skip


def segment_contender(url: str, **settings: Any) -> Contender:
    client = segment_client(url, **settings)
    return Contender(
        SEGMENT,
        lambda: client.track(user_id="user_42", event="order.completed", properties=PROPS),
        client.flush,
        lambda: sink_events(url),
        client.shutdown,
    )


def big_queue_contenders(url: str, n: int) -> list[Contender]:
    """Every contender to the sink, queues large enough that nothing is dropped."""
    connect = Pug(api_key="prv_bench", base_url=url, batch=BatchConfig(max_queue_size=n * 2))
    return [
        pug_contender("pug, custom (Connect)", connect),
        pug_contender("pug, typed Purchase (Connect)", connect, typed=True),
        posthog_contender(url, max_queue_size=n * 2),
        segment_contender(url, max_queue_size=n * 2),
        pug_realistic(PUG_REALISTIC, connect, 0),
        posthog_realistic(url, 1 << 32, max_queue_size=n * 2),
        segment_realistic(url, 2 << 32, max_queue_size=n * 2),
    ]


# --- 1. caller path ------------------------------------------------------------------


def per_call_ns(track: Callable[[], object], n: int) -> list[int]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        track()
        out.append(clock() - start)
    return out


def p99(values: list[int]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


def caller_path(contenders: list[Contender], rounds: int, calls: int) -> dict[str, Any]:
    """Per contender: all samples (ns) and the median of each round (µs)."""
    samples: dict[str, list[int]] = {c.name: [] for c in contenders}
    round_medians: dict[str, list[float]] = {c.name: [] for c in contenders}
    for c in contenders:  # warm up
        if c.prepare is not None:
            c.prepare(200)
        per_call_ns(c.track, 200)
        c.flush()
    for _ in range(rounds):
        for c in contenders:
            if c.prepare is not None:
                c.prepare(calls)
            values = per_call_ns(c.track, calls)
            c.flush()
            samples[c.name] += values
            round_medians[c.name].append(median(values) / 1e3)
    return {"samples": samples, "rounds": round_medians}


# --- 2. CPU per delivered event ------------------------------------------------------


def cpu_per_event(c: Contender, n: int) -> float:
    """µs of process CPU per event, first call until flush returns; asserts delivery."""
    if c.prepare is not None:
        c.prepare(n)
    before = c.delivered()
    start = time.process_time()
    for _ in range(n):
        c.track()
    c.flush()
    cpu = time.process_time() - start
    delivered = c.delivered() - before
    assert delivered == n, f"{c.name}: {delivered} of {n} delivered"
    return cpu / n * 1e6


def cpu_rounds(
    contenders: list[Contender], rounds: int, n: int, floor: Callable[[], float]
) -> tuple[dict[str, list[float]], list[float]]:
    """µs per event of each contender, round by round, and each round's upb floor (µs):
    measured at its start and at its end, so the ratio to it is taken on the same
    machine state (the floor itself moves by 2× between runs here)."""
    out: dict[str, list[float]] = {c.name: [] for c in contenders}
    floors: list[float] = []
    for _ in range(rounds):
        before = floor()
        for c in contenders:
            out[c.name].append(cpu_per_event(c, n))
        floors.append((before + floor()) / 2)
    return out, floors


# --- 3. memory per queued event ------------------------------------------------------


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def abandon_queue(client: Any) -> None:
    """Stop posthog/Segment consumers and empty their queue without waiting on retries."""
    for consumer in client.consumers or []:
        consumer.pause()
    while not client.queue.empty():
        client.queue.get_nowait()
        client.queue.task_done()


def unsent_queue(pug: Pug) -> int:
    assert pug.stats().sent == 0, "an event reached a closed port"
    return pug.stats().queue_length


def down_client(kind: str, url: str, n: int) -> tuple[Callable[[], object], Callable[[], int], Any]:
    """(track, events queued, close) for a fresh client pointed at a dead port."""
    if kind == "pug":
        batch = BatchConfig(max_queue_size=n * 2, exit_timeout=0.1)
        pug = Pug(api_key="prv_bench", base_url=url, batch=batch)
        track = pug_contender("pug", pug).track
        return track, lambda: unsent_queue(pug), pug.close
    if kind == POSTHOG:
        client = posthog_client(url, max_queue_size=n * 2)
        track = lambda: client.capture(  # noqa: E731
            "order.completed", distinct_id="user_42", properties=PROPS
        )
    else:
        client = segment_client(url, max_queue_size=n * 2)
        track = lambda: client.track(  # noqa: E731
            user_id="user_42", event="order.completed", properties=PROPS
        )
    return track, client.queue.qsize, lambda: abandon_queue(client)


def queued_bytes(kind: str, url: str, n: int) -> tuple[float, int]:
    """(bytes of traced growth per event, events still queued) for n events."""
    tracemalloc.start()
    track, queued, close = down_client(kind, url, n)
    track()  # first call: lazy set-up, not per-event cost
    gc.collect()
    before = tracemalloc.take_snapshot()
    for _ in range(n):
        track()
    gc.collect()
    after = tracemalloc.take_snapshot()
    in_queue = queued()
    tracemalloc.stop()
    close()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return growth / n, in_queue


def memory_rounds(rounds: int, n: int) -> dict[str, list[tuple[float, int]]]:
    url = closed_port_url()
    kinds = ["pug", POSTHOG, SEGMENT]
    out: dict[str, list[tuple[float, int]]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for kind in kinds:
            out[kind].append(queued_bytes(kind, url, n))
    return out


# --- 4. burst with defaults ----------------------------------------------------------


def burst(c: Contender, n: int) -> dict[str, float]:
    before = c.delivered()
    start = time.perf_counter()
    for _ in range(n):
        c.track()
    calls = time.perf_counter() - start
    c.flush()
    delivered = c.delivered() - before
    c.close()
    return {"delivered": delivered, "dropped": n - delivered, "seconds": calls}


def bursts(url: str, n: int) -> dict[str, dict[str, float]]:
    pug = Pug(api_key="prv_bench", base_url=url)
    out = {"pug (Connect)": burst(pug_contender("pug", pug), n)}
    out["pug (Connect)"]["queue_full"] = pug.stats().dropped_queue_full
    out[POSTHOG] = burst(posthog_contender(url), n)
    out[SEGMENT] = burst(segment_contender(url), n)
    return out


# --- 5. reference costs --------------------------------------------------------------


def floor_timer() -> Callable[[], float]:
    """A function that times the floor once: µs per upb SerializeToString of the Event."""
    from upb_floor import event_message

    serialize = event_message(PROPS).SerializeToString
    return lambda: timeit.timeit(serialize, number=FLOOR_CALLS) / FLOOR_CALLS * 1e6


def reference_costs(rounds: int, number: int) -> dict[str, list[float]]:
    """ns per operation, each round's mean of `number` calls."""
    from upb_floor import event_class, event_message

    cls = event_class()
    msg = event_message(PROPS, cls)
    ms = int(time.time() * 1000)
    d: deque[int] = deque(maxlen=1000)
    ops = {  # statement, its globals
        "deque.append": ("append(1)", {"append": d.append}),
        "pug.ids.uuid7(ms)": ("uuid7(ms)", {"uuid7": uuid7, "ms": ms}),
        "json.dumps(PROPS)": ("dumps(PROPS)", {"dumps": json.dumps, "PROPS": PROPS}),
        FLOOR: ("serialize()", {"serialize": msg.SerializeToString}),
        # What any SDK on upb pays per event before its bytes exist (no id, no clock).
        BUILD: (
            "build(PROPS, cls).SerializeToString()",
            {"build": event_message, "cls": cls, "PROPS": PROPS},
        ),
    }
    out: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        for name, (stmt, names) in ops.items():
            out[name].append(timeit.timeit(stmt, number=number, globals=names) / number * 1e9)
    return out


# --- report --------------------------------------------------------------------------


def ratio(value: float, base: float) -> str:
    return f"{value / base:.3f}" if base else "n/a"


def caller_table(result: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, float]]]:
    samples, rounds = result["samples"], result["rounds"]
    stats = {n: {"median": median(v) / 1e3, "p99": p99(v) / 1e3} for n, v in samples.items()}
    lines = [
        "## 1. Caller path per call",
        "",
        "Realistic rows are compared with the same SDKs' realistic rows (a new distinct id",
        "and 2 new values of 8 on every call), the others with their all-cached calls.",
        "",
        "| caller | median µs | round medians | p99 µs | median × posthog | median × Segment "
        "| p99 × posthog |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in stats.items():
        ph, sg = baselines(stats, name)
        lines.append(
            f"| {name} | {s['median']:.2f} | {spread(rounds[name], '.2f')} | {s['p99']:.2f} | "
            f"{ratio(s['median'], ph['median'])} | {ratio(s['median'], sg['median'])} | "
            f"{ratio(s['p99'], ph['p99'])} |"
        )
    return lines, stats


def baselines(by_name: dict[str, Any], name: str) -> tuple[Any, Any]:
    """posthog-python's and Segment's figures to compare `name` with: their realistic
    ones for a realistic row (Segment's may be absent: then its all-cached one)."""
    if "realistic" in name:
        return by_name[POSTHOG_REALISTIC], by_name.get(SEGMENT_REALISTIC, by_name[SEGMENT])
    return by_name[POSTHOG], by_name[SEGMENT]


def cpu_table(
    cpu: dict[str, list[float]], floors: list[float], build_us: float, n: int
) -> list[str]:
    medians = {name: median(values) for name, values in cpu.items()}
    lines = [
        f"## 2. CPU per delivered event ({n} events per round, all delivered)",
        "",
        "The upb floor is timed at the start and the end of each round; a round's ratio is",
        f"to its own floor (median {median(floors):.2f} µs, rounds {spread(floors, '.2f')}).",
        "",
        "Realistic rows: × posthog is to posthog-python's realistic row, × Segment to",
        "Segment's all-cached one.",
        "",
        "| sender | CPU µs/event | spread | × posthog | × Segment | × upb floor | spread "
        "| × upb build + serialize |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values in cpu.items():
        m = median(values)
        ph = medians[POSTHOG_REALISTIC if "realistic" in name else POSTHOG]
        sg = medians[SEGMENT]
        to_floor = floor_ratios(values, floors)
        lines.append(
            f"| {name} | {m:.2f} | {spread(values, '.2f')} | {ratio(m, ph)} | {ratio(m, sg)} | "
            f"{median(to_floor):.1f} | {spread(to_floor)} | {m / build_us:.1f} |"
        )
    return lines


def floor_ratios(values: list[float], floors: list[float]) -> list[float]:
    """Each round's CPU per event over that round's floor."""
    return [v / f for v, f in zip(values, floors, strict=True)]


def memory_table(mem: dict[str, list[tuple[float, int]]], n: int) -> list[str]:
    ph = median([b for b, _ in mem[POSTHOG]])
    sg = median([b for b, _ in mem[SEGMENT]])
    lines = [
        f"## 3. Memory per queued event, sink down ({n} events, tracemalloc growth / {n})",
        "",
        "| client | bytes/event | spread | still queued (min) | × posthog | × Segment |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in mem.items():
        m = median([b for b, _ in values])
        queued = min(q for _, q in values)
        lines.append(
            f"| {name} | {m:.0f} | {spread([b for b, _ in values], '.0f')} | {queued} | "
            f"{ratio(m, ph)} | {ratio(m, sg)} |"
        )
    return lines


def burst_table(result: dict[str, dict[str, float]], n: int) -> list[str]:
    lines = [
        f"## 4. Burst of {n} calls, default settings, live sink",
        "",
        "| SDK | delivered | dropped | calls took s | µs/call |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in result.items():
        lines.append(
            f"| {name} | {r['delivered']:.0f} | {r['dropped']:.0f} | {r['seconds']:.2f} | "
            f"{r['seconds'] / n * 1e6:.2f} |"
        )
    if "queue_full" in result.get("pug (Connect)", {}):
        lines.append(f"\npug stats().dropped_queue_full: {result['pug (Connect)']['queue_full']}")
    return lines


def reference_table(ref: dict[str, list[float]]) -> list[str]:
    lines = ["## 5. Reference costs", "", "| operation | ns | spread |", "|---|---:|---:|"]
    for name, values in ref.items():
        lines.append(f"| {name} | {median(values):.0f} | {spread(values, '.0f')} |")
    return lines


def target_rows(
    caller: dict[str, dict[str, float]],
    cpu: dict[str, list[float]],
    mem: dict[str, list[tuple[float, int]]],
    floors: list[float],
    burst_result: dict[str, dict[str, float]],
) -> list[tuple[str, float, float]]:
    """(target, measured ratio or count, limit)."""
    pug_c, ph_c, sg_c = caller["pug, custom (Connect)"], caller[POSTHOG], caller[SEGMENT]
    pug_cpu = median(cpu["pug, custom (Connect)"])
    pug_mem = median([b for b, _ in mem["pug"]])
    real, ph_real = caller[PUG_REALISTIC], caller[POSTHOG_REALISTIC]
    return [
        ("realistic traffic: caller median × posthog's", real["median"] / ph_real["median"], 0.07),
        (
            "realistic traffic: CPU/event × posthog's",
            median(cpu[PUG_REALISTIC]) / median(cpu[POSTHOG_REALISTIC]),
            0.1,
        ),
        ("caller median × posthog", pug_c["median"] / ph_c["median"], 0.1),
        ("caller median × Segment", pug_c["median"] / sg_c["median"], 0.15),
        ("caller p99 × posthog", pug_c["p99"] / ph_c["p99"], 0.2),
        ("CPU/event (Connect) × posthog", pug_cpu / median(cpu[POSTHOG]), 0.1),
        ("CPU/event (Connect) × Segment", pug_cpu / median(cpu[SEGMENT]), 0.15),
        (
            "CPU/event (Connect) × upb floor (median of rounds)",
            median(floor_ratios(cpu["pug, custom (Connect)"], floors)),
            10.0,
        ),
        ("memory/queued event × posthog", pug_mem / median([b for b, _ in mem[POSTHOG]]), 0.5),
        ("burst with defaults: dropped", burst_result["pug (Connect)"]["dropped"], 0.0),
    ]


def targets_table(rows: list[tuple[str, float, float]]) -> list[str]:
    lines = ["## Targets", "", "| target | measured | limit | met |", "|---|---:|---:|---|"]
    for name, value, limit in rows:
        met = "yes" if value <= limit else "NO"
        lines.append(f"| {name} | {value:.3f} | ≤ {limit:g} | {met} |")
    return lines


def chart(
    caller: dict[str, dict[str, float]],
    cpu: dict[str, list[float]],
    mem: dict[str, list[tuple[float, int]]],
) -> None:
    """Bar chart of the ratios vs posthog-python, if matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)")
        return
    mem_m = {k: median([b for b, _ in v]) for k, v in mem.items()}
    cpu_m = {k: median(v) for k, v in cpu.items()}
    bars = {
        "caller median": [caller[k]["median"] / caller[POSTHOG]["median"] for k in CHART_KEYS],
        "caller p99": [caller[k]["p99"] / caller[POSTHOG]["p99"] for k in CHART_KEYS],
        "CPU/event": [cpu_m[k] / cpu_m[POSTHOG] for k in CHART_KEYS],
        "memory/event": [mem_m[MEM_KEYS[k]] / mem_m[POSTHOG] for k in CHART_KEYS],
    }
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(CHART_KEYS)
    for i, key in enumerate(CHART_KEYS):
        xs = [j + i * width for j in range(len(bars))]
        ax.bar(xs, [values[i] for values in bars.values()], width, label=key)
    ax.set_xticks([j + width * (len(CHART_KEYS) - 1) / 2 for j in range(len(bars))], list(bars))
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("× posthog-python (log)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "compare.png", dpi=120)
    print(f"chart: {RESULTS / 'compare.png'}")


CHART_KEYS = ["pug, custom (Connect)", SEGMENT]
MEM_KEYS = {"pug, custom (Connect)": "pug", SEGMENT: SEGMENT}


# --- main ----------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 10 000 events")
    args = parser.parse_args()
    args.rounds = 3 if args.quick else 5
    args.calls = 1000 if args.quick else 2000
    args.events = 10_000 if args.quick else 50_000
    args.queued = 10_000
    args.burst = 100_000
    return args


def measure(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"ref": reference_costs(args.rounds, 100_000)}
    with sink("http") as url:
        contenders = big_queue_contenders(url, max(args.events, args.calls * 10))
        print("1. caller path")
        out["caller"] = caller_path(contenders, args.rounds, args.calls)
        in_memory = Pug(api_key="prv_bench", transport=InMemoryTransport())
        plain = Pug(
            api_key="prv_bench",
            transport=ConnectTransport(url, "prv_bench", compress_above=None),
            batch=BatchConfig(max_queue_size=args.events * 2),
        )
        cpu_set = [
            contenders[0],
            pug_contender("pug, custom (Connect, gzip off)", plain),
            pug_contender("pug, custom (InMemoryTransport)", in_memory),
            *contenders[2:4],
            contenders[4],  # realistic traffic: pug and posthog-python
            contenders[5],
        ]
        contenders[6].close()
        print("2. CPU per delivered event")
        out["cpu"], out["floors"] = cpu_rounds(cpu_set, args.rounds, args.events, floor_timer())
        for c in cpu_set:
            c.close()
        print("4. burst with defaults")
        out["burst"] = bursts(url, args.burst)
    print("3. memory per queued event")
    out["mem"] = memory_rounds(3, args.queued)
    return out


def report(args: argparse.Namespace, m: dict[str, Any]) -> None:
    caller_lines, caller = caller_table(m["caller"])
    head = [
        "# pug vs posthog-python vs Segment",
        "",
        f"{versions('pug-sdk', 'posthog', 'segment-analytics-python')}; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}; {'--quick; ' if args.quick else ''}interleaved rounds, "
        "local HTTP sink in another process (pug over Connect).",
        "",
    ]
    rows = target_rows(caller, m["cpu"], m["mem"], m["floors"], m["burst"])
    sections = [
        targets_table(rows),
        caller_lines,
        cpu_table(m["cpu"], m["floors"], median(m["ref"][BUILD]) / 1e3, args.events),
        memory_table(m["mem"], args.queued),
        burst_table(m["burst"], args.burst),
        reference_table(m["ref"]),
    ]
    write("compare.md", "\n".join(head + [line for s in sections for line in [*s, ""]]))
    chart(caller, m["cpu"], m["mem"])


def main() -> None:
    for name in ("posthog", "segment", "pug", "urllib3", "backoff"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    args = parse_args()
    report(args, measure(args))


if __name__ == "__main__":
    main()
