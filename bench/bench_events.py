"""What a typed event costs on the caller's path: validation and mapping to wire values.

    python bench/bench_events.py [--rounds 15] [--number 20000]

Measures, interleaved round by round so machine noise hits every row alike:
  - baselines: building the 8-property dict by hand, `json.dumps` of it, and
    `msgspec.json.encode` of the typed event;
  - `validate(event)` and `event_properties(event)` for an 8-field AddToCart,
    and `event_properties` for a 3-field Purchase;
  - what `track()` runs: the generated encoder (checks every rule and writes the
    custom_properties bytes), against the checked path it falls back to.
Prints a Markdown table (median µs per call, spread, ratio to `json.dumps`) and writes it
to bench/results/events.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from pug._ingest.encode import encode_typed, encode_typed_checked
from pug.event import event_properties, validate
from pug.events import AddToCart, Purchase

EIGHT = AddToCart(
    product_id="sku_42",
    price=49.99,
    currency="USD",
    cart_id="cart_7",
    quantity=3,
    category="books",
    brand="Pug Press",
    sku="PP-42",
)
THREE = Purchase(product_id="sku_42", amount=49.99, currency="USD")


def by_hand() -> object:
    return {
        "productId": "sku_42",
        "price": 49.99,
        "currency": "USD",
        "cartId": "cart_7",
        "quantity": 3,
        "category": "books",
        "brand": "Pug Press",
        "sku": "PP-42",
    }


PROPS = by_hand()
CASES: dict[str, Callable[[], object]] = {
    "baseline: dict of 8 properties by hand": by_hand,
    "baseline: json.dumps(8 properties)": lambda: json.dumps(PROPS),
    "baseline: msgspec.json.encode(AddToCart)": lambda: msgspec.json.encode(EIGHT),
    "validate(AddToCart), 8 fields": lambda: validate(EIGHT),
    "event_properties(AddToCart), 8 fields": lambda: event_properties(EIGHT),
    "event_properties(Purchase), 3 fields": lambda: event_properties(THREE),
    "checked path to bytes (msgspec), AddToCart": lambda: encode_typed_checked(EIGHT),
    "generated encoder to bytes, AddToCart": lambda: encode_typed(EIGHT),
}
REFERENCE = "baseline: json.dumps(8 properties)"


def per_call_us(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for fn in CASES.values():
        per_call_us(fn, 1000)  # warm up caches (the per-class plan is built once)
    for _ in range(args.rounds):
        for name, fn in CASES.items():
            samples[name].append(per_call_us(fn, args.number))
    ref = statistics.median(samples[REFERENCE])
    lines = [
        f"Typed events on the caller's path ({platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, {args.rounds} interleaved rounds "
        f"of {args.number} calls).",
        "",
        "| what | median µs/call | spread (min–max) | × json.dumps |",
        "|---|---:|---:|---:|",
    ]
    for name, values in samples.items():
        median = statistics.median(values)
        lines.append(
            f"| {name} | {median:.2f} | {min(values):.2f}–{max(values):.2f} | {median / ref:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(__file__).parent / "results" / "events.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table)


if __name__ == "__main__":
    main()
