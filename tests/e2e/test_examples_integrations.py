"""The framework example apps (examples/fastapi_app.py, flask_app.py, django_app.py) do what
their docstrings say, against a real Connect server on 127.0.0.1: FastAPI under uvicorn in
this process, Flask through its test client, Django under uvicorn in a process of its own
(its settings are process-wide), stopped with Ctrl-C as a person would.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from integrations import session
from processes import process_group
from servers import ConnectServer, FakePug, UvicornServer

ROOT = Path(__file__).resolve().parents[2]
# What each example is asked for: an order by user_42 in session 1 (a Purchase and a
# receipt), then the broken page by user_7 in session 2.
EXPECTED = [
    ("error_occurred", "user_7", session(2)),
    ("purchase", "user_42", session(1)),
    ("receipt.sent", "user_42", session(1)),
]


@pytest.fixture
def load(server: ConnectServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Import an example as its own module, its client sending to the test's server; the
    client is closed (delivering what it queued) after the test."""
    monkeypatch.setenv("PUG_BASE_URL", server.url)
    loaded: list[ModuleType] = []

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append(module)
        return module

    yield load
    for module in loaded:
        module.client.close()


def delivered(fake: FakePug) -> list[tuple[str, str, str]]:
    """(kind, distinct id, session id) of each event delivered, sorted."""
    return sorted((e.kind, e.distinct_id, e.session_id) for e in fake.delivered_events())


def test_fastapi_example(load: Any, fake: FakePug) -> None:
    example = load("fastapi_app.py")
    with UvicornServer(example.app) as server:
        headers = {"Authorization": "Bearer user_42", "X-Pug-Session-Id": session(1)}
        answer = httpx.post(f"{server.url}/orders/o1", headers=headers, timeout=10)
        assert answer.json() == {"order_id": "o1", "user_id": "user_42"}
        headers = {"X-Pug-Distinct-Id": "user_7", "X-Pug-Session-Id": session(2)}
        assert httpx.get(f"{server.url}/broken", headers=headers, timeout=10).status_code == 500
    example.client.close()
    assert delivered(fake) == EXPECTED


def test_flask_example(load: Any, fake: FakePug) -> None:
    example = load("flask_app.py")
    http = example.app.test_client()
    http.set_cookie("user_id", "user_42")
    answer = http.post("/orders/o1", headers={"X-Pug-Session-Id": session(1)})
    assert answer.json == {"order_id": "o1"}
    http.delete_cookie("user_id")
    headers = {"X-Pug-Distinct-Id": "user_7", "X-Pug-Session-Id": session(2)}
    assert http.get("/broken", headers=headers).status_code == 500
    example.client.close()
    assert delivered(fake) == EXPECTED


def test_django_example_under_uvicorn(server: ConnectServer, fake: FakePug) -> None:
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)  # requests wait in the backlog until uvicorn has started
    url = f"http://127.0.0.1:{listening.getsockname()[1]}"
    command = [sys.executable, "-m", "uvicorn", "examples.django_app:application"]
    command += ["--fd", str(listening.fileno()), "--log-level", "warning"]
    env = {**os.environ, "PUG_BASE_URL": server.url}
    with process_group(
        command, cwd=ROOT, env=env, pass_fds=[listening.fileno()], stderr=subprocess.PIPE
    ) as app:
        listening.close()  # the child holds it now
        headers = {"X-Pug-Distinct-Id": "user_42", "X-Pug-Session-Id": session(1)}
        answer = httpx.post(f"{url}/orders/o1", headers=headers, timeout=30)
        assert answer.json() == {"order_id": "o1"}
        answer = httpx.get(f"{url}/orders/o1/receipt", headers=headers, timeout=10)
        assert answer.json() == {"order_id": "o1"}
        headers = {"X-Pug-Distinct-Id": "user_7", "X-Pug-Session-Id": session(2)}
        assert httpx.get(f"{url}/broken", headers=headers, timeout=10).status_code == 500
        app.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn stops, the client delivers at exit
        _, err = app.communicate(timeout=20)
        assert app.returncode == 0, err
    assert delivered(fake) == EXPECTED
