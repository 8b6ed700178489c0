"""The dev server's gRPC over h2c, on grpclib: every RPC of the generated services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pug.devserver.dispatch import Dispatch
from pug.errors import PugError


def grpc_handlers(dispatch: Dispatch) -> Any:
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
