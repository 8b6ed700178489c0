"""Pug for Django: a middleware that runs each request in a `pug.context`, for sync and
async views alike, and can track the exceptions a view leaves unhandled.

    # settings.py
    MIDDLEWARE = [..., "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "pug.integrations.django.PugMiddleware", ...]
    PUG = {"client": "myapp.analytics.pug"}   # every key is optional; see OPTIONS

The distinct id is the authenticated user's pk (as a string), else the `X-Pug-Distinct-Id`
header; the session id is the `X-Pug-Session-Id` header. Both may be None: the request
still has a context, so `pug.set_context(distinct_id=...)` works after a login.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import pug
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
    from asgiref.sync import (
        async_to_sync,
        iscoroutinefunction,
        markcoroutinefunction,
        sync_to_async,
    )
    from django.conf import settings
    from django.core.exceptions import (
        BadRequest,
        ImproperlyConfigured,
        PermissionDenied,
        SuspiciousOperation,
    )
    from django.http import Http404, HttpRequest, HttpResponseBase
    from django.utils.module_loading import import_string
except ImportError as exc:
    raise needs("django", exc) from exc

DistinctIdGetter = Callable[[HttpRequest], str | Awaitable[str | None] | None]

# The keys of settings.PUG and their defaults. "client" and "distinct_id" may be the object
# or its dotted path ("myapp.analytics.pug").
OPTIONS: Mapping[str, Any] = {
    "client": None,  # a Pug or AsyncPug; needed only to track exceptions
    "distinct_id": None,  # (request) -> str | None, sync or async; None: user pk, else header
    "distinct_id_header": DISTINCT_ID_HEADER,
    "session_id_header": SESSION_ID_HEADER,
    "track_exceptions": False,  # unhandled view exceptions as ErrorOccurred
}

# Exceptions Django answers itself with a 4xx: not errors of the application.
_ANSWERED_BY_DJANGO = (Http404, PermissionDenied, BadRequest, SuspiciousOperation)


def _options() -> dict[str, Any]:
    given = getattr(settings, "PUG", None) or {}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ImproperlyConfigured(f"settings.PUG: unknown keys {unknown}; known: {list(OPTIONS)}")
    options = {**OPTIONS, **given}
    for key in ("client", "distinct_id"):
        if isinstance(options[key], str):
            options[key] = import_string(options[key])
    return options


def header(request: HttpRequest, name: str) -> str | None:
    """A request header's value, None when it is absent or empty."""
    return request.headers.get(name) or None


def user_pk(user: Any) -> str | None:
    """The pk of an authenticated user, as a string."""
    if user is None or not user.is_authenticated:
        return None
    return str(user.pk)


class PugMiddleware:
    """Runs each request in `pug.context(distinct_id=..., session_id=...)`.

    Put it after `AuthenticationMiddleware` (the default distinct id is `request.user`'s
    pk). It works in both of Django's modes, so an async view under ASGI is not run in a
    thread for its sake."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        options = _options()
        self.client: Client | None = require_client(options["client"], options["track_exceptions"])
        self.track_exceptions: bool = options["track_exceptions"]
        self.distinct_id_header: str = options["distinct_id_header"]
        self.session_id_header: str = options["session_id_header"]
        self.distinct_id: DistinctIdGetter | None = options["distinct_id"]

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._call_async(request)
        with pug.context(
            distinct_id=self._distinct_id(request),
            session_id=session_id_from_header(header(request, self.session_id_header)),
        ):
            return self.get_response(request)

    async def _call_async(self, request: HttpRequest) -> HttpResponseBase:
        distinct_id = await self._distinct_id_async(request)
        async with pug.context(
            distinct_id=distinct_id,
            session_id=session_id_from_header(header(request, self.session_id_header)),
        ):
            return cast(HttpResponseBase, await self.get_response(request))

    def _distinct_id(self, request: HttpRequest) -> str | None:
        if self.distinct_id is None:
            found = user_pk(getattr(request, "user", None))
            return found or header(request, self.distinct_id_header)
        if iscoroutinefunction(self.distinct_id):
            return cast(str | None, async_to_sync(self.distinct_id)(request))
        return cast(str | None, self.distinct_id(request))

    async def _distinct_id_async(self, request: HttpRequest) -> str | None:
        """As `_distinct_id`, without touching the database from the event loop: reading
        `request.user` runs a query, which Django refuses in async code."""
        if self.distinct_id is None:
            if hasattr(request, "auser"):  # Django 5.0+
                found = user_pk(await request.auser())
            elif hasattr(request, "user"):
                found = await sync_to_async(user_pk)(request.user)
            else:
                found = None
            return found or header(request, self.distinct_id_header)
        if iscoroutinefunction(self.distinct_id):
            return await cast(Awaitable[str | None], self.distinct_id(request))
        return cast(str | None, await sync_to_async(self.distinct_id)(request))

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Called by Django for an exception a view raised, inside this request's context."""
        if self.track_exceptions and not isinstance(exception, _ANSWERED_BY_DJANGO):
            track_exception(self.client, exception)
