"""At interpreter exit, queued events are sent within the bounded exit timeout."""

from __future__ import annotations

import http.server
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: ClassVar[list[bytes]] = []
    delay = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.delay:
            time.sleep(self.delay)  # a slow server, to hit the exit timeout
        type(self).bodies.append(body)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Handler", (_Recorder,), {"bodies": [], "delay": 0.0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", handler
    httpd.shutdown()
    httpd.server_close()


def run_program(base_url: str, exit_timeout: float) -> subprocess.CompletedProcess[str]:
    """A program that tracks 25 events and exits without flush() or close()."""
    program = textwrap.dedent(
        f"""
        from pug import BatchConfig, Pug

        pug = Pug(
            api_key="prv_exit_test",
            base_url={base_url!r},
            batch=BatchConfig(max_wait=60.0, exit_timeout={exit_timeout}),
        )
        for i in range(25):
            pug.track("user_1", "job.finished", {{"i": i}})
        print(pug.stats().queue_length)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )


def test_queued_events_are_sent_at_exit(
    server: tuple[str, type[_Recorder]], google_pb2: dict[str, type]
) -> None:
    url, handler = server
    result = run_program(url, exit_timeout=5.0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "25"  # still queued when the program ended
    batch = google_pb2["sdk.events.v1.BatchCreateRequest"]
    events = [e for body in handler.bodies for e in batch.FromString(body).events]
    assert [e.custom_properties["i"].int_value for e in events] == list(range(25))


def test_exit_is_bounded_by_exit_timeout(server: tuple[str, type[_Recorder]]) -> None:
    url, handler = server
    handler.delay = 5.0  # the server answers far later than the exit timeout allows
    start = time.monotonic()
    result = run_program(url, exit_timeout=0.5)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    # The exit timeout (0.5 s) plus interpreter start-up, never the server's 5 s.
    assert elapsed < 4.0
    assert "25 item(s) not delivered: deadline_exceeded" in result.stderr
