"""The dev server, the demo that runs on it, and the pytest plugin."""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pug import BatchConfig, Pug, PugError, RetryPolicy
from pug.devserver import DevServer
from pug.events import Purchase
from pug.proto.sdk.events.v1 import BatchCreateRequest, BatchCreateResponse, Event
from pug.transports.grpc import GrpcTransport

ROOT = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytester"]


@pytest.fixture
def server() -> Iterator[DevServer]:
    with DevServer(out=io.StringIO()) as running:
        yield running


def printed(server: DevServer) -> list[str]:
    assert isinstance(server.out, io.StringIO)
    return server.out.getvalue().splitlines()


def client_for(server: DevServer, transport: str, key: str = "prv_dev") -> Pug:
    errors: list[tuple[PugError, list[object]]] = []
    chosen = (
        GrpcTransport(server.grpc_url, key) if transport == "grpc" else "connect"
    )  # fmt: skip
    client = Pug(
        api_key=key if key.startswith("prv_") else "prv_placeholder",
        base_url=server.connect_url,
        transport=chosen,
        batch=BatchConfig(max_wait=60),
        retry=RetryPolicy(base=0.001, cap=0.01),
        on_error=lambda error, items: errors.append((error, items)),
    )
    client.errors = errors  # type: ignore[attr-defined]
    return client


@pytest.mark.parametrize("transport", ["connect", "grpc"])
def test_events_arrive_over_both_transports_and_are_printed(
    server: DevServer, transport: str
) -> None:
    client = client_for(server, transport)
    client.track("user_1", Purchase(product_id="p1", amount=9.5, currency="EUR"))
    client.track("user_1", "report.shared", {"channel": "slack"})
    assert client.flush(10)
    client.close()
    assert [e.kind for e in server.fake.events(distinct_id="user_1")] == [
        "purchase",
        "report.shared",
    ]
    lines = printed(server)
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["purchase", "user_1"]
    assert json.loads(lines[0].split(None, 2)[2]) == {
        "productId": "p1",
        "amount": 9.5,
        "currency": "EUR",
    }
    assert lines[1].split(None, 2) == ["report.shared", "user_1", '{"channel": "slack"}']


@pytest.mark.parametrize("transport", ["connect", "grpc"])
def test_a_wrong_key_is_unauthenticated(server: DevServer, transport: str) -> None:
    # A fixed key on the command line makes every other key wrong.
    server._dispatch.keys.fixed = "prv_the_only_key"
    client = client_for(server, transport, key="prv_wrong")
    client.track("user_1", "x.y")
    assert client.flush(10)
    [(error, items)] = client.errors  # type: ignore[attr-defined]
    assert error.code == "unauthenticated"
    assert error.message == "invalid API key"
    assert len(items) == 1
    client.close()
    assert server.fake.events() == []


def batch_body() -> bytes:
    from pug.proto.common.v1 import PropertyValue

    event = Event(
        event_id="0190a5f0-0000-7000-8000-000000000001",
        distinct_id="curl_user",
        kind="curl.sent",
        session_id="0190a5f0-0000-7000-8000-000000000002",
        occur_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        custom_properties={"via": PropertyValue(string_value="curl")},
    )
    return bytes(BatchCreateRequest(events=[event]))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_a_plain_curl_connect_call(server: DevServer, tmp_path: Path) -> None:
    body = tmp_path / "batch.bin"
    body.write_bytes(batch_body())
    url = f"{server.connect_url}/sdk.events.v1.EventsService/BatchCreate"

    def curl(key: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["curl", "-s", "-X", "POST", url, "-H", "content-type: application/proto",
             "-H", "connect-protocol-version: 1", "-H", f"x-api-key: {key}",
             "--data-binary", f"@{body}", "-w", "\n%{http_code}"],
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip

    ok = curl("prv_curl")
    answer, _, status = ok.stdout.rpartition(b"\n")
    assert status == b"200"
    assert BatchCreateResponse.parse(answer).accepted == 1
    assert [e.properties for e in server.fake.events(kind="curl.sent")] == [{"via": "curl"}]

    denied = curl("not_a_pug_key")
    answer, _, status = denied.stdout.rpartition(b"\n")
    assert status == b"401"
    assert json.loads(answer) == {"code": "unauthenticated", "message": "invalid API key"}


def test_public_keys_may_ingest_but_not_read(server: DevServer) -> None:
    from pug.transports.connect import ConnectTransport

    transport = ConnectTransport(server.connect_url, "pub_browser_key")
    client = Pug(api_key="prv_unused", base_url=server.connect_url, transport=transport)
    client.track("user_1", "x.y")
    assert client.flush(10)
    assert len(server.fake.events()) == 1
    with pytest.raises(PugError) as info:
        client.profiles.get_by_external_id("user_1")
    assert info.value.code == "unauthenticated"
    client.close()


def start_cli(jsonl: Path) -> subprocess.Popen[str]:
    """`pug devserver` on free ports, writing `jsonl`; its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "pug", "devserver", "--connect-port", "0", "--grpc-port", "0",
         "--jsonl", str(jsonl)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_the_cli_serves_prints_writes_jsonl_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    jsonl = tmp_path / "events.jsonl"
    proc = start_cli(jsonl)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("Pug dev server: Connect on http://127.0.0.1:")
        connect_url = banner.split("Connect on ")[1].split(",")[0]
        assert f", page at {connect_url}/. Ctrl-C stops it." in banner
        client = Pug(api_key="prv_cli", base_url=connect_url)
        client.track("user_9", "cli.event", {"n": 1})
        client.close(10)
        line = proc.stdout.readline()
        assert line.split(None, 2) == ["cli.event", "user_9", '{"n": 1}\n']
        [record] = [json.loads(x) for x in jsonl.read_text().splitlines()]
        assert record["kind"] == "cli.event"
        assert record["distinct_id"] == "user_9"
        assert record["properties"] == {"n": 1}
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.strip() == "stopping"
    assert "Traceback" not in err


_EXIT_BURST_APP = """
import sys
from pug import Pug
pug = Pug(api_key="prv_burst", base_url=sys.argv[1])  # the defaults: exit_timeout 5 s
for i in range(10_000):
    pug.track(f"user_{i}", "order.completed", {"order_id": f"ord_{i}", "amount": i / 100})
"""  # and exits: what is queued goes out at exit, within exit_timeout


def test_an_apps_exit_burst_of_10000_events_all_reach_the_cli(tmp_path: Path) -> None:
    jsonl = tmp_path / "events.jsonl"
    server = start_cli(jsonl)
    try:
        assert server.stdout is not None
        connect_url = server.stdout.readline().split("Connect on ")[1].split(",")[0]
        # Read what it prints (a pipe left full would stop it).
        printing = threading.Thread(target=server.stdout.read, daemon=True)
        printing.start()
        app = subprocess.run(
            [sys.executable, "-c", _EXIT_BURST_APP, connect_url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (app.returncode, app.stderr) == (0, "")  # nothing "not delivered"
        records = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert sorted(r["properties"]["order_id"] for r in records) == sorted(
            f"ord_{i}" for i in range(10_000)
        )
        assert {r["distinct_id"] for r in records} == {f"user_{i}" for i in range(10_000)}
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(20)
    assert server.stderr is not None
    assert "Traceback" not in server.stderr.read()


def test_the_demo_runs_and_reports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PUG_API_KEY": ""},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sent 6 events and 1 identify over Connect:" in out
    for kind in ("page.viewed", "signup", "feature_used", "purchase", "report.shared"):
        assert f"  {kind} " in out
    assert "profile user_42: {'name': 'Ada', 'plan': 'pro'}" in out
    assert (
        "activity feed of user_42 (newest first): report.shared, purchase, purchase, "
        "feature_used, signup, page.viewed"
    ) in out
    assert "trends: 2 purchase events today" in out


def test_pytest_plugin_fixtures_in_a_users_test_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_checkout="""
        from pug.events import Purchase

        def checkout(pug, user_id, amount):
            pug.track(user_id, Purchase(product_id="sku_1", amount=amount, currency="USD"))

        def test_tracks_the_purchase(pug_client, pug_fake):
            checkout(pug_client, "u1", 49.0)
            pug_fake.assert_tracked(Purchase(product_id="sku_1", amount=49.0), distinct_id="u1")

        def test_wrong_amount_shows_the_difference(pug_client, pug_fake):
            checkout(pug_client, "u1", 50.0)
            pug_fake.assert_tracked(Purchase(product_id="sku_1", amount=49.0), distinct_id="u1")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*amount: expected 49.0, got 50.0*"])
