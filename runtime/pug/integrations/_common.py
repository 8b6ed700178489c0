"""What the integrations share: the default header names and tracking an unhandled
exception as Pug's well-known `ErrorOccurred` event."""

from __future__ import annotations

import logging
import traceback

from pug.client import AsyncPug, Pug
from pug.events.error import ErrorOccurred
from pug.rules import MAX_STRING_CHARS

logger = logging.getLogger("pug")

# Where a client (a browser, a mobile app, another service) says who and which session a
# request is for, when the server side cannot tell (no authenticated user).
DISTINCT_ID_HEADER = "X-Pug-Distinct-Id"
SESSION_ID_HEADER = "X-Pug-Session-Id"

Client = Pug | AsyncPug


def require_client(client: Client | None, track_exceptions: bool) -> Client | None:
    """The client, which only exception tracking needs: the middleware itself tracks nothing."""
    if track_exceptions and client is None:
        raise ValueError("track_exceptions=True needs a client (a Pug or AsyncPug) to track with")
    return client


def error_code(exc: BaseException) -> str:
    """The exception's type as code names it: `ValueError`, `myapp.billing.CardDeclined`."""
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def track_exception(client: Client | None, exc: BaseException) -> None:
    """Track `exc` as an unhandled `ErrorOccurred` in the current context (whose distinct id
    it takes). Never raises: the application's own exception is what must propagate.

    `message` and `stack` are marked pii in the catalog: `before_send` is where to redact
    them. Both are cut to the server's string limit, the stack from its start, so the
    innermost frames and the message (its last lines) are kept."""
    if client is None:
        return
    try:
        stack = "".join(traceback.format_exception(exc))
        event = ErrorOccurred(
            error_code=error_code(exc)[:MAX_STRING_CHARS],
            message=str(exc)[:MAX_STRING_CHARS],
            severity="error",
            unhandled=True,
            stack=stack[-MAX_STRING_CHARS:],
        )
        client.track(event)
    except Exception:
        logger.exception("could not track an unhandled %s", type(exc).__name__)
