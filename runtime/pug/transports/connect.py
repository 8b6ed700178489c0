"""The Connect protocol over HTTP/1.1: what a Pug server serves on any port.

Unary calls: POST {base_url}/{package.Service}/{Method} with a binary protobuf body;
HTTP 200 carries the response, anything else a Connect error JSON (or, from a proxy,
a plain HTTP error mapped by status). They go through `http11` (a request costs it a
tenth of httpx's CPU), or httpx when a proxy is configured for the server.
Server streaming (enveloped messages) uses httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import ssl
import struct
import urllib.parse
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx

from pug.errors import PugError, error_for
from pug.transport import INHERITED_FROM_PARENT
from pug.transports import USER_AGENT, BaseURL, OpenStreams, parse_base_url
from pug.transports.http11 import ConnectionPool, HTTPProtocolError, tls_context

# WIRE.md: how a non-Connect HTTP error maps to a code.
_STATUS_CODES = {401: "unauthenticated", 403: "permission_denied", 404: "unimplemented"}
_END_STREAM = 0x02
_COMPRESSED = 0x01
# How long the body's end may take to come after the end-of-stream message.
_FINISH_BODY_TIMEOUT = 1.0


def code_for_status(status: int) -> str:
    """The Connect code of an HTTP status that came without a Connect error body."""
    if status in _STATUS_CODES:
        return _STATUS_CODES[status]
    if status in (408, 429) or status >= 500:
        return "unavailable"
    return "invalid_argument"


def error_from_json(body: bytes, status: int) -> PugError:
    """A PugError from a Connect error body, or from the status when there is none."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        details = data.get("details")
        return error_for(
            data["code"],
            str(data.get("message", "")),
            details=details if isinstance(details, list) else None,
        )
    snippet = body[:200].decode("utf-8", "replace").strip()
    return error_for(
        code_for_status(status), f"HTTP {status}" + (f": {snippet}" if snippet else "")
    )


class ConnectTransport:
    """Connect + binary protobuf over HTTP/1.1 with persistent connections.

    - `ca_bundle`: a PEM file of CAs to trust instead of the default ones.
    - `compress_above`: gzip request bodies larger than this many bytes (None: never).
    - `HTTPS_PROXY` / `NO_PROXY` are honoured as httpx does (`trust_env`).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        ca_bundle: str | None = None,
        compress_above: int | None = 16 * 1024,
        max_connections: int = 10,
    ) -> None:
        self.base_url = parse_base_url(base_url)
        if not (api_key.isascii() and api_key.isprintable() and " " not in api_key):
            # Never echo the key: it may be a secret pasted with a stray character.
            raise ValueError("api_key must be printable ASCII with no spaces")
        self._url = self.base_url.origin + self.base_url.prefix + "/"
        self._path = urllib.parse.quote(self.base_url.prefix, safe="/%!$&'()*+,;=:@") + "/"
        self._headers = {
            "x-api-key": api_key,
            "connect-protocol-version": "1",
            "user-agent": USER_AGENT,
        }
        self._ca_bundle = ca_bundle
        self._compress_above = compress_above
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client: httpx.AsyncClient | None = None
        self._proxied = uses_proxy(self.base_url)
        self._max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._streams = OpenStreams()

    def __repr__(self) -> str:
        return f"ConnectTransport({self.base_url.origin + self.base_url.prefix!r})"

    def _http(self) -> httpx.AsyncClient:
        # Made on first use, on the loop that uses it (the client's worker loop).
        if self._client is None:
            verify: ssl.SSLContext | bool = True
            if self._ca_bundle is not None:
                verify = ssl.create_default_context(cafile=self._ca_bundle)
            self._client = httpx.AsyncClient(
                verify=verify, limits=self._limits, trust_env=True, http2=False
            )
        return self._client

    def _request_headers(self, timeout: float, content_type: str) -> dict[str, str]:
        headers = dict(self._headers)
        headers["content-type"] = content_type
        headers["connect-timeout-ms"] = str(max(1, int(timeout * 1000)))
        return headers

    def _connections(self) -> ConnectionPool:
        # Made on first use, on the loop that uses it (the client's worker loop).
        if self._pool is None:
            tls = tls_context(self._ca_bundle) if self.base_url.tls else None
            self._pool = ConnectionPool(
                self.base_url.host,
                self.base_url.port,
                tls=tls,
                max_connections=self._max_connections,
            )
        return self._pool

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        headers = self._request_headers(timeout, "application/proto")
        if self._compress_above is not None and len(request) > self._compress_above:
            request = gzip.compress(request, compresslevel=1)
            headers["content-encoding"] = "gzip"
        if self._proxied:
            return await self._unary_httpx(method, request, headers, timeout)
        try:
            async with asyncio.timeout(timeout):
                response = await self._connections().post(
                    self._path + method, headers.items(), request
                )
        except TimeoutError:
            raise error_for("deadline_exceeded", f"timed out after {timeout:g}s") from None
        except (OSError, HTTPProtocolError) as exc:
            message = f"connection failed: {type(exc).__name__}: {exc}"
            raise error_for("unavailable", message) from None
        if response.status != 200:
            raise error_from_json(response.body, response.status)
        return response.body

    async def _unary_httpx(
        self, method: str, request: bytes, headers: dict[str, str], timeout: float
    ) -> bytes:
        response = await self._send(method, request, headers, timeout)
        try:
            body = await response.aread()
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise error_from_json(body, response.status_code)
        return body

    def stream(self, method: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        """A server-streaming call: yields each response message; errors raise PugError."""
        return self._streams.add(self._stream(method, request, timeout))

    async def _stream(self, method: str, request: bytes, timeout: float) -> AsyncGenerator[bytes]:
        headers = self._request_headers(timeout, "application/connect+proto")
        envelope = struct.pack(">BI", 0, len(request)) + request
        response = await self._send(method, envelope, headers, timeout)
        chunks: AsyncIterator[bytes] | None = None
        end: bytes | None = None
        try:
            if response.status_code != 200:
                raise error_from_json(await response.aread(), response.status_code)
            chunks = response.aiter_bytes()
            buffer = b""
            async for chunk in chunks:
                buffer += chunk
                while len(buffer) >= 5:
                    flags, length = struct.unpack(">BI", buffer[:5])
                    if len(buffer) < 5 + length:
                        break
                    payload, buffer = buffer[5 : 5 + length], buffer[5 + length :]
                    if flags & _COMPRESSED:
                        payload = gzip.decompress(payload)
                    if flags & _END_STREAM:
                        end = payload
                        break
                    yield payload
                if end is not None:
                    break
            if end is None:
                raise error_for("unavailable", "the stream ended without an end-of-stream message")
            _raise_end_of_stream(end)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None
        finally:
            if chunks is not None:
                await _finish_body(response, chunks, ended=end is not None, timeout=timeout)
            await response.aclose()

    async def _send(
        self, method: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> httpx.Response:
        client = self._http()
        request = client.build_request(
            "POST", self._url + method, content=body, headers=headers, timeout=timeout
        )
        try:
            return await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from None

    async def aclose(self) -> None:
        await self._streams.aclose()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def reset_after_fork(self) -> None:
        # The parent's sockets are the parent's: drop the pools without closing them.
        INHERITED_FROM_PARENT.extend((self._pool, self._client))
        self._streams.forget()
        self._pool = None
        self._client = None


def uses_proxy(base_url: BaseURL) -> bool:
    """Whether the environment routes `base_url` through a proxy (as httpx reads it:
    HTTP(S)_PROXY, ALL_PROXY, NO_PROXY)."""
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(base_url.scheme) or proxies.get("all")):
        return False
    # Public in urllib.request on every platform, but missing from typeshed.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return not bypass(base_url.host, proxies)


async def _finish_body(
    response: httpx.Response, chunks: AsyncIterator[bytes], *, ended: bool, timeout: float
) -> None:
    """Read a streamed body to its end, so that httpx's async generators under `chunks`
    all finish here.

    Left unfinished, each is closed by a task its loop starts once it is collected, one
    nesting level per turn; when the worker's loop stops first, those tasks are destroyed
    pending ("Task was destroyed but it is pending!", and on 3.13 "coroutine method
    'aclose' ... was never awaited"). After the end-of-stream message only the body's end
    follows (and the connection stays reusable); a stream left early is closed first, so
    the read fails at once.
    """
    if not ended:
        await response.aclose()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(min(timeout, _FINISH_BODY_TIMEOUT)):
            async for _ in chunks:
                pass


def _raise_end_of_stream(payload: bytes) -> None:
    try:
        data: Any = json.loads(payload or b"{}")
    except ValueError:
        raise error_for("internal", "unreadable end-of-stream message") from None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        details = error.get("details")
        raise error_for(
            str(error.get("code", "unknown")),
            str(error.get("message", "")),
            details=details if isinstance(details, list) else None,
        )


def _transport_error(exc: httpx.HTTPError) -> PugError:
    """Connection failures and timeouts are transient (the retry policy decides)."""
    if isinstance(exc, httpx.TimeoutException):
        return error_for("deadline_exceeded", f"timed out: {type(exc).__name__}")
    return error_for("unavailable", f"connection failed: {type(exc).__name__}: {exc}")
