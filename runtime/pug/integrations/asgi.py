"""Pug for ASGI apps (Starlette, FastAPI, Django's ASGI handler, any other): a pure ASGI
middleware that runs each HTTP request and WebSocket connection in a `pug.context`.

    app = FastAPI()
    app.add_middleware(PugMiddleware, client=pug)   # or PugMiddleware(any_asgi_app, ...)

Being plain ASGI (not Starlette's `BaseHTTPMiddleware`), the app runs inside the
middleware's own call: the context reaches the endpoint, the dependencies, the middleware
inside this one (also those that await before calling on), and background tasks, which
Starlette runs after the response within the same call (sync ones in a thread that gets a
copy of the context).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pug
from pug.integrations._common import (
    DISTINCT_ID_HEADER,
    SESSION_ID_HEADER,
    Client,
    require_client,
    session_id_from_header,
    track_exception,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
DistinctIdGetter = Callable[[Scope], str | Awaitable[str | None] | None]


def header(scope: Scope, name: str) -> str | None:
    """A request header's value from an ASGI scope, None when absent or empty."""
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            return value.decode("latin-1") or None
    return None


class PugMiddleware:
    """Runs each request in `pug.context(distinct_id=..., session_id=...)`.

    `distinct_id(scope)` (sync or async) says who the request is for; by default the
    `X-Pug-Distinct-Id` header. An app that knows the user only in its endpoint (a FastAPI
    dependency) calls `pug.set_context(distinct_id=...)` there. `client` is needed only to
    track exceptions."""

    def __init__(
        self,
        app: ASGIApp,
        client: Client | None = None,
        *,
        distinct_id: DistinctIdGetter | None = None,
        distinct_id_header: str = DISTINCT_ID_HEADER,
        session_id_header: str = SESSION_ID_HEADER,
        track_exceptions: bool = False,
    ) -> None:
        self.app = app
        self.client = require_client(client, track_exceptions)
        self.distinct_id = distinct_id
        self.distinct_id_header = distinct_id_header
        self.session_id_header = session_id_header
        self.track_exceptions = track_exceptions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        if self.distinct_id is None:
            distinct_id = header(scope, self.distinct_id_header)
        else:
            found = self.distinct_id(scope)
            distinct_id = await found if inspect.isawaitable(found) else found
        async with pug.context(
            distinct_id=distinct_id,
            session_id=session_id_from_header(header(scope, self.session_id_header)),
        ):
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                if self.track_exceptions:
                    track_exception(self.client, exc)
                raise
