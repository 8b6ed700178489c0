"""What a process that only tracks imports: not the libraries only reads, streams, proxies
or gRPC need (betterproto2 and pydantic, httpx, grpclib, h2, hpack, urllib.request), nor the
spool a client without `spool=` never uses (nor secrets, hashlib, pathlib, which only it
needs), nor a domain of well-known events before one of its kinds is tracked. Each costs
every process's start (bench/bench_coldstart.py); checked in a fresh interpreter.
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
]

PROGRAM = textwrap.dedent(
    """
    import json, sys
    import pug

    client = pug.Pug(api_key="prv_cold", base_url="http://127.0.0.1:9")
    client.track("user_1", "order.completed", {"amount": 49.99})
    with pug.context(distinct_id="user_1"):
        client.track("report.exported")
    before = set(sys.modules)
    client.track("user_1", "purchase", {"product_id": "p1", "amount": 49.0})
    after = set(sys.modules)
    print(json.dumps([sorted(before), sorted(after - before)]))
    import os; os._exit(0)
    """
)


def test_tracking_imports_only_what_it_needs() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    imported, by_purchase = json.loads(result.stdout)
    assert [name for name in NOT_IMPORTED if name in imported] == []
    # A well-known kind as a string: its domain's module, on its first track(), alone.
    assert by_purchase == ["pug.events.commerce"]
