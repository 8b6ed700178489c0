"""Reading sdk.events.v1 batches back into plain Python values, for the dev server and
FakePug: what a server received, as the server stores it.

`read_batch(body)` gives one `WireEvent` per event of a BatchCreateRequest body. Property
values are `str`, `int`, `float`, `bool`, `Timestamp`, or None for a PropertyValue with no
member of its oneof set (which the server refuses).
"""

from __future__ import annotations

import datetime
from typing import NamedTuple, TypeAlias


class Timestamp(NamedTuple):
    """A google.protobuf.Timestamp as sent: exact to the nanosecond."""

    seconds: int
    nanos: int

    def to_datetime(self) -> datetime.datetime:
        """As a UTC datetime (to the microsecond)."""
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        return epoch + datetime.timedelta(seconds=self.seconds, microseconds=self.nanos // 1000)


Value: TypeAlias = "str | int | float | bool | Timestamp | None"


class WireEvent(NamedTuple):
    """One sdk.events.v1.Event; None for a field not present."""

    event_id: str | None
    kind: str | None
    distinct_id: str | None
    occur_time: Timestamp | None
    session_id: str | None
    cookieless: bool | None
    auto_properties: dict[str, Value]
    custom_properties: dict[str, Value]


def read_batch(body: bytes) -> list[WireEvent]:
    """The events of a BatchCreateRequest body (ValueError if it is not one).

    Reference implementation through betterproto2 (slow: ~0.3 ms an event); to be replaced
    by a direct reader with the same results."""
    from pug.proto.common.v1 import PropertyValue
    from pug.proto.sdk.events.v1 import BatchCreateRequest

    def value(v: PropertyValue) -> Value:
        for member in ("string_value", "int_value", "double_value", "bool_value"):
            found = getattr(v, member)
            if found is not None:
                return found  # type: ignore[no-any-return]
        if v.timestamp_value is not None:
            return _timestamp(v.timestamp_value)
        return None

    try:
        request = BatchCreateRequest.parse(body)
    except Exception as exc:
        raise ValueError(f"not a BatchCreateRequest: {exc}") from None
    return [
        WireEvent(
            event_id=e.event_id,
            kind=e.kind,
            distinct_id=e.distinct_id,
            occur_time=_timestamp(e.occur_time) if e.occur_time is not None else None,
            session_id=e.session_id,
            cookieless=e.cookieless,
            auto_properties={k: value(v) for k, v in e.auto_properties.items()},
            custom_properties={k: value(v) for k, v in e.custom_properties.items()},
        )
        for e in request.events
    ]


def _timestamp(when: datetime.datetime) -> Timestamp:
    delta = when - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    seconds = delta.days * 86400 + delta.seconds
    return Timestamp(seconds, delta.microseconds * 1000)
