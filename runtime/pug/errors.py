"""The SDK's exceptions: `PugError` carries a Connect code; subclasses for the codes
callers branch on."""

from __future__ import annotations

ECHO_LIMIT = 200  # characters of a caller's input that a message may quote


def echo(value: object) -> str:
    """`repr(value)` for a message, cut to ECHO_LIMIT characters: a 10 MiB kind or key must
    not become a 10 MiB log line."""
    try:
        text = repr(value)
    except Exception:  # a repr that raises is the caller's bug, not a reason to fail
        return f"<{type(value).__name__} with a broken repr>"
    if len(text) <= ECHO_LIMIT:
        return text
    return f"{text[:ECHO_LIMIT]}… ({len(text)} characters)"


class PugError(Exception):
    """A call to Pug failed. `code` is the Connect code name (`unavailable`, `not_found`, ...),
    `message` the server's message, `details` the Connect error details (if any),
    `retry_after` the seconds the server (or a proxy) asked to wait before trying again
    (HTTP `Retry-After` on a 429/503, gRPC `grpc-retry-pushback-ms`), None if it did not."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: list[object] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after


class NotFoundError(PugError):
    """`not_found`: no profile (or deletion request, ...) has that id."""


class AuthenticationError(PugError):
    """`unauthenticated`: the API key is missing, unknown, or public where private is needed."""


class PermissionDeniedError(PugError):
    """`permission_denied`: the key may not do this."""


class InvalidArgumentError(PugError):
    """`invalid_argument`: the request breaks a rule; `details` says which."""


class UnavailableError(PugError):
    """`unavailable`: the server could not be reached or is overloaded (transient)."""


class DeadlineExceededError(PugError):
    """`deadline_exceeded`: no answer within the timeout (transient)."""


class PugValidationError(InvalidArgumentError, ValueError):
    """An event, property or id breaks a rule; the message names the event, field and rule."""

    def __init__(self, message: str, *, kind: str | None = None, field: str | None = None) -> None:
        super().__init__("invalid_argument", message)
        self.kind = kind
        self.field = field

    def __str__(self) -> str:
        return self.message


_BY_CODE: dict[str, type[PugError]] = {
    "not_found": NotFoundError,
    "unauthenticated": AuthenticationError,
    "permission_denied": PermissionDeniedError,
    "invalid_argument": InvalidArgumentError,
    "unavailable": UnavailableError,
    "deadline_exceeded": DeadlineExceededError,
}


def error_for(
    code: str,
    message: str,
    *,
    details: list[object] | None = None,
    retry_after: float | None = None,
) -> PugError:
    """The PugError (subclass, where there is one) for a Connect code."""
    return _BY_CODE.get(code, PugError)(code, message, details=details, retry_after=retry_after)
