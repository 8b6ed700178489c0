"""gRPC over HTTP/2 with grpclib: TLS with ALPN h2 for https://, h2c for http://.

A real Pug server speaks gRPC only where HTTP/2 is served (behind TLS, or an h2
proxy); on a plain port use the Connect transport.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpclib.client
import grpclib.const
import grpclib.exceptions
from grpclib.client import Channel
from grpclib.encoding.base import CodecBase, StatusDetailsCodecBase

from pug import wire
from pug.errors import error_for
from pug.transport import INHERITED_FROM_PARENT
from pug.transports import USER_AGENT, OpenStreams, parse_base_url

# grpclib reserves the user-agent header and has no option for it: name the SDK ahead of
# grpclib's own agent, as gRPC's "primary user agent" convention does. This applies to
# every grpclib channel of the process, once the gRPC transport is imported.
_GRPCLIB_AGENT: str = getattr(grpclib.client, "USER_AGENT", "")
if not _GRPCLIB_AGENT.startswith(USER_AGENT):
    setattr(grpclib.client, "USER_AGENT", f"{USER_AGENT} {_GRPCLIB_AGENT}".strip())  # noqa: B010


class BytesCodec(CodecBase):
    """Messages are already serialized by the SDK: pass the bytes through."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return bytes(data)


class _StatusDetails(StatusDetailsCodecBase):
    """Reads `grpc-status-details-bin` (a google.rpc.Status) into the shape the Connect
    transport gives: `[{"type": "google.rpc.BadRequest", "value": <unpadded base64>}]`."""

    def encode(self, status: Any, message: str | None, details: Any) -> bytes:
        raise NotImplementedError("the SDK only reads status details")

    def decode(self, status: Any, message: str | None, data: bytes) -> Any:
        details = []
        for number, value in wire._fields(data):
            if number != 3 or not isinstance(value, bytes):  # Status.details: repeated Any
                continue
            parts = dict(wire._fields(value))
            type_url, payload = parts.get(1, b""), parts.get(2, b"")
            if isinstance(type_url, bytes) and isinstance(payload, bytes):
                name = type_url.decode("utf-8", "replace").rpartition("/")[2]
                encoded = base64.b64encode(payload).decode().rstrip("=")
                details.append({"type": name, "value": encoded})
        return details


def _code_name(status: grpclib.const.Status) -> str:
    # grpclib's Status names are the gRPC names; Connect uses them lowercased.
    return status.name.lower()


class GrpcTransport:
    """gRPC unary and server-streaming calls with `x-api-key` metadata.

    - `ca_bundle`: a PEM file of CAs to trust (default: the system's, via certifi
      when it is installed, as grpclib does).
    """

    def __init__(self, base_url: str, api_key: str, *, ca_bundle: str | None = None) -> None:
        self.base_url = parse_base_url(base_url)
        self._metadata = {"x-api-key": api_key}
        self._ca_bundle = ca_bundle
        self._channel: Channel | None = None
        self._streams = OpenStreams()

    def __repr__(self) -> str:
        return f"GrpcTransport({self.base_url.origin + self.base_url.prefix!r})"

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.base_url.tls:
            return None
        context = ssl.create_default_context(cafile=self._ca_bundle)
        context.set_alpn_protocols(["h2"])
        return context

    def _get_channel(self) -> Channel:
        if self._channel is None:
            self._channel = Channel(
                self.base_url.host,
                self.base_url.port,
                ssl=self._ssl_context(),
                codec=BytesCodec(),
                status_details_codec=_StatusDetails(),
            )
        return self._channel

    def _request(self, method: str, cardinality: grpclib.const.Cardinality, timeout: float) -> Any:
        return self._get_channel().request(
            f"{self.base_url.prefix}/{method}",
            cardinality,
            bytes,
            bytes,
            timeout=timeout,
            metadata=self._metadata,
        )

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        try:
            async with self._request(
                method, grpclib.const.Cardinality.UNARY_UNARY, timeout
            ) as stream:
                await stream.send_message(request, end=True)
                reply = await stream.recv_message()
                await stream.recv_trailing_metadata()
        except BaseException as exc:
            raise _error(exc) from None
        if reply is None:
            raise error_for("internal", "the server sent no response message")
        return bytes(reply)

    def stream(self, method: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        """A server-streaming call: yields each response message; errors raise PugError."""
        return self._streams.add(self._stream(method, request, timeout))

    async def _stream(self, method: str, request: bytes, timeout: float) -> AsyncGenerator[bytes]:
        try:
            async with self._request(
                method, grpclib.const.Cardinality.UNARY_STREAM, timeout
            ) as stream:
                await stream.send_message(request, end=True)
                async for message in stream:
                    yield bytes(message)
        except BaseException as exc:
            raise _error(exc) from None

    async def aclose(self) -> None:
        await self._streams.aclose()
        if self._channel is None:
            return
        channel, self._channel = self._channel, None
        # Over TLS, close() only starts a shutdown the peer may never answer; abort the
        # socket so it is not left open once the worker's loop stops.
        protocol = getattr(channel, "_protocol", None)
        connection = getattr(protocol, "connection", None)
        socket_transport = getattr(connection, "_transport", None)
        channel.close()
        if socket_transport is not None:
            socket_transport.abort()
            await asyncio.sleep(0)

    def reset_after_fork(self) -> None:
        INHERITED_FROM_PARENT.append(self._channel)
        self._channel = None
        self._streams.forget()


def _error(exc: BaseException) -> BaseException:
    """gRPC statuses keep their code; connection failures and timeouts are transient."""
    if isinstance(exc, grpclib.exceptions.GRPCError):
        return error_for(_code_name(exc.status), exc.message or "", details=exc.details)
    if isinstance(exc, TimeoutError):
        return error_for("deadline_exceeded", "timed out")
    if isinstance(exc, grpclib.exceptions.StreamTerminatedError | OSError | ConnectionError):
        return error_for("unavailable", f"connection failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, Exception):
        return error_for("unavailable", f"{type(exc).__name__}: {exc}")
    return exc  # CancelledError, KeyboardInterrupt: not ours to translate
