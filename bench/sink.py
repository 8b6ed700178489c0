"""Minimal local sinks for benchmarks, each in its own process so its CPU is not counted
against the SDK being measured.

    python bench/sink.py http PORT_FILE   # HTTP/1.1: any POST → 200 (empty body: a valid
                                          # empty protobuf for Connect, `{}` for JSON APIs)
    python bench/sink.py grpc PORT_FILE   # gRPC h2c (grpclib): any unary call → empty reply

GET /count on the HTTP sink returns the number of requests received; GET /events the number
of events in the JSON batch bodies received (`{"batch": [...]}`, as posthog-python and Segment
post them, gzip or not; Connect bodies are not decoded and count 0).
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import sys
import threading
from pathlib import Path
from typing import Any

_count = 0
_events = 0
_lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # The head and the body are two writes: with Nagle on, the body waits for the
    # client's delayed ACK of the head (40 ms a request on Linux).
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        global _count, _events
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        connect = self.headers.get("content-type", "").startswith("application/proto")
        encoding = self.headers.get("content-encoding")
        events = 0 if connect else _json_events(body, encoding)
        with _lock:
            _count += 1
            _events += events
        self._reply(_connect_answer(self.path, body, encoding) if connect else b"{}")

    def do_GET(self) -> None:
        self._reply(str(_events if self.path == "/events" else _count).encode())

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _json_events(body: bytes, encoding: str | None) -> int:
    """The number of events in a JSON `{"batch": [...]}` body; 0 for anything else."""
    try:
        data = json.loads(gzip.decompress(body) if encoding == "gzip" else body)
    except (ValueError, OSError):  # not JSON, or not gzip after all
        return 0
    batch = data.get("batch") if isinstance(data, dict) else None
    return len(batch) if isinstance(batch, list) else 0


def _connect_answer(path: str, body: bytes, encoding: str | None) -> bytes:
    """What Pug answers: every event of a BatchCreate accepted (the SDK checks the count),
    an empty message for anything else."""
    if not path.endswith("/BatchCreate"):
        return b""
    from pug._wire import protobuf as pb

    return pb.accept_all(gzip.decompress(body) if encoding == "gzip" else body)


def serve_http(port_file: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port_file.write_text(str(server.server_port))
    server.serve_forever()


def serve_grpc(port_file: Path) -> None:
    import grpclib.const
    from grpclib.encoding.base import CodecBase
    from grpclib.server import Server, Stream

    class Raw(CodecBase):
        __content_subtype__ = "proto"

        def encode(self, message: Any, message_type: Any) -> bytes:
            return bytes(message)

        def decode(self, data: bytes, message_type: Any) -> Any:
            return data

    class Sink:
        async def batch_create(self, stream: Stream[bytes, bytes]) -> None:
            from pug._wire import protobuf as pb

            await stream.send_message(pb.accept_all(await stream.recv_message()))  # type: ignore[arg-type]

        async def identify(self, stream: Stream[bytes, bytes]) -> None:
            await stream.recv_message()
            await stream.send_message(b"")

        def __mapping__(self) -> dict[str, grpclib.const.Handler]:
            unary = grpclib.const.Cardinality.UNARY_UNARY
            return {
                "/sdk.events.v1.EventsService/BatchCreate": grpclib.const.Handler(
                    self.batch_create, unary, bytes, bytes
                ),
                "/sdk.profiles.v1.ProfilesSDKService/Identify": grpclib.const.Handler(
                    self.identify, unary, bytes, bytes
                ),
            }

    async def main() -> None:
        server = Server([Sink()], codec=Raw())
        await server.start("127.0.0.1", 0)
        port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        port_file.write_text(str(port))
        await server.wait_closed()

    asyncio.run(main())


if __name__ == "__main__":
    kind, port_file = sys.argv[1], Path(sys.argv[2])
    serve_grpc(port_file) if kind == "grpc" else serve_http(port_file)
