"""Pug for Flask: an extension that runs each request in a `pug.context`, from the first
`before_request` hook to the request's teardown, and can track the exceptions a view
leaves unhandled.

    pug_flask = PugExtension(client=pug)
    pug_flask.init_app(app)          # or PugExtension(app, client=pug)
"""

from __future__ import annotations

from collections.abc import Callable

import pug
from pug.context import Context
from pug.integrations._common import (
    DISTINCT_ID_HEADER,
    SESSION_ID_HEADER,
    Client,
    needs,
    require_client,
    session_id_from_header,
    track_exception,
)

try:
    import flask
except ImportError as exc:
    raise needs("flask", exc) from exc

DistinctIdGetter = Callable[[flask.Request], str | None]

_G_KEY = "_pug_context"  # where a request's open context waits for its teardown


class PugExtension:
    """`distinct_id(request)` says who the request is for (it may read `flask.g` or
    flask-login's `current_user`: it runs in the request); by default the
    `X-Pug-Distinct-Id` header. The session id is the `X-Pug-Session-Id` header. `client`
    is needed only to track exceptions."""

    def __init__(
        self,
        app: flask.Flask | None = None,
        client: Client | None = None,
        *,
        distinct_id: DistinctIdGetter | None = None,
        distinct_id_header: str = DISTINCT_ID_HEADER,
        session_id_header: str = SESSION_ID_HEADER,
        track_exceptions: bool = False,
    ) -> None:
        self.client = require_client(client, track_exceptions)
        self.distinct_id = distinct_id
        self.distinct_id_header = distinct_id_header
        self.session_id_header = session_id_header
        self.track_exceptions = track_exceptions
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        # First of the app's hooks: code in the other before_request functions has the context.
        app.before_request_funcs.setdefault(None, []).insert(0, self._enter)
        app.teardown_request(self._exit)
        app.extensions["pug"] = self

    def _enter(self) -> None:
        request = flask.request
        if self.distinct_id is None:
            distinct_id = request.headers.get(self.distinct_id_header) or None
        else:
            distinct_id = self.distinct_id(request)
        context = pug.context(
            distinct_id=distinct_id,
            session_id=session_id_from_header(request.headers.get(self.session_id_header)),
        )
        context.__enter__()
        setattr(flask.g, _G_KEY, context)

    def _exit(self, exc: BaseException | None) -> None:
        # Flask hands teardown the exception no error handler took (the 500s).
        context: Context | None = flask.g.pop(_G_KEY, None)
        if context is None:  # the request ended before its before_request hooks ran
            return
        try:
            if exc is not None and self.track_exceptions:
                track_exception(self.client, exc)
        finally:
            context.__exit__(None, None, None)
