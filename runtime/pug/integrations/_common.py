"""What the integrations share: the default header names and tracking an unhandled
exception as Pug's well-known `ErrorOccurred` event."""

from __future__ import annotations

import logging
import traceback

from pug.client import AsyncPug, Pug
from pug.ids import is_uuid
from pug.rules import MAX_STRING_CHARS

logger = logging.getLogger("pug")

# Where a client (a browser, a mobile app, another service) says who and which session a
# request is for, when the server side cannot tell (no authenticated user).
DISTINCT_ID_HEADER = "X-Pug-Distinct-Id"
SESSION_ID_HEADER = "X-Pug-Session-Id"

Client = Pug | AsyncPug


def needs(extra: str, missing: ImportError) -> ImportError:
    """What to raise when an integration's framework is not installed."""
    package = (missing.name or extra).partition(".")[0]
    return ImportError(f'pug.integrations.{extra} needs {package}: pip install "pug-sdk[{extra}]"')


def require_client(client: Client | None, track_exceptions: bool) -> Client | None:
    """The client, which only exception tracking needs: the middleware itself tracks nothing."""
    if track_exceptions and client is None:
        raise ValueError("track_exceptions=True needs a client (a Pug or AsyncPug) to track with")
    return client


def session_id_from_header(value: str | None) -> str | None:
    """The session id a request header gives, if it is a UUID (the server's rule). Another
    value would get every event of the request refused: it is left out with a warning, and
    the client's own session id is sent instead."""
    if not value:
        return None
    if is_uuid(value):
        return value
    logger.warning("session id header ignored: not a UUID: %r", value[:200])
    return None


def error_code(exc: BaseException) -> str:
    """The exception's type as code names it: `ValueError`, `myapp.billing.CardDeclined`."""
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


_CUT = "Traceback (most recent call last; outer frames left out):\n"


def stack(exc: BaseException) -> str:
    """The traceback as Python prints it, within the server's string limit: when too long,
    whole outer frames are left out, so the innermost ones and the message are kept."""
    parts = traceback.format_exception(exc)
    text = "".join(parts)
    if len(text) <= MAX_STRING_CHARS:
        return text
    kept: list[str] = []
    size = len(_CUT)
    for part in reversed(parts):
        if size + len(part) > MAX_STRING_CHARS:
            break
        kept.append(part)
        size += len(part)
    if not kept:  # the message alone is too long
        return text[-MAX_STRING_CHARS:]
    return _CUT + "".join(reversed(kept))


def track_exception(client: Client | None, exc: BaseException) -> None:
    """Track `exc` as an unhandled `ErrorOccurred` in the current context (whose distinct id
    it takes). Never raises: the application's own exception is what must propagate.

    `message` and `stack` are marked pii in the catalog: `before_send` is where to redact
    them. Both are cut to the server's string limit."""
    if client is None:
        return
    try:
        # Imported here, as the runtime imports generated modules (docs/development.md):
        # already loaded by the client's construction, so this costs a dict lookup.
        from pug.events.error import ErrorOccurred

        event = ErrorOccurred(
            error_code=error_code(exc)[:MAX_STRING_CHARS],
            message=str(exc)[:MAX_STRING_CHARS],
            severity="error",
            unhandled=True,
            stack=stack(exc),
        )
        client.track(event)
    except Exception:
        logger.exception("could not track an unhandled %s", type(exc).__name__)
