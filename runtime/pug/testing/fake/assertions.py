"""What users' tests read from FakePug: `ReceivedEvent` (one accepted event in plain
Python values, `.typed` as its event class) and `assert_tracked`, which passes on the first
matching event or fails showing the closest ones received, field by field."""

from __future__ import annotations

import datetime
import functools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec.inspect as mi

from pug._wire import protobuf as wire
from pug.errors import PugValidationError
from pug.event import PugEvent, coerce, event_class, event_properties
from pug.properties import wire_value
from pug.testing.fake.values import StoredEvent, iso, utc

_CLOSEST = 3  # received events shown when assert_tracked fails


@dataclass(frozen=True)
class ReceivedEvent:
    """One event the fake accepted, in plain Python values (`FakePug.events()`).

    `properties` are the custom properties by wire name (a typed event's fields under
    their camelCase names), `auto_properties` the `$` ones. `distinct_id` is the one sent.
    """

    event_id: str
    kind: str
    distinct_id: str
    session_id: str | None
    occur_time: datetime.datetime
    properties: dict[str, Any] = field(default_factory=dict)
    auto_properties: dict[str, Any] = field(default_factory=dict)
    cookieless: bool = False

    @property
    def typed(self) -> PugEvent | None:
        """The event as its typed class (`Purchase`, ...) when its kind has one; None for a
        custom kind, or when the properties received do not make a valid typed event."""
        cls = event_class(self.kind)
        if cls is None:
            return None
        try:
            return coerce(cls, _typed_input(cls, self.properties))
        except PugValidationError:
            return None


@functools.cache
def _typed_fields(cls: type[PugEvent]) -> dict[str, bool]:
    """Wire name of each field of `cls` → whether it is a duration (sent as seconds)."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    out: dict[str, bool] = {}
    for f in info.fields:
        t = f.type.type if isinstance(f.type, mi.Metadata) else f.type
        out[f.encode_name] = isinstance(t, mi.TimeDeltaType)
    return out


def _typed_input(cls: type[PugEvent], props: Mapping[str, Any]) -> dict[str, Any]:
    """The received properties that are fields of `cls`, durations back as timedeltas."""
    out: dict[str, Any] = {}
    for wire_name, is_duration in _typed_fields(cls).items():
        if wire_name in props:
            value = props[wire_name]
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            out[wire_name] = (
                datetime.timedelta(seconds=value) if is_duration and is_number else value
            )
    return out


def _attribute_names(cls: type[PugEvent] | None) -> dict[str, str]:
    """Wire name → Python attribute name, for each field of `cls`."""
    if cls is None:
        return {}
    return dict(zip(cls.__struct_encode_fields__, cls.__struct_fields__, strict=True))


def _expectation(
    expected: PugEvent | str, properties: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(kind, wire name → the value the SDK would send, wire name → name to show)."""
    want: dict[str, Any] = {}
    if isinstance(expected, PugEvent):
        cls: type[PugEvent] | None = type(expected)
        kind, typed = event_properties(expected)
        want = {wire_name: value for wire_name, (_, value) in typed.items()}
    elif isinstance(expected, str):
        kind, cls = expected, event_class(expected)
    else:
        raise TypeError(f"expected a PugEvent or a kind string, not {type(expected).__name__}")
    labels = _attribute_names(cls)
    wire_names = {attr: wire_name for wire_name, attr in labels.items()}
    for key, value in (properties or {}).items():
        wire_name = wire_names.get(key, key)
        want[wire_name] = _sent_value(wire_name, value)
        labels[wire_name] = key
    return kind, want, labels


def _sent_value(key: str, value: object) -> object:
    """What the SDK puts on the wire for a property value (its mapping and truncation)."""
    mapped = wire_value(key, value)
    if mapped is None:
        return value
    sent = mapped[1]
    if isinstance(sent, str):
        return wire.utf8(sent, wire.MAX_STRING_BYTES).decode()
    return sent


def _same(expected: object, got: object) -> bool:
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(expected) is type(got) and expected == got
    if isinstance(expected, datetime.datetime) and isinstance(got, datetime.datetime):
        return utc(expected) == utc(got)
    return expected == got


def _show(value: object) -> str:
    return iso(value) if isinstance(value, datetime.datetime) else repr(value)


def _differences(
    want: Mapping[str, Any],
    labels: Mapping[str, str],
    event: ReceivedEvent,
    distinct_id: str | None,
) -> list[str]:
    out = []
    if distinct_id is not None and event.distinct_id != distinct_id:
        out.append(f"distinct_id: expected {distinct_id!r}, got {event.distinct_id!r}")
    for key, value in want.items():
        name = labels.get(key, key)
        if key not in event.properties:
            out.append(f"{name}: missing")
        elif not _same(value, event.properties[key]):
            out.append(f"{name}: expected {_show(value)}, got {_show(event.properties[key])}")
    return out


def _describe(
    kind: str, want: Mapping[str, Any], labels: Mapping[str, str], distinct_id: str | None
) -> str:
    text = f"expected a {kind!r} event"
    if want:
        text += " with " + ", ".join(f"{labels.get(k, k)}={_show(v)}" for k, v in want.items())
    if distinct_id is not None:
        text += f" for distinct_id {distinct_id!r}"
    return text


def _failure(
    kind: str,
    want: Mapping[str, Any],
    labels: Mapping[str, str],
    distinct_id: str | None,
    received: Sequence[ReceivedEvent],
) -> str:
    lines = [_describe(kind, want, labels, distinct_id)]
    same_kind = [(n, e) for n, e in enumerate(received, 1) if e.kind == kind]
    if not received:
        lines.append("no events received")
    elif not same_kind:
        counts = Counter(e.kind for e in received)
        summary = ", ".join(f"{k} ×{n}" for k, n in counts.most_common())
        lines.append(f"no {kind!r} events; received: {summary}")
    else:
        diffs = [(n, e, _differences(want, labels, e, distinct_id)) for n, e in same_kind]
        diffs.sort(key=lambda item: len(item[2]))  # stable: earlier events first on ties
        lines.append(f"none of the {len(same_kind)} {kind!r} event(s) received matches; closest:")
        for n, event, lines_of_event in diffs[:_CLOSEST]:
            lines.append(f"  event #{n} (distinct_id {event.distinct_id!r}):")
            lines.extend(f"    {line}" for line in lines_of_event)
    return "\n".join(lines)


def tracked(
    expected: PugEvent | str,
    properties: Mapping[str, Any] | None,
    distinct_id: str | None,
    received: Sequence[ReceivedEvent],
) -> ReceivedEvent:
    """The first received event that matches (`FakePug.assert_tracked`); AssertionError
    showing the closest ones when none does."""
    kind, want, labels = _expectation(expected, properties)
    for event in received:
        if event.kind == kind and not _differences(want, labels, event, distinct_id):
            return event
    raise AssertionError(_failure(kind, want, labels, distinct_id, received))


def received(e: StoredEvent) -> ReceivedEvent:
    return ReceivedEvent(
        event_id=e.event_id,
        kind=e.kind,
        distinct_id=e.distinct_id,
        session_id=e.session_id,
        occur_time=e.occur_time,
        properties=dict(e.custom),
        auto_properties=dict(e.auto),
        cookieless=e.cookieless,
    )
