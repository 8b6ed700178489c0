"""CPU per Connect unary request: the SDK's HTTP/1.1 client against httpx.

    python bench/bench_http.py

Both POST the same body to the local HTTP sink (another process, not counted) over one
keep-alive connection, on one asyncio loop; the CPU of the calling thread
(`getrusage(RUSAGE_THREAD)`, user + system) is divided by the number of requests. Two
body sizes: ~28 KB (a gzipped batch of 1000 events) and ~280 KB (the same uncompressed).
Interleaved rounds; writes bench/results/http.md.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable

import httpx
from common import median, sink, spread, versions, write
from pug.transports.base import BATCH_CREATE
from pug.transports.connect import ConnectTransport

REQUESTS = 200
ROUNDS = 5
SIZES = (28_000, 280_000)
HEADERS = {
    "content-type": "application/proto",
    "connect-protocol-version": "1",
    "x-api-key": "prv_bench",
}


def thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


async def per_request_us(call: Callable[[], Awaitable[object]]) -> float:
    await call()  # the connection is open before the clock starts
    start = thread_cpu()
    for _ in range(REQUESTS):
        await call()
    return (thread_cpu() - start) / REQUESTS * 1e6


async def measure(url: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    ours = ConnectTransport(url, "prv_bench", compress_above=None)
    client = httpx.AsyncClient(http2=False)
    try:
        for _ in range(ROUNDS):
            for size in SIZES:
                body = b"\x0a\x02\x0a\x00" * (size // 4)  # 4-byte empty Events

                async def via_pug(body: bytes = body) -> object:
                    return await ours.unary(BATCH_CREATE, body, timeout=10)

                async def via_httpx(body: bytes = body) -> object:
                    response = await client.post(
                        f"{url}/{BATCH_CREATE}", content=body, headers=HEADERS
                    )
                    assert response.status_code == 200
                    return response.content

                for name, call in (("httpx", via_httpx), ("pug http11", via_pug)):
                    out.setdefault(f"{name}, {size // 1000} KB", []).append(
                        await per_request_us(call)
                    )
    finally:
        await ours.aclose()
        await client.aclose()
    return out


def main() -> None:
    with sink("http") as url:
        result = asyncio.run(measure(url))
    lines = [
        "# CPU per Connect unary request",
        "",
        f"{versions('pug-sdk', 'httpx')}; {REQUESTS} requests per round, {ROUNDS} interleaved "
        "rounds, one keep-alive connection to a local sink in another process.",
        "",
        "| client, body | CPU µs/request | spread | × httpx |",
        "|---|---:|---:|---:|",
    ]
    for name, values in result.items():
        size = name.split(", ")[1]
        base = median(result[f"httpx, {size}"])
        lines.append(
            f"| {name} | {median(values):.0f} | {spread(values, '.0f')} | "
            f"{median(values) / base:.3f} |"
        )
    write("http.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
