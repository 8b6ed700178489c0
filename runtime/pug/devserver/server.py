"""`DevServer`: the Connect and gRPC servers in background threads, and the
`pug devserver` command."""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import ipaddress
import os
import signal
import sys
import threading
from pathlib import Path
from typing import IO, Any

from pug._ingest.validate import MAX_REQUEST_BYTES
from pug.devserver.connect import ConnectServer, connect_handler
from pug.devserver.dispatch import LINES_PER_SECOND, Dispatch, EventPrinter, KeyCheck
from pug.devserver.feed import Feed
from pug.devserver.grpc import capped_server, grpc_handlers
from pug.devserver.page import Page
from pug.testing import FakePug
from pug.testing.fake.query import DEFAULT_MAX_BYTES

# A request's bound, in bytes on the wire and once gzip is inflated (and a gRPC message's):
# the real server takes a batch as one message of a 1 MiB bus (WIRE.md), the SDK sends at
# most MAX_REQUEST_BYTES (512 KiB) a request; 8 times that leaves any honest client room.
MAX_BODY_BYTES = 8 * MAX_REQUEST_BYTES
# Connections open at once (Connect; a page's event stream is one of them, so a few browser
# tabs fit many times over), and how long a request may take to arrive.
MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 30.0


class DevServer:
    """The dev server, started in background threads (`with DevServer() as server:`).

    Ports 0 pick free ones; `connect_url` and `grpc_url` say where it listens. A request
    body is at most `max_body_bytes` (also once inflated; over it: 413); at most
    `max_connections` Connect connections are open (one more: 503, closed), as many gRPC
    ones (one more: closed); a Connect request must arrive whole within `idle_timeout`
    seconds of the last one (or of the connection's start), its body within as many after
    its head, or the connection is closed. At most `lines_per_second` events are printed
    a second (0: every one); those past it are counted, in a line after the second.
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
        max_body_bytes: int = MAX_BODY_BYTES,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        lines_per_second: int = LINES_PER_SECOND,
    ) -> None:
        if max_body_bytes < 1 or max_connections < 1 or not idle_timeout > 0:
            raise ValueError("the body bound, connection cap and idle timeout must be positive")
        self.fake = fake or FakePug()
        self.host = host
        self.out = out or sys.stdout  # where received events are printed
        self._printer = EventPrinter(self.out, jsonl, lines_per_second=lines_per_second)
        self._dispatch = Dispatch(self.fake, KeyCheck(api_key), self._printer)
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.feed = Feed()  # what the page shows
        self._dispatch.watchers.append(self.feed)
        page = Page(self.fake, self.feed, host)
        handler = connect_handler(
            self._dispatch, page, max_body_bytes=max_body_bytes, idle_timeout=idle_timeout
        )
        try:
            self._http = ConnectServer(
                (host, connect_port), handler, max_connections, max_body_bytes
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {host}:{connect_port}: {exc.strerror}"
            ) from None
        self._grpc_port = grpc_port
        self._loop = asyncio.new_event_loop()
        self._grpc_ready = threading.Event()
        self._grpc_server: Any = None
        self._grpc_failed: OSError | None = None
        self._threads: list[threading.Thread] = []

    @property
    def connect_url(self) -> str:
        return f"http://{self.host}:{self._http.server_port}"

    @property
    def page_url(self) -> str:
        """The page: what arrived, live."""
        return self.connect_url + "/"

    @property
    def grpc_url(self) -> str:
        return f"http://{self.host}:{self._grpc_port}"

    def start(self) -> DevServer:
        # serve_forever looks for a stop() every poll_interval: 0.5 s by default.
        serve = functools.partial(self._http.serve_forever, poll_interval=0.05)
        connect = threading.Thread(target=serve, name="pug-dev-connect", daemon=True)
        grpc = threading.Thread(target=self._serve_grpc, name="pug-dev-grpc", daemon=True)
        self._threads = [connect, grpc]
        for thread in self._threads:
            thread.start()
        if not self._grpc_ready.wait(10):
            raise RuntimeError("the gRPC server did not start")
        if self._grpc_failed is not None:
            self.stop()
            raise self._grpc_failed
        return self

    def _serve_grpc(self) -> None:
        from pug.transports.grpc import BytesCodec

        async def main() -> None:
            handlers = [grpc_handlers(self._dispatch, max_message_bytes=self.max_body_bytes)]
            self._grpc_server = capped_server(handlers, BytesCodec(), self.max_connections)
            try:
                await self._grpc_server.start(self.host, self._grpc_port)
            except OSError as exc:
                where = f"{self.host}:{self._grpc_port}"
                # asyncio's strerror repeats the address (and, from 3.13, the errno)
                why = os.strerror(exc.errno) if exc.errno else str(exc.strerror)
                self._grpc_failed = OSError(exc.errno, f"cannot listen on {where}: {why}")
                self._grpc_server = None
                self._grpc_ready.set()
                return
            self._grpc_port = self._grpc_server._server.sockets[0].getsockname()[1]
            self._grpc_ready.set()
            await self._grpc_server.wait_closed()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())

    def stop(self) -> None:
        self.feed.close()  # ends the pages' streams
        self._http.shutdown()
        self._http.server_close()
        if self._grpc_server is not None:
            self._loop.call_soon_threadsafe(self._grpc_server.close)
        for thread in self._threads:
            thread.join(5)
        self._dispatch.settler.stop()
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
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    dev.add_argument("--connect-port", type=int, default=8700, help="Connect (HTTP/1.1) port")
    dev.add_argument("--grpc-port", type=int, default=8701, help="gRPC (h2c) port")
    dev.add_argument(
        "--api-key", default=None, help="accept only this key (default: any prv_/pub_)"
    )
    dev.add_argument("--jsonl", type=Path, default=None, help="append received events to this file")
    dev.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help="connections at once, per protocol",
    )
    dev.add_argument(
        "--idle-timeout", type=float, default=IDLE_TIMEOUT, help="seconds a request may take"
    )
    dev.add_argument(
        "--lines-per-second",
        type=int,
        default=LINES_PER_SECOND,
        help="events printed a second at most, the others counted (0: print every one)",
    )
    dev.add_argument(
        "--max-store-mb",
        type=int,
        default=DEFAULT_MAX_BYTES >> 20,
        help="MiB of events and profiles kept at most, the oldest dropped past it",
    )
    args = parser.parse_args(argv)
    tune_gc()
    # Ctrl-C (SIGINT) stops it, also when its parent started it with SIGINT ignored (a
    # shell's background job does): its own handler, not the inherited disposition.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.max_store_mb < 1:
        parser.error("--max-store-mb must be at least 1")
    try:
        server = DevServer(
            FakePug(max_store_bytes=args.max_store_mb << 20),
            host=args.host,
            connect_port=args.connect_port,
            grpc_port=args.grpc_port,
            api_key=args.api_key,
            jsonl=args.jsonl,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            lines_per_second=args.lines_per_second,
        ).start()
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.error(exc.strerror or str(exc))
    try:  # Ctrl-C from here on stops the server (the banner tells the user they may)
        if not is_loopback(args.host):  # before the banner: whoever reads it has been warned
            keys = "any prv_/pub_ key" if args.api_key is None else "the key"
            print(
                f"warning: listening on {args.host}, not loopback only: whoever reaches it may "
                f"send and read events with {keys}, over plain HTTP (no TLS)",
                file=sys.stderr,
                flush=True,
            )
        print(
            f"Pug dev server: Connect on {server.connect_url}, gRPC (h2c) on {server.grpc_url}, "
            f"page at {server.page_url}. Ctrl-C stops it.",
            flush=True,
        )
        # Waits of a second, not one endless wait: CPython runs a signal handler between
        # waits, and a Ctrl-C that lands as a wait begins would otherwise never be seen.
        idle = threading.Event()
        while not idle.wait(1.0):
            pass
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        server.stop()
    return 0


def tune_gc() -> None:
    """The dev server keeps what arrives (events, profiles): long-lived objects by the
    hundred thousand. Python's collector looks through the young ones every 700 allocations
    by default, and through all of them ever more often as they grow: a burst of new users
    spent a fifth of the server's time there. What the process made at start is frozen out
    of it, and young collections come every 50 000 allocations (the dev server makes few
    reference cycles)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) can only be reached from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
