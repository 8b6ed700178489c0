"""What FakePug stores and how it reads it: the stored records (events, profiles,
deletions), property values as Python values and as text, numbers as the server's CEL reads
them, and property filters, filter groups and time ranges. Shared by the answers of
`query` (profiles, activity) and `insights` (InsightsService.Query).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import pug.rules as rules
from pug._wire.reader import Timestamp, Value
from pug.proto.common.v1 import (
    EventFilter,
    FilterOperator,
    LogicalOperator,
    PropertyFilter,
    PropertySource,
    PropertyValueType,
    TimeRange,
)
from pug.proto.google.protobuf import Struct
from pug.proto.shared.insights import v1 as insights_v1
from pug.proto.shared.profiles import v1 as profiles_v1

UTC = datetime.UTC
_Plain: TypeAlias = str | int | float | bool | datetime.datetime
FilterGroup: TypeAlias = profiles_v1.FilterGroup | insights_v1.FilterGroup
Granularity = insights_v1.Granularity
COMPARISONS: dict[FilterOperator, Callable[[float, float], bool]] = {
    FilterOperator.LT: float.__lt__,
    FilterOperator.LTE: float.__le__,
    FilterOperator.GT: float.__gt__,
    FilterOperator.GTE: float.__ge__,
}
NUMERIC_AGGREGATIONS = {
    insights_v1.AggregationType.SUM,
    insights_v1.AggregationType.AVG,
    insights_v1.AggregationType.MIN,
    insights_v1.AggregationType.MAX,
}


# ---- what the fake holds ------------------------------------------------------------------


@dataclass
class StoredEvent:
    seq: int  # arrival order
    event_id: str
    kind: str
    distinct_id: str  # as sent ("" for a cookieless event)
    session_id: str | None
    occur_time: datetime.datetime
    cookieless: bool
    auto: dict[str, _Plain]
    custom: dict[str, _Plain]
    owner: str  # external id of the profile it belongs to now ("" when cookieless)


@dataclass
class StoredProfile:
    id: str
    external_id: str
    properties: dict[str, Any]
    create_time: datetime.datetime
    update_time: datetime.datetime


@dataclass(frozen=True)
class Deletion:
    request_id: str
    external_id: str
    profile_id: str | None
    events: int
    requested_at: datetime.datetime
    completed_at: datetime.datetime


# ---- values -------------------------------------------------------------------------------


def utc(value: datetime.datetime | None) -> datetime.datetime:
    """An aware UTC datetime (a naive one is taken as UTC, as the SDK sends it)."""
    assert value is not None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def plain_map(values: Mapping[str, Value]) -> dict[str, _Plain]:
    """Property values as the fake stores them: timestamps as UTC datetimes (clamped to
    the years `datetime` holds), a PropertyValue with no member left out."""
    return {
        key: value.to_datetime() if isinstance(value, Timestamp) else value
        for key, value in values.items()
        if value is not None
    }


def _json_value(value: object) -> object:
    """A value for google.protobuf.Struct: datetimes become ISO-8601 strings."""
    if isinstance(value, datetime.datetime):
        return iso(value)
    return value


def iso(value: datetime.datetime) -> str:
    return utc(value).isoformat().replace("+00:00", "Z")


def to_struct(values: Mapping[str, object]) -> Struct:
    return Struct.from_dict({key: _json_value(value) for key, value in values.items()})


def as_text(value: object) -> str:
    """A value as filters and property-value lists show it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, datetime.datetime):
        return iso(value)
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


# Go's strconv.ParseFloat syntax (what the server's CEL `double()` calls), ASCII only:
# decimal with optional fraction and exponent, or hexadecimal with a `p` exponent, digits
# optionally separated by single underscores; or inf, infinity, nan in any case.
_GO_DECIMAL = re.compile(
    r"[+-]?(?:[0-9_]+\.?[0-9_]*|\.[0-9_]+)(?:[eE][+-]?[0-9][0-9_]*)?", re.ASCII
)
_GO_HEX = re.compile(
    r"[+-]?0[xX](?:[0-9a-fA-F_]+\.?[0-9a-fA-F_]*|\.[0-9a-fA-F_]+)[pP][+-]?[0-9][0-9_]*", re.ASCII
)
_GO_SPECIAL = re.compile(r"[+-]?(?:inf|infinity)|nan", re.ASCII | re.IGNORECASE)


def _underscores_ok(text: str) -> bool:
    """Go's strconv.underscoreOK: each `_` between two digits (a base prefix counts as
    one)."""
    text = text.lstrip("+-")
    hex_digits = text[:2].lower() == "0x"
    saw = "0" if hex_digits else "^"
    for char in text[2:] if hex_digits else text:
        if char.isdigit() or (hex_digits and char.lower() in "abcdef"):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def go_float(text: str) -> float | None:
    """`text` as Go's strconv.ParseFloat(text, 64) reads it, or None where it fails (bad
    syntax, or out of range). Python's float() is wider: it strips spaces and reads any
    Unicode digit (' 1', '١٢')."""
    if _GO_SPECIAL.fullmatch(text):
        return float(text)
    if _GO_HEX.fullmatch(text):
        mantissa = text.split("p")[0].split("P")[0]
        if not any(c in "0123456789abcdefABCDEF" for c in mantissa.lower().split("0x", 1)[1]):
            return None
        number = float.fromhex(text.replace("_", ""))
    elif _GO_DECIMAL.fullmatch(text):
        if not any(c.isdigit() for c in re.split("[eE]", text)[0]):
            return None
        number = float(text.replace("_", ""))
    else:
        return None
    if "_" in text and not _underscores_ok(text):
        return None
    return number if math.isfinite(number) else None  # overflow: ErrRange


def _finite_number(text: str) -> float | None:
    number = go_float(text)
    return number if number is not None and math.isfinite(number) else None


def as_number(value: object) -> float | None:
    """A property value as a number, if it is one (numeric strings included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _finite_number(value)
    return None


def _checked(text: str) -> float:
    """A filter's number, which the request's check made sure Go reads."""
    number = go_float(text)
    if number is None:
        raise ValueError(f"not a number: {text!r}")
    return number


def _equals(value: object, text: str) -> bool:
    """Whether a property value equals a filter's text value."""
    if isinstance(value, bool):
        return text.lower() == as_text(value)
    number, wanted = as_number(value), _finite_number(text)
    if isinstance(value, int | float) and number is not None and wanted is not None:
        return number == wanted
    if isinstance(value, datetime.datetime):
        try:
            return utc(value) == utc(datetime.datetime.fromisoformat(text))
        except ValueError:
            return False
    return as_text(value) == text


def event_value_type(value: object) -> PropertyValueType:
    """PropertyValueType of an event property, from its PropertyValue variant."""
    if isinstance(value, bool):
        return PropertyValueType.BOOLEAN
    if isinstance(value, int):
        return PropertyValueType.INTEGER
    if isinstance(value, float):
        return PropertyValueType.FLOAT
    if isinstance(value, datetime.datetime):
        return PropertyValueType.DATETIME
    return PropertyValueType.STRING if isinstance(value, str) else PropertyValueType.OTHER


def profile_value_type(value: object) -> PropertyValueType:
    """PropertyValueType of a profile property (a Struct value, where every number is a
    double: a whole one is stored as an integer, as the server's JSON columns do)."""
    if isinstance(value, float) and value.is_integer():
        return PropertyValueType.INTEGER
    if value is None or isinstance(value, list | dict):
        return PropertyValueType.OTHER
    return event_value_type(value)


def property_at(props: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) of `key`; a dotted key also walks nested objects (`address.city`)."""
    if key in props:
        return True, props[key]
    head, dot, rest = key.partition(".")
    nested = props.get(head)
    if dot and isinstance(nested, Mapping):
        return property_at(nested, rest)
    return False, None


# ---- filters ------------------------------------------------------------------------------

_NEGATIONS = {
    FilterOperator.NOT_EQUALS: FilterOperator.EQUALS,
    FilterOperator.NOT_CONTAINS: FilterOperator.CONTAINS,
    FilterOperator.IS_NOT_SET: FilterOperator.IS_SET,
    FilterOperator.NOT_IN: FilterOperator.IN,
    FilterOperator.NOT_BETWEEN: FilterOperator.BETWEEN,
}


def filter_matches(f: PropertyFilter, found: bool, value: object) -> bool:
    """Whether a property (found or not, and its value) passes one filter."""
    op = f.operator or FilterOperator.UNSPECIFIED
    positive = _NEGATIONS.get(op)
    if positive is not None:
        return not _passes(positive, f, found, value)
    return _passes(op, f, found, value)


def _passes(op: FilterOperator, f: PropertyFilter, found: bool, value: object) -> bool:
    if op == FilterOperator.IS_SET:
        return found and value is not None
    if not found or value is None:
        return False
    text = f.value or ""
    if op == FilterOperator.EQUALS:
        return _equals(value, text)
    if op == FilterOperator.CONTAINS:
        return text.casefold() in as_text(value).casefold()
    if op == FilterOperator.IN:
        return any(_equals(value, v) for v in f.values)
    number = as_number(value)
    if number is None:
        return False
    if op in COMPARISONS:
        return COMPARISONS[op](number, _checked(text))
    if op == FilterOperator.BETWEEN:
        return _checked(f.values[0]) <= number <= _checked(f.values[1])
    return False


PropertyLookup: TypeAlias = Callable[[PropertyFilter], tuple[bool, Any]]


def _combine(operator: LogicalOperator | None, results: Iterable[bool]) -> bool:
    return any(results) if operator == LogicalOperator.OR else all(results)


def groups_match(
    groups: Sequence[FilterGroup], operator: LogicalOperator | None, lookup: PropertyLookup
) -> bool:
    """Filter groups: each combines its filters with its operator, the groups combine with
    `operator` (AND when unspecified)."""
    return _combine(
        operator,
        (_combine(g.operator, (filter_matches(f, *lookup(f)) for f in g.filters)) for g in groups),
    )


def in_time_range(when: datetime.datetime, time_range: TimeRange | None) -> bool:
    if time_range is None:
        return True
    start = utc(time_range.from_) if time_range.from_ is not None else None
    end = utc(time_range.to) if time_range.to is not None else None
    return (start is None or start <= when) and (end is None or when < end)


def event_property(event: StoredEvent, key: str) -> tuple[bool, Any]:
    """(found, value) of an event's property: auto for `$` keys, custom for the rest."""
    props = event.auto if key.startswith(rules.AUTO_PROPERTY_PREFIX) else event.custom
    return property_at(props, key)


def event_lookup(event: StoredEvent, profiles: Mapping[str, StoredProfile]) -> PropertyLookup:
    """How a filter reads an event: PROFILE from its profile, AUTO from its auto
    properties, CUSTOM from its custom ones (unspecified: auto for `$` keys)."""

    def lookup(f: PropertyFilter) -> tuple[bool, Any]:
        key, source = f.property or "", f.source or PropertySource.UNSPECIFIED
        if source == PropertySource.PROFILE:
            profile = profiles.get(event.owner)
            return property_at(profile.properties if profile else {}, key)
        if source == PropertySource.AUTO:
            return property_at(event.auto, key)
        if source == PropertySource.CUSTOM:
            return property_at(event.custom, key)
        return event_property(event, key)

    return lookup


def event_matches(
    event: StoredEvent, event_filter: EventFilter, profiles: Mapping[str, StoredProfile]
) -> bool:
    """Whether an event passes an EventFilter: its kind (if given) and every filter."""
    if event_filter.kind and event.kind != event_filter.kind:
        return False
    lookup = event_lookup(event, profiles)
    return all(filter_matches(f, *lookup(f)) for f in event_filter.filters)
