"""Pug's Python server-side SDK.

    from pug import Pug
    from pug.events import Purchase

    pug = Pug(api_key="prv_…")
    pug.track("user_42", Purchase(product_id="p1", amount=49.0, currency="USD"))

The package is assembled from two folders: the hand-written runtime (this folder)
and the generated code (`generated/pug/`: `pug.proto` stubs, `pug.events` typed events).
A wheel merges them; in a source checkout or editable install `extend_path` joins them.
"""

from typing import TYPE_CHECKING, Any

# Written this way, not `from pkgutil import extend_path`: it is the form documentation
# tools (griffe, for the API reference) recognise as one package spread over two folders.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from pug._ingest.core import Stats, TrackedEvent
from pug._version import __version__
from pug.client import AsyncPug, BoundPug, Pug
from pug.config import BatchConfig, RetryPolicy
from pug.context import Context, ContextView, context, current_context, set_context
from pug.errors import (
    AuthenticationError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PugError,
    PugValidationError,
    UnavailableError,
)
from pug.event import PugEvent
from pug.transports.base import Transport
from pug.undelivered import Undelivered

if TYPE_CHECKING:
    from pug._ingest.spool import Spool


def __getattr__(name: str) -> Any:
    # The spool (and what it imports: secrets, hashlib, pathlib) loads with the first
    # `pug.Spool` or `Pug(spool=...)`: a client without one never needs it.
    if name == "Spool":
        from pug._ingest.spool import Spool

        return Spool
    raise AttributeError(f"module 'pug' has no attribute {name!r}")


__all__ = [
    "AsyncPug",
    "AuthenticationError",
    "BatchConfig",
    "BoundPug",
    "Context",
    "ContextView",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "Pug",
    "PugError",
    "PugEvent",
    "PugValidationError",
    "RetryPolicy",
    "Spool",
    "Stats",
    "TrackedEvent",
    "Transport",
    "UnavailableError",
    "Undelivered",
    "__version__",
    "context",
    "current_context",
    "set_context",
]
