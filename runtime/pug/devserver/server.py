"""`DevServer`: the Connect and gRPC servers in background threads, and the
`pug devserver` command."""

from __future__ import annotations

import argparse
import asyncio
import http.server
import sys
import threading
from pathlib import Path
from typing import IO, Any

from pug.devserver.connect import connect_handler
from pug.devserver.dispatch import Dispatch, EventPrinter, KeyCheck
from pug.devserver.grpc import grpc_handlers
from pug.testing import FakePug


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
        self._printer = EventPrinter(self.out, jsonl)
        self._dispatch = Dispatch(self.fake, KeyCheck(api_key), self._printer)
        self._http = http.server.ThreadingHTTPServer(
            (host, connect_port), connect_handler(self._dispatch)
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
            handlers = [grpc_handlers(self._dispatch)]
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
        self._printer.close()

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
