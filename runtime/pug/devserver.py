"""`pug devserver`: a local Pug for development, serving `FakePug` on 127.0.0.1.

Connect over HTTP/1.1 (what a real Pug server serves on a plain port) and gRPC over h2c,
both answering from one in-memory `FakePug`. Each received event is printed as one line
(kind, distinct id, properties) and optionally appended to a JSONL file. API keys are
checked the way the real server does: `x-api-key` must be present and look like a Pug key
(`prv_…`, or `pub_…` for ingestion only), or equal the one key given on the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gzip
import http.server
import json
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pug.errors import PugError, error_for
from pug.testing import FakePug
from pug.testing.fake.server import service_methods
from pug.transports.base import BATCH_CREATE

# Connect's HTTP status for each code (the Connect protocol's table).
_HTTP_STATUS = {
    "canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504,
    "not_found": 404, "already_exists": 409, "permission_denied": 403,
    "resource_exhausted": 429, "failed_precondition": 400, "aborted": 409,
    "out_of_range": 400, "unimplemented": 501, "internal": 500, "unavailable": 503,
    "data_loss": 500, "unauthenticated": 401,
}  # fmt: skip
_END_STREAM = 0x02


class KeyCheck:
    """The real server's key rules: `sdk.*` takes `pub_` and `prv_` keys, `shared.*` only
    `prv_`; a fixed key, when given, is the only one accepted."""

    def __init__(self, fixed: str | None = None) -> None:
        self.fixed = fixed

    def __call__(self, method: str, key: str | None) -> None:
        if not key:
            raise error_for("unauthenticated", "x-api-key header not present")
        if self.fixed is not None:
            ok = key == self.fixed
        else:
            ok = key.startswith("prv_") or (key.startswith("pub_") and method.startswith("sdk."))
        if not ok:
            raise error_for("unauthenticated", "invalid API key")


class EventPrinter:
    """One readable line per received event, and the JSONL file if asked for."""

    def __init__(self, out: IO[str], jsonl: Path | None) -> None:
        self.out = out
        self.jsonl = jsonl
        self._lock = threading.Lock()

    def __call__(self, method: str, body: bytes) -> None:
        if method != BATCH_CREATE:
            return
        from pug.proto.sdk.events.v1 import BatchCreateRequest

        for event in BatchCreateRequest.parse(body).events:
            props = {k: _plain(v) for k, v in event.custom_properties.items()}
            line = f"{event.kind:<24} {event.distinct_id:<16} {json.dumps(props, default=str)}"
            record = {
                "event_id": event.event_id,
                "kind": event.kind,
                "distinct_id": event.distinct_id,
                "occur_time": event.occur_time.isoformat() if event.occur_time else None,
                "properties": props,
            }
            with self._lock:
                print(line, file=self.out, flush=True)
                if self.jsonl is not None:
                    with self.jsonl.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record, default=str) + "\n")


def _plain(value: Any) -> object:
    for member in ("string_value", "int_value", "double_value", "bool_value", "timestamp_value"):
        found = getattr(value, member, None)
        if found is not None:
            return found.isoformat() if isinstance(found, datetime.datetime) else found
    return None


class _Dispatch:
    """What both servers do with one call: check the key, answer from the fake, print."""

    def __init__(self, fake: FakePug, keys: KeyCheck, printer: EventPrinter) -> None:
        self.fake = fake
        self.keys = keys
        self.printer = printer
        # Every RPC of the generated service definitions → whether it streams (the fake
        # finds its routes the same way).
        self.methods = {path: m.streams for path, m in service_methods().items()}

    def unary(self, method: str, key: str | None, body: bytes) -> bytes:
        self._check(method, key, stream=False)
        answer = self.fake.handle(method, body)
        self.printer(method, body)
        return answer

    def stream(self, method: str, key: str | None, body: bytes) -> list[bytes]:
        self._check(method, key, stream=True)
        return self.fake.handle_stream(method, body)

    def _check(self, method: str, key: str | None, *, stream: bool) -> None:
        if self.methods.get(method) is not stream:
            raise error_for("unimplemented", f"unknown method {method}")
        self.keys(method, key)


# ---- Connect over HTTP/1.1 ---------------------------------------------------------------


def _connect_handler(dispatch: _Dispatch) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pug-devserver"
        # The head and the body are two writes: with Nagle on, the body would wait for
        # the client's delayed ACK of the head (40 ms a request on Linux).
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            method = self.path.lstrip("/").split("?")[0]
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                key = self.headers.get("x-api-key")
                content_type = self.headers.get("content-type", "")
                if content_type == "application/connect+proto":
                    self._stream(method, key, body)
                elif content_type == "application/proto":
                    self._reply(200, "application/proto", dispatch.unary(method, key, body))
                else:
                    raise error_for("unknown", f"unsupported content type {content_type!r}")
            except PugError as exc:
                error = {"code": exc.code, "message": exc.message}
                self._reply(
                    _HTTP_STATUS.get(exc.code, 500), "application/json", json.dumps(error).encode()
                )

        def _stream(self, method: str, key: str | None, body: bytes) -> None:
            flags, length = struct.unpack(">BI", body[:5])
            request = body[5 : 5 + length]
            if flags & 0x01:
                request = gzip.decompress(request)
            try:
                messages = dispatch.stream(method, key, request)
                end: dict[str, object] = {}
            except PugError as exc:
                if exc.code == "unauthenticated" or exc.code == "unimplemented":
                    raise
                messages, end = [], {"error": {"code": exc.code, "message": exc.message}}
            parts = [struct.pack(">BI", 0, len(m)) + m for m in messages]
            trailer = json.dumps(end).encode()
            parts.append(struct.pack(">BI", _END_STREAM, len(trailer)) + trailer)
            self._reply(200, "application/connect+proto", b"".join(parts))

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


# ---- gRPC over h2c (grpclib) -------------------------------------------------------------


def _grpc_handlers(dispatch: _Dispatch) -> Any:
    import grpclib.const
    import grpclib.server

    def call(method: str, stream_kind: bool) -> Callable[[grpclib.server.Stream[Any, Any]], Any]:
        async def handle(stream: grpclib.server.Stream[Any, Any]) -> None:
            request = await stream.recv_message() or b""
            key = stream.metadata.get("x-api-key") if stream.metadata else None
            try:
                if stream_kind:
                    for message in dispatch.stream(method, str(key) if key else None, request):
                        await stream.send_message(message)
                else:
                    await stream.send_message(
                        dispatch.unary(method, str(key) if key else None, request)
                    )
            except PugError as exc:
                status = grpclib.const.Status[exc.code.upper()]
                raise grpclib.GRPCError(status, exc.message) from None

        return handle

    class Services:
        def __mapping__(self) -> dict[str, grpclib.const.Handler]:
            unary, stream = (
                grpclib.const.Cardinality.UNARY_UNARY,
                grpclib.const.Cardinality.UNARY_STREAM,
            )
            return {
                "/" + m: grpclib.const.Handler(call(m, s), stream if s else unary, bytes, bytes)
                for m, s in dispatch.methods.items()
            }

    return Services()


class DevServer:
    """The dev server, started in background threads (`with DevServer() as server:`).

    Ports 0 pick free ones; `connect_url` and `grpc_url` say where it listens.
    """

    def __init__(
        self,
        fake: FakePug | None = None,
        *,
        host: str = "127.0.0.1",
        connect_port: int = 0,
        grpc_port: int = 0,
        api_key: str | None = None,
        jsonl: Path | None = None,
        out: IO[str] | None = None,
    ) -> None:
        self.fake = fake or FakePug()
        self.host = host
        self.out = out or sys.stdout  # where received events are printed
        self._dispatch = _Dispatch(self.fake, KeyCheck(api_key), EventPrinter(self.out, jsonl))
        self._http = http.server.ThreadingHTTPServer(
            (host, connect_port), _connect_handler(self._dispatch)
        )
        self._http.daemon_threads = True
        self._grpc_port = grpc_port
        self._loop = asyncio.new_event_loop()
        self._grpc_ready = threading.Event()
        self._grpc_server: Any = None
        self._threads: list[threading.Thread] = []

    @property
    def connect_url(self) -> str:
        return f"http://{self.host}:{self._http.server_port}"

    @property
    def grpc_url(self) -> str:
        return f"http://{self.host}:{self._grpc_port}"

    def start(self) -> DevServer:
        connect = threading.Thread(
            target=self._http.serve_forever, name="pug-dev-connect", daemon=True
        )
        grpc = threading.Thread(target=self._serve_grpc, name="pug-dev-grpc", daemon=True)
        self._threads = [connect, grpc]
        for thread in self._threads:
            thread.start()
        if not self._grpc_ready.wait(10):
            raise RuntimeError("the gRPC server did not start")
        return self

    def _serve_grpc(self) -> None:
        import grpclib.server

        from pug.transports.grpc import BytesCodec

        async def main() -> None:
            handlers = [_grpc_handlers(self._dispatch)]
            self._grpc_server = grpclib.server.Server(handlers, codec=BytesCodec())
            await self._grpc_server.start(self.host, self._grpc_port)
            self._grpc_port = self._grpc_server._server.sockets[0].getsockname()[1]
            self._grpc_ready.set()
            await self._grpc_server.wait_closed()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._grpc_server is not None:
            self._loop.call_soon_threadsafe(self._grpc_server.close)
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`pug devserver`: serve a local Pug until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="pug", description="Pug's Python SDK tools")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("devserver", help="serve a local in-memory Pug (Connect and gRPC)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--connect-port", type=int, default=8700, help="Connect (HTTP/1.1) port")
    dev.add_argument("--grpc-port", type=int, default=8701, help="gRPC (h2c) port")
    dev.add_argument(
        "--api-key", default=None, help="accept only this key (default: any prv_/pub_)"
    )
    dev.add_argument("--jsonl", type=Path, default=None, help="append received events to this file")
    args = parser.parse_args(argv)
    server = DevServer(
        host=args.host,
        connect_port=args.connect_port,
        grpc_port=args.grpc_port,
        api_key=args.api_key,
        jsonl=args.jsonl,
    ).start()
    print(
        f"Pug dev server: Connect on {server.connect_url}, gRPC (h2c) on {server.grpc_url}. "
        "Ctrl-C stops it.",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        server.stop()
    return 0
