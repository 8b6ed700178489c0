"""The checks an event or identify passes before it is encoded: the server's rules on
ids, kinds, times and sizes, applied by the client so one bad call is dropped alone
(the server would refuse the whole batch it travels in).

Every check raises `PugValidationError`; the core counts it and logs it (or re-raises it
with `strict=True`). The server's rules (patterns, limits, prefixes) come from `pug.rules`,
generated from the catalog's contract; only the SDK's own size bound is written here.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Final

from pug import ids, rules
from pug._wire.protobuf import datetime_parts
from pug.errors import PugValidationError, echo

# ---- the server's rules: generated from the catalog's contract, the one copy ----------------

# The checks' limits under the names this module's callers know them by.
BATCH_MAX_EVENTS: Final = rules.MAX_BATCH_EVENTS
RESERVED_ID_PREFIX: Final = rules.RESERVED_ID_PREFIX

# The SDK's own bound (not the server's): one batch is one message on the server's
# internal bus (1 MiB limit), so a request stays well below it, and so does one event.
MAX_REQUEST_BYTES: Final = 512 * 1024
MAX_EVENT_BYTES: Final = MAX_REQUEST_BYTES


def check_distinct_id(value: object, name: str) -> None:
    """The identity rules of the contract: a non-empty string, not the reserved prefix."""
    if not isinstance(value, str) or not value:
        raise PugValidationError(f"{name} must be a non-empty string", field=name)
    if value.startswith(RESERVED_ID_PREFIX):
        raise PugValidationError(
            f"{name} must not start with the reserved {RESERVED_ID_PREFIX!r} prefix", field=name
        )


def check_kind(kind: object) -> None:
    """The contract's rule for Event.kind."""
    if not isinstance(kind, str) or not rules.KIND_PATTERN.matches(kind):
        raise PugValidationError(f"kind {echo(kind)} must match {rules.KIND_PATTERN.source}")


def check_event_ids(distinct_id: object, kind: object) -> None:
    """What every event is checked for: its distinct id and its kind."""
    check_distinct_id(distinct_id, "distinct_id")
    check_kind(kind)


def check_session_id(session_id: object) -> None:
    if not ids.is_uuid(session_id):
        raise PugValidationError("session_id must be a UUID string", field="session_id")


def timestamp_parts(value: object, name: str) -> tuple[int, int]:
    """(seconds, nanos) of a caller's time; a non-datetime or a time the server cannot
    store (outside the years 1 to 9999, a tzinfo that raises) is a validation error."""
    if not isinstance(value, datetime.datetime):
        raise PugValidationError(
            f"{name} must be a datetime, not {type(value).__name__}", field=name
        )
    try:
        return datetime_parts(value)
    except Exception as exc:  # out of range, or a tzinfo that raises
        raise PugValidationError(
            f"{name} cannot be sent: {echo(str(exc))[1:-1]}", field=name
        ) from None


def check_hooked(distinct_id: object, kind: object, event_id: object, session_id: object,
                 occur_time: object) -> None:  # fmt: skip
    """What `before_send` returned is checked like a caller's input (its event id, session
    id and time are taken as it left them)."""
    check_event_ids(distinct_id, kind)
    for name, value in (("event_id", event_id), ("session_id", session_id)):
        if not ids.is_uuid(value):
            raise PugValidationError(
                f"before_send set {name} to {echo(value)}, not a UUID", field=name
            )
    if not isinstance(occur_time, datetime.datetime):
        raise PugValidationError("before_send set occur_time to a non-datetime")


def check_event_size(kind: str, size: int) -> None:
    """One framed event must fit one request alone."""
    if size > MAX_EVENT_BYTES:
        raise PugValidationError(
            f"event {echo(kind)} encodes to {size} bytes, over the "
            f"{MAX_EVENT_BYTES}-byte limit of one request"
        )


def check_identify(
    external_id: object, traits: object, anonymous_id: object, device_id: object
) -> None:
    """The rules of IdentifyRequest (the traits' size is checked once encoded)."""
    check_distinct_id(external_id, "external_id")
    if anonymous_id is not None and (
        not isinstance(anonymous_id, str)
        or not rules.ANONYMOUS_ID_PATTERN.matches(anonymous_id)
        or len(anonymous_id) > rules.MAX_ANONYMOUS_ID_CHARS
    ):
        raise PugValidationError(
            f"anonymous_id must start with {rules.ANONYMOUS_ID_PREFIX!r} and be at most "
            f"{rules.MAX_ANONYMOUS_ID_CHARS} characters",
            field="anonymous_id",
        )
    if device_id is not None and (
        not isinstance(device_id, str) or len(device_id) > rules.MAX_DEVICE_ID_CHARS
    ):
        raise PugValidationError(
            f"device_id must be a string of at most {rules.MAX_DEVICE_ID_CHARS} characters",
            field="device_id",
        )
    if traits is not None and not isinstance(traits, Mapping):
        raise PugValidationError("traits must be a mapping", field="traits")


def check_identify_size(size: int) -> None:
    if size > MAX_REQUEST_BYTES:  # the server would fail it, again and again
        raise PugValidationError(
            f"identify encodes to {size} bytes, over the {MAX_REQUEST_BYTES}-byte "
            "limit of one request: send fewer or smaller traits",
            field="traits",
        )
