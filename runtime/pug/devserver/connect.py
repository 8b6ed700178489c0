"""The dev server's Connect over HTTP/1.1: unary calls and server streams, on
`http.server`; GET (and POST under /api/) go to the page (`page`)."""

from __future__ import annotations

import gzip
import http.server
import json
import struct

from pug.devserver.dispatch import Dispatch
from pug.devserver.page import Page
from pug.errors import PugError, error_for

# Connect's HTTP status for each code (the Connect protocol's table).
_HTTP_STATUS = {
    "canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504,
    "not_found": 404, "already_exists": 409, "permission_denied": 403,
    "resource_exhausted": 429, "failed_precondition": 400, "aborted": 409,
    "out_of_range": 400, "unimplemented": 501, "internal": 500, "unavailable": 503,
    "data_loss": 500, "unauthenticated": 401,
}  # fmt: skip
_END_STREAM = 0x02


def connect_handler(dispatch: Dispatch, page: Page) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pug-devserver"
        # The head and the body are two writes: with Nagle on, the body would wait for
        # the client's delayed ACK of the head (40 ms a request on Linux).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            page.get(self)

        def do_POST(self) -> None:
            if page.post(self):
                return
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
