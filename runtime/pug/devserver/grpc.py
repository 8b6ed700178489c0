"""The dev server's gRPC over h2c, on grpclib: every RPC of the generated services, each
request message bounded in bytes."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

from pug.devserver.dispatch import Dispatch
from pug.errors import PugError


def grpc_handlers(dispatch: Dispatch, *, max_message_bytes: int) -> Any:
    import grpclib.const
    import grpclib.server

    async def receive(stream: grpclib.server.Stream[Any, Any]) -> bytes:
        # grpclib has no bound on a received message (vmagamedov/grpclib#195: declined), and
        # its recv_message buffers whatever length the prefix claims: the prefix is read
        # here, and an oversize message refused before a byte of it is taken in.
        h2 = stream._stream
        try:
            prefix = await h2.recv_data(5)
            if not prefix:
                return b""
            compressed, length = struct.unpack(">?I", prefix)
            if compressed:
                raise grpclib.GRPCError(
                    grpclib.const.Status.UNIMPLEMENTED, "compressed messages are not supported"
                )
            if length > max_message_bytes:
                raise grpclib.GRPCError(
                    grpclib.const.Status.RESOURCE_EXHAUSTED,
                    f"the message is {length} bytes, over the dev server's limit of "
                    f"{max_message_bytes}",
                )
            return bytes(await h2.recv_data(length))
        except (AssertionError, struct.error):  # grpclib's word for a stream cut short
            raise grpclib.GRPCError(
                grpclib.const.Status.INVALID_ARGUMENT, "the message is cut short"
            ) from None

    def call(method: str, stream_kind: bool) -> Callable[[grpclib.server.Stream[Any, Any]], Any]:
        async def handle(stream: grpclib.server.Stream[Any, Any]) -> None:
            request = await receive(stream)
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


def capped_server(handlers: list[Any], codec: Any, max_connections: int) -> Any:
    """A grpclib server with at most `max_connections` connections open at once: one more is
    closed as soon as it is made (the client sees `unavailable`)."""
    import grpclib.server

    class CappedServer(grpclib.server.Server):
        open = 0

        # grpclib makes each connection's protocol here and offers no public hook or limit:
        # each is wrapped to be counted.
        def _protocol_factory(self) -> Any:
            return _Counted(super()._protocol_factory(), self, max_connections)

    return CappedServer(handlers, codec=codec)


class _Counted(asyncio.Protocol):
    """A grpclib connection's protocol, counted on its server; closed when over the cap."""

    def __init__(self, inner: Any, server: Any, cap: int) -> None:
        self.inner, self.server, self.cap = inner, server, cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.open += 1
        self.inner.connection_made(transport)
        if self.server.open > self.cap:
            transport.close()  # grpclib still sees it end: its handler is let go

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open -= 1
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
