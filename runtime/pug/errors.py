"""The SDK's exceptions: one base class, `PugError`, that carries a Connect code."""

from __future__ import annotations


class PugError(Exception):
    """A call to Pug failed. `code` is the Connect code name (`unavailable`, `not_found`, ...)."""

    def __init__(self, code: str, message: str, *, details: list[object] | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.details = details or []


class PugValidationError(PugError, ValueError):
    """An event, property or id breaks a rule; the message names the event, field and rule."""

    def __init__(self, message: str, *, kind: str | None = None, field: str | None = None) -> None:
        super().__init__("invalid_argument", message)
        self.kind = kind
        self.field = field

    def __str__(self) -> str:
        return self.message
