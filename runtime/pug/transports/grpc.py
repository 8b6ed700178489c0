"""gRPC over HTTP/2 with grpclib: TLS with ALPN h2 for https://, h2c for http://.

A real Pug server speaks gRPC only where HTTP/2 is served (behind TLS, or an h2
proxy); on a plain port use the Connect transport.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import grpclib.client
import grpclib.const
import grpclib.exceptions
from grpclib.client import Channel
from grpclib.encoding.base import CodecBase, StatusDetailsCodecBase
from grpclib.stream import recv_message as _grpclib_recv_message

from pug._wire.protobuf import read_fields
from pug.errors import PugError, error_for
from pug.transports._url import parse_base_url
from pug.transports.base import (
    INHERITED_FROM_PARENT,
    READ_RESPONSE_LIMIT,
    USER_AGENT,
    OpenStreams,
    ResponseTooLarge,
    check_api_key,
    check_response_limit,
    response_limit,
)
from pug.transports.redact import filter_loggers, redact, register, server_error

# grpclib reserves the user-agent header and has no option for it: name the SDK ahead of
# grpclib's own agent, as gRPC's "primary user agent" convention does. This applies to
# every grpclib channel of the process, once the gRPC transport is imported.
_GRPCLIB_AGENT: str = getattr(grpclib.client, "USER_AGENT", "")
if not _GRPCLIB_AGENT.startswith(USER_AGENT):
    setattr(grpclib.client, "USER_AGENT", f"{USER_AGENT} {_GRPCLIB_AGENT}".strip())  # noqa: B010

# hpack logs every header it encodes or decodes at DEBUG, `x-api-key` included (as given,
# and Huffman-coded inside the header block); grpclib logs protocol errors with their
# exception. (h2 logs nothing: grpclib gives it no logger.)
filter_loggers("hpack.hpack", "hpack.table", "grpclib.protocol", "grpclib.client")

# The gRPC status detail a server may send to ask for a pause before the next attempt.
_PUSHBACK = "grpc-retry-pushback-ms"


class _Reply(bytes):
    """The reply type given to grpclib: its class says how large a message may be."""

    max_bytes: int = READ_RESPONSE_LIMIT


def _reply_type(max_bytes: int) -> type[_Reply]:
    return type("_Reply", (_Reply,), {"max_bytes": max_bytes})


async def _recv_message(stream: Any, codec: Any, message_type: Any) -> Any:
    """grpclib's recv_message, but a message over the reply type's `max_bytes` is refused
    from its 5-byte prefix, before grpclib reads it whole (grpclib has no such limit: it
    acknowledges the data as it buffers it, so the server may send gigabytes). Calls of
    other grpclib users in the process (any other reply type) are left as they were."""
    if not (isinstance(message_type, type) and issubclass(message_type, _Reply)):
        return await _grpclib_recv_message(stream, codec, message_type)
    limit = message_type.max_bytes
    prefix = await stream.recv_data(5)
    if not prefix:
        return None
    if prefix[0]:
        raise NotImplementedError("Compression not implemented")  # as grpclib says
    length = int.from_bytes(prefix[1:5], "big")
    if length > limit:
        raise ResponseTooLarge(f"the response message is {length} bytes, over the limit of {limit}")
    data = await stream.recv_data(length)
    if len(data) != length:
        raise grpclib.exceptions.StreamTerminatedError("the stream ended inside a message")
    return codec.decode(data, message_type)


# Looked up by grpclib.client.Stream.recv_message at each call.
setattr(grpclib.client, "recv_message", _recv_message)  # noqa: B010


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
        for number, value in _message_fields(data):
            if number != 3:  # Status.details: repeated google.protobuf.Any
                continue
            parts = dict(_message_fields(value))
            type_url, payload = parts.get(1, b""), parts.get(2, b"")  # Any.type_url, .value
            name = type_url.decode("utf-8", "replace").rpartition("/")[2]
            encoded = base64.b64encode(payload).decode().rstrip("=")
            details.append({"type": name, "value": encoded})
        return details


def _message_fields(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The length-delimited fields of a protobuf message, as (number, bytes): all that a
    google.rpc.Status and its Any details are read for (other fields are skipped).
    ValueError (IndexError for a cut varint) if the message is malformed."""
    return ((number, value) for number, value in read_fields(data) if isinstance(value, bytes))


def _code_name(status: grpclib.const.Status) -> str:
    # grpclib's Status names are the gRPC names; Connect uses them lowercased.
    return status.name.lower()


class GrpcTransport:
    """gRPC unary and server-streaming calls with `x-api-key` metadata.

    - `ca_bundle`: a PEM file of CAs to trust (default: the system's, via certifi
      when it is installed, as grpclib does).
    - `max_response_bytes`: the largest response message of a read (16 MiB by default);
      answers to ingestion (`sdk.*`) are limited to 64 KiB. Over it: `resource_exhausted`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        ca_bundle: str | None = None,
        max_response_bytes: int = READ_RESPONSE_LIMIT,
    ) -> None:
        self.base_url = parse_base_url(base_url)
        # grpclib checks a metadata value at each call, and its error quotes the value.
        self._key = check_api_key(api_key)
        register(self, api_key)
        self._max_response_bytes = check_response_limit(max_response_bytes)
        self._reply_types: dict[int, type[_Reply]] = {}
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
        limit = response_limit(method, self._max_response_bytes)
        reply_type = self._reply_types.get(limit)
        if reply_type is None:
            reply_type = self._reply_types[limit] = _reply_type(limit)
        return self._get_channel().request(
            f"{self.base_url.prefix}/{method}",
            cardinality,
            bytes,
            reply_type,
            timeout=timeout,
            metadata=self._metadata,
        )

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        stream: Any = None
        try:
            async with self._request(
                method, grpclib.const.Cardinality.UNARY_UNARY, timeout
            ) as stream:
                await stream.send_message(request, end=True)
                reply = await stream.recv_message()
                await stream.recv_trailing_metadata()
        except BaseException as exc:
            raise _error(exc, self._key, stream) from None
        if reply is None:
            raise error_for("internal", "the server sent no response message")
        return bytes(reply)

    def stream(self, method: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        """A server-streaming call: yields each response message; errors raise PugError."""
        return self._streams.add(self._stream(method, request, timeout))

    async def _stream(self, method: str, request: bytes, timeout: float) -> AsyncGenerator[bytes]:
        stream: Any = None
        try:
            async with self._request(
                method, grpclib.const.Cardinality.UNARY_STREAM, timeout
            ) as stream:
                await stream.send_message(request, end=True)
                async for message in stream:
                    yield bytes(message)
        except BaseException as exc:
            raise _error(exc, self._key, stream) from None

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


def _error(exc: BaseException, key: str, stream: Any = None) -> BaseException:
    """gRPC statuses keep their code; connection failures and timeouts are transient.
    Whatever a server or a library says is redacted (the key never shows)."""
    if isinstance(exc, PugError):
        return exc
    if isinstance(exc, grpclib.exceptions.GRPCError):
        return server_error(
            _code_name(exc.status), exc.message or "", exc.details, key, _pushback(stream)
        )
    if isinstance(exc, TimeoutError):
        return error_for("deadline_exceeded", "timed out")
    if isinstance(exc, ResponseTooLarge):
        return error_for("resource_exhausted", str(exc))
    if isinstance(exc, grpclib.exceptions.StreamTerminatedError | OSError | ConnectionError):
        message = f"connection failed: {type(exc).__name__}: {exc}"
        return error_for("unavailable", redact(message, key))
    if isinstance(exc, Exception):
        return error_for("unavailable", redact(f"{type(exc).__name__}: {exc}", key))
    return exc  # CancelledError, KeyboardInterrupt: not ours to translate


def _pushback(stream: Any) -> float | None:
    """The server's `grpc-retry-pushback-ms` (gRPC's Retry-After), in seconds; None without
    one, or for a negative value ("do not retry": not a delay). grpclib keeps `grpc-*`
    headers out of its metadata: they are read from its HTTP/2 stream's raw headers (the
    trailers, or the headers of a trailers-only answer), when grpclib still has them there."""
    inner = getattr(stream, "_stream", None)
    for block in (getattr(inner, "trailers", None), getattr(inner, "headers", None)):
        for name, value in block or ():
            if name == _PUSHBACK and isinstance(value, str):
                if value.isdigit() and value.isascii() and len(value) <= 12:
                    return int(value) / 1000
                return None
    return None
