"""At interpreter exit, queued events are sent within the bounded exit timeout: for each
usual way a script ends, to a host-name `base_url` (resolved at exit), over both protocols."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
from protoc_helpers import GoogleMessages
from servers import ConnectServer, FakePug, GrpcServer, batch_answer


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the body is a second write: no ACK wait
    bodies: ClassVar[list[bytes]] = []
    delay = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.delay:
            time.sleep(self.delay)  # a slow server, to hit the exit timeout
        type(self).bodies.append(body)
        answer = batch_answer(self.path, body, self.headers.get("content-encoding"))
        self.send_response(200)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

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


# How a script may end; each must deliver what it queued.
ENDINGS = {
    "end of script": "",
    "sys.exit(0)": "sys.exit(0)",
    # A SIGTERM handler that raises SystemExit (what gunicorn, uvicorn, Celery install);
    # the test sends the signal once the events are queued. The program waits in short
    # sleeps, as a server's main loop does: a signal that lands just before a long blocking
    # wait starts is not seen until the wait ends (CPython runs handlers between waits).
    "SIGTERM with a handler": "print('queued', flush=True)\nwhile True: time.sleep(0.05)",
}


@pytest.fixture(scope="module")
def servers(google_pb2: GoogleMessages) -> Iterator[dict[str, ConnectServer | GrpcServer]]:
    with (
        ConnectServer(FakePug(google_pb2)) as connect,
        GrpcServer(FakePug(google_pb2), tls_key_and_chain=None) as grpc,
    ):
        yield {"connect": connect, "grpc": grpc}


@pytest.mark.parametrize("protocol", ["connect", "grpc"])
@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_host_name_url_gets_everything_at_exit(
    servers: dict[str, ConnectServer | GrpcServer], protocol: str, ending: str
) -> None:
    """No connection is open when the script ends, so the host name is looked up while the
    interpreter shuts down (when no new thread may start)."""
    server = servers[protocol]
    server.fake.reset()
    url = server.url.replace("127.0.0.1", "localhost")
    program = (
        textwrap.dedent(
            f"""
        import signal, sys, time
        from pug import BatchConfig, Pug

        def stop(signum, frame):
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop)
        pug = Pug(
            api_key="prv_exit_test",
            base_url={url!r},
            transport={protocol!r},
            batch=BatchConfig(max_wait=60.0, exit_timeout=5.0),
        )
        for i in range(20):
            pug.track("user_1", "job.finished", {{"i": i}})
        """
        )
        + ENDINGS[ending]
    )
    start = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        try:
            if ending == "SIGTERM with a handler":
                assert child.stdout is not None
                assert child.stdout.readline() == "queued\n"
                os.kill(child.pid, signal.SIGTERM)
            _, stderr = child.communicate(timeout=30)
        finally:
            child.kill()
    elapsed = time.monotonic() - start
    assert child.returncode == 0, stderr
    assert stderr == ""
    assert elapsed < 5.0 + 3.0  # exit_timeout, plus start-up and the import of the SDK
    events = server.fake.delivered_events()
    assert sorted(e.custom_properties["i"].int_value for e in events) == list(range(20))
    assert len({e.event_id for e in events}) == 20
