"""A minimal local HTTP sink for benchmarks: answers every POST with 200 and `{}`.

Runs in its own process (`python bench/sink.py PORT_FILE`) so its CPU is not counted
against the SDK being measured. Counts requests; GET /count returns the number.
"""

from __future__ import annotations

import http.server
import sys
import threading

_count = 0
_lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        global _count
        self.rfile.read(int(self.headers.get("content-length") or 0))
        with _lock:
            _count += 1
        self._reply(b"{}")

    def do_GET(self) -> None:
        self._reply(str(_count).encode())

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_port))
    server.serve_forever()


if __name__ == "__main__":
    main()
