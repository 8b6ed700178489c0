"""The Connect protocol over HTTP/1.1: what a Pug server serves on any port.

Unary calls: POST {base_url}/{package.Service}/{Method} with a binary protobuf body;
HTTP 200 carries the response, anything else a Connect error JSON (or, from a proxy,
a plain HTTP error mapped by status). They go through `_http11` (a request costs it a
tenth of httpx's CPU), or httpx when a proxy is configured for the server.
Server streaming (enveloped messages) uses httpx.

What comes back is checked before it is believed, on every path: an answer over its bound
(pug.transports.base: 64 KiB for ingestion, 16 MiB for reads, at most 64 KiB of an error) is
`resource_exhausted` and is not read further; a 200 that declares another content type
than the protocol's (a captive portal's page) is `unknown`, as connect-go says; an error's
`Retry-After` becomes `PugError.retry_after`; and the key is redacted from anything quoted.

A transport is made on the caller's thread (`Pug(...)`) and used on the worker's loop: what
only that loop runs imports asyncio, ssl and `_http11` itself, so making a client does not
(~35 ms; see pug._ingest.worker).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import struct
import sys
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from pug.errors import PugError, error_for
from pug.transports._url import BaseURL, parse_base_url
from pug.transports.base import (
    INHERITED_FROM_PARENT,
    QUOTE_BODY_LIMIT,
    READ_RESPONSE_LIMIT,
    USER_AGENT,
    OpenStreams,
    ResponseTooLarge,
    check_api_key,
    check_response_limit,
    response_limit,
)
from pug.transports.redact import filter_loggers, quote, redact, register, server_error

if TYPE_CHECKING:
    import ssl

    import httpx  # imported when a stream or a proxied call first needs it (~40 ms)

    from pug.transports._http11 import ConnectionPool, Response

# httpx and httpcore log at DEBUG what the server answered (headers included); a proxy
# that echoes the request would put the key there.
filter_loggers(
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)

# WIRE.md: how a non-Connect HTTP error maps to a code.
_STATUS_CODES = {401: "unauthenticated", 403: "permission_denied", 404: "unimplemented"}
# The codes a Connect error may name; any other is `unknown` (as the Connect spec says).
CONNECT_CODES = frozenset(
    {
        "canceled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    }
)
_PROTO = "application/proto"
_CONNECT_PROTO = "application/connect+proto"
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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` value (delay-seconds or an HTTP-date; a date
    in the past is 0), None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit() and value.isascii():
        return float(value) if len(value) <= 12 else None
    import email.utils  # here: an HTTP-date is rare, and the module costs every process

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110: HTTP-dates are in GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


# What a Connect call raises, whichever client carried it (_http11 or httpx) and whether
# unary or streaming: the failure of the call itself (failure), an answer that is not the
# protocol's (is_answer, answer_error), or an error the server wrote (error_from_json,
# and in a stream's end message _raise_end_of_stream).


def failure(exc: Exception, timeout: float, key: str) -> PugError:
    """The PugError of a call that failed before an answer was read whole. Connection
    failures, timeouts and malformed HTTP are transient (the retry policy decides);
    whatever a library says is redacted."""
    from pug.transports._http11 import HTTPProtocolError

    if isinstance(exc, PugError):
        return exc
    if isinstance(exc, TimeoutError):  # the call's deadline (asyncio.timeout)
        return error_for("deadline_exceeded", f"timed out after {timeout:g}s")
    # httpx's own exceptions can only come once something imported it.
    http = sys.modules.get("httpx")
    if http is not None and isinstance(exc, http.TimeoutException):  # httpx's, per read
        return error_for("deadline_exceeded", f"timed out: {type(exc).__name__}")
    if isinstance(exc, ResponseTooLarge):
        return error_for("resource_exhausted", str(exc))
    if isinstance(exc, OSError | HTTPProtocolError) or (
        http is not None and isinstance(exc, http.HTTPError)
    ):
        message = f"connection failed: {type(exc).__name__}: {exc}"
    else:  # never another exception type than PugError
        message = f"unexpected failure: {type(exc).__name__}: {exc}"
    return error_for("unavailable", redact(message, key))


def is_answer(status: int, content_type: str | None, expected: str) -> bool:
    """Whether a response is the protocol's answer: a 200 of the `expected` content type.
    A 200 without a content-type is taken as the protocol's (minimal servers omit it; a
    captive portal's or a proxy's page, what this guards against, always declares one)."""
    return status == 200 and (
        content_type is None
        or content_type == expected
        or content_type.partition(";")[0].strip().lower() == expected
    )


def answer_error(
    status: int, headers: Mapping[str, str], body: bytes, expected: str, key: str
) -> PugError:
    """The PugError of a response that is_answer refused, from the start of its body: an
    error status is mapped with its `Retry-After` (429 and 503 carry one); a 200 of
    another content type is not a Pug answer, whatever its body: `unknown`, as connect-go
    says."""
    if status != 200:
        retry_after = parse_retry_after(headers.get("retry-after"))
        return error_from_json(body, status, key=key, retry_after=retry_after)
    shown = redact(headers.get("content-type", "")[:80], key)
    snippet = quote(body, key)
    return error_for(
        "unknown",
        f"unexpected content-type {shown!r} from the server (HTTP 200, expected {expected})"
        + (f": {snippet}" if snippet else ""),
    )


def error_from_json(
    body: bytes,
    status: int,
    *,
    key: str | None = None,
    retry_after: float | None = None,
) -> PugError:
    """A PugError from a Connect error body, or from the status when there is none. `key`
    is redacted from whatever the body says (a proxy may echo the request); a non-Connect
    body is quoted, at most QUOTE_CHARS characters of it."""
    import json  # here, as gzip below: modules only errors and large batches need

    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return _connect_error(data, key, retry_after)
    snippet = quote(body, key)
    return error_for(
        code_for_status(status),
        f"HTTP {status}" + (f": {snippet}" if snippet else ""),
        retry_after=retry_after,
    )


def _raise_end_of_stream(payload: bytes, key: str) -> None:
    """Raise the error a stream's end-of-stream message carries, if it carries one."""
    import json

    try:
        data: Any = json.loads(payload or b"{}")
    except (ValueError, RecursionError):
        raise error_for("internal", "unreadable end-of-stream message") from None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        raise _connect_error(error, key, None)


def _connect_error(error: dict[str, Any], key: str | None, retry_after: float | None) -> PugError:
    """The PugError of a Connect error object (`{"code", "message", "details"}`); a code
    the protocol does not name is `unknown`, as the Connect spec says."""
    code = error.get("code", "unknown")
    return server_error(
        code if isinstance(code, str) and code in CONNECT_CODES else "unknown",
        error.get("message", ""),
        error.get("details"),
        key,
        retry_after,
    )


class ConnectTransport:
    """Connect + binary protobuf over HTTP/1.1 with persistent connections.

    - `ca_bundle`: a PEM file of CAs to trust instead of the default ones.
    - `compress_above`: gzip request bodies larger than this many bytes (None: never).
    - `max_response_bytes`: the largest answer to a read (16 MiB by default); answers to
      ingestion (`sdk.*`) are tiny and limited to 64 KiB. Over it: `resource_exhausted`.
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
        max_response_bytes: int = READ_RESPONSE_LIMIT,
    ) -> None:
        self.base_url = parse_base_url(base_url)
        self._key = check_api_key(api_key)
        register(self, api_key)
        self._max_response_bytes = check_response_limit(max_response_bytes)
        self._url = self.base_url.origin + self.base_url.prefix + "/"
        self._path = urllib.parse.quote(self.base_url.prefix, safe="/%!$&'()*+,;=:@") + "/"
        self._headers = {
            "x-api-key": api_key,
            "connect-protocol-version": "1",
            "user-agent": USER_AGENT,
        }
        self._ca_bundle = ca_bundle
        self._compress_above = compress_above
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
            import ssl

            import httpx

            verify: ssl.SSLContext | bool = True
            if self._ca_bundle is not None:
                verify = ssl.create_default_context(cafile=self._ca_bundle)
            limits = httpx.Limits(
                max_connections=self._max_connections,
                max_keepalive_connections=self._max_connections,
            )
            self._client = httpx.AsyncClient(
                verify=verify, limits=limits, trust_env=True, http2=False
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
            from pug.transports._http11 import ConnectionPool, tls_context

            tls = tls_context(self._ca_bundle) if self.base_url.tls else None
            self._pool = ConnectionPool(
                self.base_url.host,
                self.base_url.port,
                tls=tls,
                max_connections=self._max_connections,
            )
        return self._pool

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        import asyncio

        headers = self._request_headers(timeout, _PROTO)
        if self._compress_above is not None and len(request) > self._compress_above:
            import gzip

            request = gzip.compress(request, compresslevel=1)
            headers["content-encoding"] = "gzip"
        limit = response_limit(method, self._max_response_bytes)
        try:
            # The call's deadline: httpx's timeout bounds each read, not the call, and a
            # server that trickles would hold it forever.
            async with asyncio.timeout(timeout):
                if self._proxied:
                    response = await self._post_httpx(method, request, headers, timeout, limit)
                else:
                    response = await self._connections().post(
                        self._path + method, headers.items(), request, max_body=limit
                    )
        except Exception as exc:
            raise failure(exc, timeout, self._key) from None
        if not is_answer(response.status, response.headers.get("content-type"), _PROTO):
            raise answer_error(response.status, response.headers, response.body, _PROTO, self._key)
        return response.body

    async def _post_httpx(
        self, method: str, request: bytes, headers: dict[str, str], timeout: float, limit: int
    ) -> Response:
        """A unary call through a proxy (httpx knows proxies, _http11 does not)."""
        from pug.transports._http11 import Response

        headers["accept-encoding"] = "gzip"  # what read_body can inflate (bounded)
        response = await self._send(method, request, headers, timeout)
        try:
            body = await read_body(response, limit)
        finally:
            await response.aclose()
        return Response(response.status_code, dict(response.headers), body)

    def stream(self, method: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        """A server-streaming call: yields each response message; errors raise PugError."""
        return self._streams.add(self._stream(method, request, timeout))

    async def _stream(self, method: str, request: bytes, timeout: float) -> AsyncGenerator[bytes]:
        import asyncio

        from pug.transports._http11 import decode_body

        headers = self._request_headers(timeout, _CONNECT_PROTO)
        # Connect compresses each message (the envelope's flag), never the whole body.
        headers["accept-encoding"] = "identity"
        limit = response_limit(method, self._max_response_bytes)
        envelope = struct.pack(">BI", 0, len(request)) + request
        # The call's deadline, as gRPC's and as the server's (connect-timeout-ms): httpx's
        # timeout bounds each read only, and a server that trickles would hold it forever.
        deadline = asyncio.get_running_loop().time() + timeout
        response: httpx.Response | None = None
        chunks: AsyncIterator[bytes] | None = None
        end: bytes | None = None
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._send(method, envelope, headers, timeout)
                status, content_type = response.status_code, response.headers.get("content-type")
                if not is_answer(status, content_type, _CONNECT_PROTO):
                    if status == 200:  # of another type: only its start is quoted
                        body = await read_body(response, QUOTE_BODY_LIMIT, cut=True)
                    else:
                        body = await read_body(response, limit)
                    raise answer_error(status, response.headers, body, _CONNECT_PROTO, self._key)
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding != "identity":
                raise error_for("unavailable", f"unexpected content-encoding {encoding[:40]!r}")
            chunks = response.aiter_raw()
            buffer = bytearray()
            while end is None:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    raise error_for(
                        "unavailable", "the stream ended without an end-of-stream message"
                    )
                buffer += chunk
                while end is None and len(buffer) >= 5:
                    flags, length = struct.unpack_from(">BI", buffer)
                    if length > limit:  # refused before it is read
                        raise error_for(
                            "resource_exhausted",
                            f"a stream message is {length} bytes, over the limit of {limit}",
                        )
                    if len(buffer) < 5 + length:
                        break
                    payload = bytes(buffer[5 : 5 + length])
                    del buffer[: 5 + length]
                    if flags & _COMPRESSED:
                        payload = decode_body(payload, True, "gzip", limit, cut=False)
                    if flags & _END_STREAM:
                        end = payload
                    else:
                        yield payload
            _raise_end_of_stream(end, self._key)
        except Exception as exc:
            raise failure(exc, timeout, self._key) from None
        finally:
            if response is not None:
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
        return await client.send(request, stream=True)

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


async def read_body(response: httpx.Response, limit: int, *, cut: bool = False) -> bytes:
    """An httpx response's body, bounded as _http11 bounds one (body_limit): a 200's at
    `limit` bytes (also once inflated: BodyTooLarge), an error's at a few KiB (the rest is
    not read). With `cut`, any response's at `limit`, the rest not read."""
    from pug.transports._http11 import BodyTooLarge, body_limit, decode_body, read_bounded

    if not cut:
        limit, cut = body_limit(response.status_code, response.headers.get("content-type"), limit)
    declared = response.headers.get("content-length", "")
    if not cut and declared.isdigit() and declared.isascii() and int(declared[:18]) > limit:
        raise BodyTooLarge(f"the response is {declared[:18]} bytes, over the limit of {limit}")
    chunks = response.aiter_raw()
    body, complete = await read_bounded(lambda: anext(chunks, b""), limit, cut)
    encoding = response.headers.get("content-encoding")
    if encoding is not None:
        body = decode_body(body, complete, encoding, limit, cut)
    return body


def uses_proxy(base_url: BaseURL) -> bool:
    """Whether the environment routes `base_url` through a proxy (as httpx reads it:
    HTTP(S)_PROXY, ALL_PROXY, NO_PROXY)."""
    # urllib.request reads only variables named *_proxy; with none set (the rule), the
    # import it costs every process (~20 ms: http.client, email, tempfile) is not made.
    if not any(name[-6:].lower() == "_proxy" for name in os.environ):
        return False
    import urllib.request

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
    import asyncio

    if not ended:
        await response.aclose()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(min(timeout, _FINISH_BODY_TIMEOUT)):
            async for _ in chunks:
                pass
