"""What a process that only tracks imports: not the libraries only reads, streams, proxies
or gRPC need (betterproto2 and pydantic, httpx, grpclib, h2, hpack, urllib.request), nor the
spool a client without `spool=` never uses (nor secrets, hashlib, pathlib, which only it
needs), nor a domain of well-known events before one of its kinds is tracked. Each costs
every process's start (bench/bench_coldstart.py); checked in a fresh interpreter.

Nor asyncio, ssl, sockets and the HTTP client: the worker's thread imports those, and the
caller's `track()` does not wait for it. The program holds that thread back (it records the
start instead of starting it) to see what the caller's own path imported, then starts it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

NOT_IMPORTED = [
    "betterproto2",
    "pydantic",
    "httpx",
    "grpclib",
    "h2",
    "hpack",
    "urllib.request",
    "email.utils",
    "pug.proto",
    "pug.resources",
    "pug.reads",
    "pug.testing",
    "pug.events.commerce",
    "pug.events.app",
    "pug._ingest.spool",
    "secrets",
    "hashlib",
    "pathlib",
    "asyncio",
    "ssl",
    "socket",
    "selectors",
    "pug.transports._http11",
]

PROGRAM = textwrap.dedent(
    """
    import _thread, json, sys

    held = []  # the worker threads' starts, made once the caller's path is checked
    start_new_thread = _thread.start_new_thread
    _thread.start_new_thread = lambda function, args: held.append((function, args))
    import pug

    client = pug.Pug(api_key="prv_cold", base_url="http://127.0.0.1:9")
    client.track("user_1", "order.completed", {"amount": 49.99})
    with pug.context(distinct_id="user_1"):
        client.track("report.exported")
    before = set(sys.modules)
    client.track("user_1", "purchase", {"product_id": "p1", "amount": 49.0})
    after = set(sys.modules)
    _thread.start_new_thread = start_new_thread
    for function, args in held:
        start_new_thread(function, args)
    print(json.dumps([sorted(before), sorted(after - before), len(held)]))
    import os; os._exit(0)
    """
)


def test_tracking_imports_only_what_it_needs() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    imported, by_purchase, workers = json.loads(result.stdout)
    assert workers == 1  # the first track() asked for the worker's thread
    assert [name for name in NOT_IMPORTED if name in imported] == []
    # A well-known kind as a string: its domain's module, on its first track(), alone.
    assert by_purchase == ["pug.events.commerce"]
