"""FakePug: the Pug services the SDK uses, in process and in memory, for tests and local
development.

    from pug import Pug
    from pug.events import Purchase
    from pug.testing import FakePug

    fake = FakePug()
    pug = Pug(api_key="prv_test", transport=fake)
    fake.attach(pug)  # assertions flush the client first, so tests never sleep
    pug.track("user_1", Purchase(product_id="p1", amount=49.0, currency="USD"))
    fake.assert_tracked(Purchase(product_id="p1", amount=49.0, currency="USD"))
    assert pug.profiles.get_by_external_id("user_1").external_id == "user_1"

`FakePug` is an `InMemoryTransport` whose handler answers like a Pug server:

- ingestion: `BatchCreate` checks every event against the server's validation rules
  (one invalid event rejects the whole batch with `invalid_argument`, naming the event,
  field and rule) and stores the rest; `Identify` upserts a profile, merges its traits
  and folds an anonymous profile into the identified one;
- reads, computed from what it received: profiles (get, list with filter groups, delete,
  data-subject deletion), activity (feed, event explorer, heatmap, profile stats, filter
  schema, property values) and insights (trends, segment users, filter schema, property
  values). Funnels, retention, user flows, top-k, segmentation and trends breakdowns
  answer `unimplemented`. Read requests are checked by the server's rules too: as on a
  real server, the activity feed and heatmap need `distinct_id` set ("" for everyone).

`handle(method, body)` and `handle_stream(method, body)` take and return serialized
protobuf, so a dev server can put the fake behind HTTP or gRPC; a lock guards the state.
Failure injection (`fail`, `latency`) and the request log come from `InMemoryTransport`.

Where the real server's behaviour is not pinned down, the fake decides:
- a resent event (same event_id, kind and minute of occur_time) is accepted again but
  stored once, as the server's storage ends up doing; identify applies at once;
- an anonymous id merged by identify stays an alias of the identified profile: events
  sent with it later belong to that profile too;
- filters: EQUALS/IN compare numbers numerically and the rest as text, CONTAINS ignores
  case, LT/LTE/GT/GTE/BETWEEN (inclusive) need a number; each NOT_ operator matches
  exactly what its positive form does not (an unset property included);
- days and buckets are UTC (trends honour `timezone`); weeks start on Monday;
- cookieless events belong to no profile: trends count them only with
  `include_cookieless`, and never as users;
- SegmentUsers returns the users who did every one of the given events (sorted).
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import math
import re
import threading
import uuid
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar

import betterproto2
import msgspec.inspect as mi
from pug_codegen.patterns import compile_pattern

from pug import wire
from pug.client import AsyncPug, Pug
from pug.errors import PugError, PugValidationError, error_for
from pug.event import PugEvent, coerce, event_class, event_properties
from pug.properties import wire_value
from pug.proto.common.v1 import (
    EventFilter,
    EventNameMeta,
    FilterOperator,
    GetFilterSchemaRequest,
    GetFilterSchemaResponse,
    LogicalOperator,
    PropertyFilter,
    PropertyKeyMeta,
    PropertySource,
    PropertyValue,
    PropertyValueType,
    TimeRange,
)
from pug.proto.google.protobuf import Struct
from pug.proto.sdk.events.v1 import BatchCreateRequest, BatchCreateResponse, Event
from pug.proto.sdk.profiles.v1 import IdentifyRequest, IdentifyResponse
from pug.proto.shared.activity import v1 as activity_v1
from pug.proto.shared.insights import v1 as insights_v1
from pug.proto.shared.profiles import v1 as profiles_v1
from pug.testing import InMemoryTransport
from pug.transports.base import BATCH_CREATE, IDENTIFY

__all__ = ["FakePug", "ReceivedEvent"]

PROJECT_ID = "fake-project"
MAX_BATCH_EVENTS = 1000  # BatchCreateRequest.events: repeated.max_items
MAX_STRING_CHARS = 1024  # PropertyValue.string_value: string.max_len (code points)
LIST_PAGE_SIZE = 100  # profiles per ListResponse message
DEFAULT_PAGE_SIZE = 50  # feed, event explorer and segment pages when page_size is 0
MAX_PAGE_SIZE = 1000
FLUSH_TIMEOUT = 10.0  # seconds an assertion waits for an attached client's flush
_CLOSEST = 3  # received events shown when assert_tracked fails

_UTC = datetime.UTC
_Plain: TypeAlias = str | int | float | bool | datetime.datetime
M = TypeVar("M", bound=betterproto2.Message)
_Unary: TypeAlias = tuple[type[betterproto2.Message], Callable[[Any], betterproto2.Message]]
_Stream: TypeAlias = tuple[
    type[betterproto2.Message], Callable[[Any], Sequence[betterproto2.Message]]
]
_FilterGroup: TypeAlias = profiles_v1.FilterGroup | insights_v1.FilterGroup


# ---- the server's validation rules (catalog contract: buf.validate) ----------------------


@dataclass(frozen=True)
class _Violation:
    field: str  # protovalidate's field path: events[2].kind
    rule_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def _raise_if(violations: list[_Violation]) -> None:
    """Reject the request, as the server's validation interceptor does, naming every rule
    broken; `details` lists them as {field, rule_id, message}."""
    if violations:
        details: list[object] = [
            {"field": v.field, "rule_id": v.rule_id, "message": v.message} for v in violations
        ]
        message = "; ".join(str(v) for v in violations)
        raise error_for("invalid_argument", message, details=details)


class _Pattern:
    """A `string.pattern` rule: shown as written, matched with RE2's anchoring."""

    def __init__(self, source: str) -> None:
        self.source = source
        # RE2 (the server's engine) anchors `$` at the very end, where Python's `$` also
        # matches before a final newline: compiled as the typed events' rules are.
        self._regex = compile_pattern(source)

    def matches(self, value: str) -> bool:
        return self._regex.search(value) is not None


_KIND = _Pattern("^[a-zA-Z0-9_.-]+$")
_KIND_OR_EMPTY = _Pattern("^[a-zA-Z0-9_.-]*$")
_PROPERTY_PATH = _Pattern("^\\$?[a-zA-Z0-9_-]+(\\.[a-zA-Z0-9_-]+)*$")
_AGGREGATION_PROPERTY = _Pattern("^\\$?[a-zA-Z0-9_.-]*$")
_ANONYMOUS_ID = _Pattern("^$|^anon-")
_TIMEZONE = _Pattern("^[A-Za-z0-9_+/-]*$")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _required(out: list[_Violation], path: str, value: object) -> bool:
    """`required` on a field with presence: set, even to its zero value. True if set."""
    if value is None:
        out.append(_Violation(path, "required", "value is required"))
        return False
    return True


def _pattern(out: list[_Violation], path: str, value: str | None, pattern: _Pattern) -> None:
    if value is not None and not pattern.matches(value):
        message = f"value does not match regex pattern `{pattern.source}`"
        out.append(_Violation(path, "string.pattern", message))


def _uuid(out: list[_Violation], path: str, value: str | None) -> None:
    if value == "":
        out.append(
            _Violation(path, "string.uuid_empty", "value is empty, which is not a valid UUID")
        )
    elif value is not None and _UUID.fullmatch(value) is None:
        out.append(_Violation(path, "string.uuid", "value must be a valid UUID"))


def _max_len(out: list[_Violation], path: str, value: str | None, limit: int) -> None:
    # Characters are code points, as in protovalidate (not UTF-8 bytes).
    if value is not None and len(value) > limit:
        message = f"value length must be at most {limit} characters"
        out.append(_Violation(path, "string.max_len", message))


def _max_items(out: list[_Violation], path: str, items: Sequence[object], limit: int) -> None:
    if len(items) > limit:
        message = f"value must contain no more than {limit} item(s)"
        out.append(_Violation(path, "repeated.max_items", message))


def _min_items(out: list[_Violation], path: str, items: Sequence[object], limit: int) -> None:
    if len(items) < limit:
        message = f"value must contain at least {limit} item(s)"
        out.append(_Violation(path, "repeated.min_items", message))


def _enum(
    out: list[_Violation],
    path: str,
    value: betterproto2.Enum | None,
    *,
    required: bool = False,
    not_zero: bool = False,
) -> None:
    """`enum.defined_only` (with `required` and `not_in: [0]` where the contract says so)."""
    if value is None:
        if required:
            _required(out, path, value)
        return
    if int(value) not in {int(member) for member in type(value)}:
        message = "value must be one of the defined enum values"
        out.append(_Violation(path, "enum.defined_only", message))
    elif not_zero and int(value) == 0:
        out.append(_Violation(path, "enum.not_in", "value must not be in list [0]"))


def _page_size(out: list[_Violation], value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_PAGE_SIZE:
        message = (
            f"value must be greater than or equal to 0 and less than or equal to {MAX_PAGE_SIZE}"
        )
        out.append(_Violation("page_size", "int32.gte_lte", message))


def _event_violations(index: int, event: Event) -> list[_Violation]:
    """Every rule of sdk.events.v1.Event (fields, then its CEL rules) for events[index]."""
    out: list[_Violation] = []
    at = f"events[{index}]"
    if _required(out, f"{at}.event_id", event.event_id):
        _uuid(out, f"{at}.event_id", event.event_id)
    for name, props in (("auto_properties", event.auto_properties),
                        ("custom_properties", event.custom_properties)):  # fmt: skip
        for key, value in props.items():
            out.extend(_property_value_violations(f"{at}.{name}[{json.dumps(key)}]", value))
    if _required(out, f"{at}.kind", event.kind):
        _pattern(out, f"{at}.kind", event.kind, _KIND)
    _required(out, f"{at}.occur_time", event.occur_time)
    _uuid(out, f"{at}.session_id", event.session_id)
    if not all(key.startswith("$") for key in event.auto_properties):
        message = "auto_properties keys must start with '$'"
        out.append(_Violation(at, "event.auto_properties_dollar_prefix", message))
    if any(key.startswith("$") for key in event.custom_properties):
        message = "custom_properties keys must not start with '$' (reserved for auto-properties)"
        out.append(_Violation(at, "event.custom_properties_no_dollar_prefix", message))
    if not event.cookieless and not (event.distinct_id and event.session_id):
        message = "distinct_id and session_id are required unless cookieless is true"
        out.append(_Violation(at, "event.identity_required_unless_cookieless", message))
    return out


def _property_value_violations(path: str, value: PropertyValue) -> list[_Violation]:
    out: list[_Violation] = []
    which, _ = betterproto2.which_one_of(value, "value")
    if not which:
        out.append(
            _Violation(f"{path}.value", "required", "exactly one field is required in oneof")
        )
    _max_len(out, f"{path}.string_value", value.string_value, MAX_STRING_CHARS)
    if value.double_value is not None and not math.isfinite(value.double_value):
        out.append(_Violation(f"{path}.double_value", "double.finite", "value must be finite"))
    return out


def _batch_violations(request: BatchCreateRequest) -> list[_Violation]:
    out: list[_Violation] = []
    _max_items(out, "events", request.events, MAX_BATCH_EVENTS)
    for index, event in enumerate(request.events):
        out.extend(_event_violations(index, event))
    # BatchCreateRequest's own CEL rules; the event that breaks one is named.
    for index, event in enumerate(request.events):
        if event.cookieless and (event.distinct_id or event.session_id):
            message = "cookieless events must not send distinct_id or session_id"
            out.append(
                _Violation(f"events[{index}]", "batch.cookieless_identity_server_owned", message)
            )
        if (event.distinct_id or "").startswith("cookieless-"):
            message = "distinct_id must not start with the reserved 'cookieless-' prefix"
            out.append(_Violation(f"events[{index}]", "batch.distinct_id_reserved_prefix", message))
    return out


def _identify_violations(request: IdentifyRequest) -> list[_Violation]:
    out: list[_Violation] = []
    if _required(out, "external_id", request.external_id) and (
        request.external_id or ""
    ).startswith("cookieless-"):
        message = "external_id must not start with the reserved 'cookieless-' prefix"
        out.append(_Violation("external_id", "external_id.reserved_prefix", message))
    _max_len(out, "anonymous_id", request.anonymous_id, 255)
    _pattern(out, "anonymous_id", request.anonymous_id, _ANONYMOUS_ID)
    _max_len(out, "device_id", request.device_id, 36)
    return out


_SET_OPERATORS = {FilterOperator.IS_SET, FilterOperator.IS_NOT_SET}
_LIST_OPERATORS = {
    FilterOperator.IN, FilterOperator.NOT_IN, FilterOperator.BETWEEN, FilterOperator.NOT_BETWEEN
}  # fmt: skip
_RANGE_OPERATORS = {FilterOperator.BETWEEN, FilterOperator.NOT_BETWEEN}
_COMPARISONS: dict[FilterOperator, Callable[[float, float], bool]] = {
    FilterOperator.LT: float.__lt__,
    FilterOperator.LTE: float.__le__,
    FilterOperator.GT: float.__gt__,
    FilterOperator.GTE: float.__ge__,
}


def _filter_violations(path: str, f: PropertyFilter) -> list[_Violation]:
    """common.v1.PropertyFilter: its field rules, then its CEL rules in contract order."""
    out: list[_Violation] = []
    if _required(out, f"{path}.property", f.property):
        _pattern(out, f"{path}.property", f.property, _PROPERTY_PATH)
    _enum(out, f"{path}.operator", f.operator, required=True, not_zero=True)
    _enum(out, f"{path}.source", f.source)
    op, value, values = f.operator, f.value or "", f.values

    def broken(rule: str, message: str) -> None:
        out.append(_Violation(path, f"property_filter.{rule}", message))

    if op not in _SET_OPERATORS | _LIST_OPERATORS and value == "":
        broken("value_required", "value is required for this operator")
    if not _numbers_given(op, value, values):
        operators = "lte/gte/lt/gt/between/not_between"
        broken(
            "numeric_value_required",
            f"value/values must contain valid numbers for {operators} operators",
        )
    if op in _LIST_OPERATORS and not values:
        message = "values must not be empty for in/not_in/between/not_between operators"
        broken("values_required", message)
    if op not in _LIST_OPERATORS and values:
        broken("values_not_allowed", "values must be empty for this operator")
    if op in _RANGE_OPERATORS and len(values) != 2:
        broken(
            "between_requires_two_values", "between/not_between operators require exactly 2 values"
        )
    if op in _SET_OPERATORS and value != "":
        broken(
            "value_not_allowed_for_set_operators",
            "value must be empty for is_set/is_not_set operators",
        )
    numeric_range = op in _RANGE_OPERATORS and _numbers_given(op, value, values)
    if numeric_range and float(values[0]) > float(values[1]):
        broken("between_ordered_values", "between/not_between requires values[0] <= values[1]")
    return out


def _is_number(text: str) -> bool:
    """CEL's `double(text) == double(text)`: the text parses as a number, and not NaN."""
    try:
        return not math.isnan(float(text))
    except ValueError:
        return False


def _numbers_given(op: FilterOperator | None, value: str, values: Sequence[str]) -> bool:
    """The rule property_filter.numeric_value_required: comparisons need a numeric value,
    ranges two numeric values."""
    if op in _COMPARISONS:
        return _is_number(value)
    if op in _RANGE_OPERATORS:
        return len(values) >= 2 and _is_number(values[0]) and _is_number(values[1])
    return True


def _filters_violations(path: str, filters: Sequence[PropertyFilter]) -> list[_Violation]:
    return [v for i, f in enumerate(filters) for v in _filter_violations(f"{path}[{i}]", f)]


def _event_filter_violations(path: str, event_filter: EventFilter) -> list[_Violation]:
    out: list[_Violation] = []
    _pattern(out, f"{path}.kind", event_filter.kind, _KIND_OR_EMPTY)
    out.extend(_filters_violations(f"{path}.filters", event_filter.filters))
    return out


def _groups_violations(
    groups: Sequence[_FilterGroup], operator: LogicalOperator | None
) -> list[_Violation]:
    out: list[_Violation] = []
    for i, group in enumerate(groups):
        _min_items(out, f"filter_groups[{i}].filters", group.filters, 1)
        out.extend(_filters_violations(f"filter_groups[{i}].filters", group.filters))
        _enum(out, f"filter_groups[{i}].operator", group.operator)
    _enum(out, "filter_groups_operator", operator)
    return out


def _time_range_violations(path: str, time_range: TimeRange) -> list[_Violation]:
    out: list[_Violation] = []
    has_from = _required(out, f"{path}.from", time_range.from_)
    has_to = _required(out, f"{path}.to", time_range.to)
    if has_from and has_to and not _utc(time_range.from_) < _utc(time_range.to):
        message = "time_range.from must be before time_range.to"
        out.append(_Violation(path, "time_range.from_before_to", message))
    return out


def _feed_violations(
    request: activity_v1.GetActivityFeedRequest | activity_v1.GetEventExplorerRequest,
    rule_prefix: str,
    *,
    distinct_id_required: bool,
) -> list[_Violation]:
    out: list[_Violation] = []
    if distinct_id_required:
        _required(out, "distinct_id", request.distinct_id)
    if request.time_range is not None:
        out.extend(_time_range_violations("time_range", request.time_range))
    _max_items(out, "property_filters", request.property_filters, 20)
    out.extend(_filters_violations("property_filters", request.property_filters))
    _page_size(out, request.page_size)
    _max_items(out, "events", request.events, 50)
    for i, event_filter in enumerate(request.events):
        out.extend(_event_filter_violations(f"events[{i}]", event_filter))
    if len(request.events) > 1 and not all(e.kind or e.filters for e in request.events):
        message = "each event filter must specify a kind or at least one property filter"
        out.append(_Violation("", f"{rule_prefix}.events_non_empty_in_multi", message))
    return out


def _property_values_violations(
    request: activity_v1.GetPropertyValuesRequest | insights_v1.GetPropertyValuesRequest,
) -> list[_Violation]:
    out: list[_Violation] = []
    if _required(out, "property_key", request.property_key):
        _pattern(out, "property_key", request.property_key, _PROPERTY_PATH)
    _enum(out, "source", request.source, required=True)
    _pattern(out, "event_kind", request.event_kind, _KIND_OR_EMPTY)
    return out


def _filter_schema_violations(request: GetFilterSchemaRequest) -> list[_Violation]:
    out: list[_Violation] = []
    _pattern(out, "event_kind", request.event_kind, _KIND_OR_EMPTY)
    for i, value_type in enumerate(request.allowed_types):
        _enum(out, f"allowed_types[{i}]", value_type, not_zero=True)
    return out


def _event_queries_violations(
    path: str, queries: Sequence[insights_v1.EventQuery]
) -> list[_Violation]:
    out: list[_Violation] = []
    for i, query in enumerate(queries):
        at = f"{path}[{i}]"
        if query.event is not None:
            out.extend(_event_filter_violations(f"{at}.event", query.event))
        _enum(out, f"{at}.aggregation", query.aggregation)
        _pattern(
            out, f"{at}.aggregation_property", query.aggregation_property, _AGGREGATION_PROPERTY
        )
        if query.aggregation in _NUMERIC_AGGREGATIONS and not query.aggregation_property:
            message = (
                "aggregation_property is required for SUM, AVG, MIN, and MAX aggregation types"
            )
            out.append(_Violation(at, "event_query.property_required_for_numeric_agg", message))
    return out


Granularity = insights_v1.Granularity
# QueryRequest's CEL rules: the longest time range each granularity accepts.
_GRANULARITY_SPANS = {
    Granularity.MINUTE: (datetime.timedelta(hours=6), "minute", "6 hours"),
    Granularity.HOUR: (datetime.timedelta(hours=336), "hour", "14 days"),
    Granularity.DAY: (datetime.timedelta(hours=8760), "day", "365 days"),
    Granularity.WEEK: (datetime.timedelta(hours=35064), "week", "1461 days (~4 years)"),
    Granularity.MONTH: (datetime.timedelta(hours=87660), "month", "3652 days (~10 years)"),
}


def _query_violations(request: insights_v1.QueryRequest) -> list[_Violation]:
    out: list[_Violation] = []
    if _required(out, "spec", request.spec) and request.spec is not None:
        spec = request.spec
        _enum(out, "spec.insight_type", spec.insight_type, required=True, not_zero=True)
        out.extend(_event_queries_violations("spec.events", spec.events))
        out.extend(
            _prefixed("spec.", _groups_violations(spec.filter_groups, spec.filter_groups_operator))
        )
    span_ok = _required(out, "time_range", request.time_range) and request.time_range is not None
    if request.time_range is not None:
        found = _time_range_violations("time_range", request.time_range)
        out.extend(found)
        span_ok = not found
    _enum(out, "granularity", request.granularity, required=True, not_zero=True)
    _max_len(out, "timezone", request.timezone, 64)
    _pattern(out, "timezone", request.timezone, _TIMEZONE)
    limit = _GRANULARITY_SPANS.get(request.granularity) if request.granularity else None
    if span_ok and limit is not None and request.time_range is not None:
        longest, name, words = limit
        if _utc(request.time_range.to) - _utc(request.time_range.from_) > longest:
            rule = f"query_request.granularity_{name}_max_range"
            message = f"GRANULARITY_{name.upper()} requires a time range of at most {words}"
            out.append(_Violation("", rule, message))
    return out


def _segment_violations(request: insights_v1.SegmentUsersRequest) -> list[_Violation]:
    out: list[_Violation] = []
    if _required(out, "time_range", request.time_range) and request.time_range is not None:
        out.extend(_time_range_violations("time_range", request.time_range))
    _min_items(out, "events", request.events, 1)
    out.extend(_event_queries_violations("events", request.events))
    _page_size(out, request.page_size)
    out.extend(_groups_violations(request.filter_groups, request.filter_groups_operator))
    return out


def _prefixed(prefix: str, violations: list[_Violation]) -> list[_Violation]:
    return [_Violation(prefix + v.field, v.rule_id, v.message) for v in violations]


# ---- what the fake holds ------------------------------------------------------------------


@dataclass
class _Event:
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
class _Profile:
    id: str
    external_id: str
    properties: dict[str, Any]
    create_time: datetime.datetime
    update_time: datetime.datetime


@dataclass(frozen=True)
class _Deletion:
    request_id: str
    external_id: str
    profile_id: str | None
    events: int
    requested_at: datetime.datetime
    completed_at: datetime.datetime


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


# ---- values -------------------------------------------------------------------------------


def _utc(value: datetime.datetime | None) -> datetime.datetime:
    """An aware UTC datetime (a naive one is taken as UTC, as the SDK sends it)."""
    assert value is not None
    return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)


def _now() -> datetime.datetime:
    return datetime.datetime.now(_UTC)


def _plain(value: PropertyValue) -> _Plain | None:
    """The Python value of a PropertyValue's set variant."""
    _, got = betterproto2.which_one_of(value, "value")
    if isinstance(got, datetime.datetime):
        return _utc(got)
    return got if isinstance(got, str | int | float | bool) else None


def _plain_map(values: Mapping[str, PropertyValue]) -> dict[str, _Plain]:
    out: dict[str, _Plain] = {}
    for key, value in values.items():
        plain = _plain(value)
        if plain is not None:
            out[key] = plain
    return out


def _json_value(value: object) -> object:
    """A value for google.protobuf.Struct: datetimes become ISO-8601 strings."""
    if isinstance(value, datetime.datetime):
        return _iso(value)
    return value


def _iso(value: datetime.datetime) -> str:
    return _utc(value).isoformat().replace("+00:00", "Z")


def _struct(values: Mapping[str, object]) -> Struct:
    return Struct.from_dict({key: _json_value(value) for key, value in values.items()})


def _text(value: object) -> str:
    """A value as filters and property-value lists show it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, datetime.datetime):
        return _iso(value)
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def _finite_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _number(value: object) -> float | None:
    """A property value as a number, if it is one (numeric strings included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _finite_number(value)
    return None


def _equals(value: object, text: str) -> bool:
    """Whether a property value equals a filter's text value."""
    if isinstance(value, bool):
        return text.lower() == _text(value)
    number, wanted = _number(value), _finite_number(text)
    if isinstance(value, int | float) and number is not None and wanted is not None:
        return number == wanted
    if isinstance(value, datetime.datetime):
        try:
            return _utc(value) == _utc(datetime.datetime.fromisoformat(text))
        except ValueError:
            return False
    return _text(value) == text


def _event_value_type(value: object) -> PropertyValueType:
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


def _profile_value_type(value: object) -> PropertyValueType:
    """PropertyValueType of a profile property (a Struct value, where every number is a
    double: a whole one is stored as an integer, as the server's JSON columns do)."""
    if isinstance(value, float) and value.is_integer():
        return PropertyValueType.INTEGER
    if value is None or isinstance(value, list | dict):
        return PropertyValueType.OTHER
    return _event_value_type(value)


def _lookup(props: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) of `key`; a dotted key also walks nested objects (`address.city`)."""
    if key in props:
        return True, props[key]
    head, dot, rest = key.partition(".")
    nested = props.get(head)
    if dot and isinstance(nested, Mapping):
        return _lookup(nested, rest)
    return False, None


# ---- filters ------------------------------------------------------------------------------

_NEGATIONS = {
    FilterOperator.NOT_EQUALS: FilterOperator.EQUALS,
    FilterOperator.NOT_CONTAINS: FilterOperator.CONTAINS,
    FilterOperator.IS_NOT_SET: FilterOperator.IS_SET,
    FilterOperator.NOT_IN: FilterOperator.IN,
    FilterOperator.NOT_BETWEEN: FilterOperator.BETWEEN,
}
_NUMERIC_AGGREGATIONS = {
    insights_v1.AggregationType.SUM,
    insights_v1.AggregationType.AVG,
    insights_v1.AggregationType.MIN,
    insights_v1.AggregationType.MAX,
}


def _matches(f: PropertyFilter, found: bool, value: object) -> bool:
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
        return text.casefold() in _text(value).casefold()
    if op == FilterOperator.IN:
        return any(_equals(value, v) for v in f.values)
    number = _number(value)
    if number is None:
        return False
    if op in _COMPARISONS:
        return _COMPARISONS[op](number, float(text))
    if op == FilterOperator.BETWEEN:
        return float(f.values[0]) <= number <= float(f.values[1])
    return False


_Lookup: TypeAlias = Callable[[PropertyFilter], tuple[bool, Any]]


def _combine(operator: LogicalOperator | None, results: Iterable[bool]) -> bool:
    return any(results) if operator == LogicalOperator.OR else all(results)


def _groups_match(
    groups: Sequence[_FilterGroup], operator: LogicalOperator | None, lookup: _Lookup
) -> bool:
    """Filter groups: each combines its filters with its operator, the groups combine with
    `operator` (AND when unspecified)."""
    return _combine(
        operator,
        (_combine(g.operator, (_matches(f, *lookup(f)) for f in g.filters)) for g in groups),
    )


def _in_range(when: datetime.datetime, time_range: TimeRange | None) -> bool:
    if time_range is None:
        return True
    start = _utc(time_range.from_) if time_range.from_ is not None else None
    end = _utc(time_range.to) if time_range.to is not None else None
    return (start is None or start <= when) and (end is None or when < end)


# ---- pagination ---------------------------------------------------------------------------


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _page_offset(token: str | None) -> int:
    """The offset an opaque page token carries; invalid_argument for a token not ours."""
    if not token:
        return 0
    try:
        prefix, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(number) if prefix == "offset" else -1
    except ValueError:  # binascii.Error and UnicodeDecodeError included
        offset = -1
    if offset < 0:
        raise error_for("invalid_argument", f"page_token: invalid page token {token!r}")
    return offset


T = TypeVar("T")


def _page(items: Sequence[T], token: str | None, size: int | None) -> tuple[list[T], str]:
    """One page of `items` from the token's offset, and the next token ("" at the end)."""
    offset = _page_offset(token)
    size = size or DEFAULT_PAGE_SIZE
    end = offset + size
    return list(items[offset:end]), _page_token(end) if end < len(items) else ""


# ---- trends -------------------------------------------------------------------------------


def _zone(name: str | None) -> datetime.tzinfo:
    if not name or name == "UTC":
        return _UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise error_for("invalid_argument", f"timezone: unknown time zone {name!r}") from None


def _bucket_start(
    when: datetime.datetime, granularity: Granularity, zone: datetime.tzinfo
) -> datetime.datetime:
    local = when.astimezone(zone)
    if granularity == Granularity.MINUTE:
        return local.replace(second=0, microsecond=0)
    if granularity == Granularity.HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == Granularity.WEEK:
        return day - datetime.timedelta(days=day.weekday())
    if granularity == Granularity.MONTH:
        return day.replace(day=1)
    return day


def _next_bucket(
    start: datetime.datetime, granularity: Granularity, zone: datetime.tzinfo
) -> datetime.datetime:
    # Minutes and hours step in real time; days, weeks and months by the local calendar
    # (aware datetime arithmetic in Python is wall-clock arithmetic).
    if granularity == Granularity.MINUTE:
        return (start.astimezone(_UTC) + datetime.timedelta(minutes=1)).astimezone(zone)
    if granularity == Granularity.HOUR:
        return (start.astimezone(_UTC) + datetime.timedelta(hours=1)).astimezone(zone)
    if granularity == Granularity.WEEK:
        return start + datetime.timedelta(days=7)
    if granularity == Granularity.MONTH:
        year, month = divmod(start.month, 12)
        return start.replace(year=start.year + year, month=month + 1)
    return start + datetime.timedelta(days=1)


def _buckets(
    time_range: TimeRange, granularity: Granularity, zone: datetime.tzinfo
) -> list[datetime.datetime]:
    """Start of every bucket that overlaps the time range."""
    start, end = _utc(time_range.from_), _utc(time_range.to)
    current = _bucket_start(start, granularity, zone)
    out = []
    while current < end:
        out.append(current)
        current = _next_bucket(current, granularity, zone)
    return out


def _event_property(event: _Event, key: str) -> tuple[bool, Any]:
    return _lookup(event.auto if key.startswith("$") else event.custom, key)


def _aggregate(query: insights_v1.EventQuery, events: Sequence[_Event]) -> float:
    kind = query.aggregation or insights_v1.AggregationType.TOTAL
    users = {e.owner for e in events if e.owner}
    if kind in (insights_v1.AggregationType.TOTAL, insights_v1.AggregationType.UNSPECIFIED):
        return float(len(events))
    if kind == insights_v1.AggregationType.UNIQUE_USERS:
        return float(len(users))
    if kind == insights_v1.AggregationType.PER_USER_AVG:
        return len(events) / len(users) if users else 0.0
    key = query.aggregation_property or ""
    numbers = [n for n in (_number(_event_property(e, key)[1]) for e in events) if n is not None]
    if not numbers:
        return 0.0
    if kind == insights_v1.AggregationType.SUM:
        return math.fsum(numbers)
    if kind == insights_v1.AggregationType.AVG:
        return math.fsum(numbers) / len(numbers)
    return min(numbers) if kind == insights_v1.AggregationType.MIN else max(numbers)


# ---- schema summaries ---------------------------------------------------------------------


def _kind_metas(events: Sequence[_Event]) -> list[EventNameMeta]:
    counts: Counter[str] = Counter()
    last: dict[str, datetime.datetime] = {}
    for e in events:
        counts[e.kind] += 1
        last[e.kind] = max(last.get(e.kind, e.occur_time), e.occur_time)
    ranked = sorted(counts, key=lambda kind: (-counts[kind], kind))
    return [EventNameMeta(name=k, count=counts[k], last_seen_at=last[k]) for k in ranked]


def _key_metas(
    items: Iterable[tuple[Mapping[str, Any], datetime.datetime]],
    type_of: Callable[[object], PropertyValueType],
    allowed: set[PropertyValueType],
) -> list[PropertyKeyMeta]:
    """Each key seen: how often, when last, and the type of its latest value."""
    counts: Counter[str] = Counter()
    last: dict[str, datetime.datetime] = {}
    types: dict[str, PropertyValueType] = {}
    for props, seen_at in items:
        for key, value in props.items():
            counts[key] += 1
            if key not in last or seen_at >= last[key]:
                last[key], types[key] = seen_at, type_of(value)
    ranked = sorted(counts, key=lambda key: (-counts[key], key))
    return [
        PropertyKeyMeta(name=k, count=counts[k], last_seen_at=last[k], value_type=types[k])
        for k in ranked
        if not allowed or types[k] in allowed
    ]


def _ranked_texts(values: Iterable[object]) -> list[str]:
    """Distinct values as text, the most frequent first."""
    counts = Counter(_text(v) for v in values if v is not None)
    return sorted(counts, key=lambda text: (-counts[text], text))


def _heatmap(events: Iterable[_Event]) -> list[activity_v1.HeatmapDay]:
    counts = Counter(e.occur_time.date().isoformat() for e in events)
    return [activity_v1.HeatmapDay(date=day, count=counts[day]) for day in sorted(counts)]


# ---- assert_tracked -----------------------------------------------------------------------


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
        return _utc(expected) == _utc(got)
    return expected == got


def _show(value: object) -> str:
    return _iso(value) if isinstance(value, datetime.datetime) else repr(value)


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


# ---- the fake -----------------------------------------------------------------------------


class _Flushable(Protocol):
    def flush(self) -> object: ...


def _parse(cls: type[M], body: bytes) -> M:
    try:
        return cls.parse(body)
    except Exception as exc:  # betterproto2 raises assorted errors for malformed bytes
        raise error_for("invalid_argument", f"unreadable {cls.__name__}: {exc}") from None


class FakePug(InMemoryTransport):
    """An in-memory Pug server that plugs into the SDK as its transport.

    - `events(kind=, distinct_id=)`: what was received, as `ReceivedEvent`s;
      `assert_tracked(expected, properties, distinct_id=)` fails with a field-by-field diff.
    - `profiles` (external id → properties), `profile(external_id)` (the Profile message).
    - `flush_hooks`: callables run before `events`, `assert_tracked` and `profiles`;
      `attach(client)` registers the client's flush there.
    - `reset()`: forget everything received and any injected failure.
    - `clock`: the server's "now" (profile and deletion times).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        super().__init__(self.handle, stream_handler=self.handle_stream, latency=latency)
        self.clock = clock
        self.flush_hooks: list[Callable[[], object]] = []
        self._state_lock = threading.Lock()
        self._clear()
        p, a, i = profiles_v1, activity_v1, insights_v1
        self._unary: dict[str, _Unary] = {
            BATCH_CREATE: (BatchCreateRequest, self._batch_create),
            IDENTIFY: (IdentifyRequest, self._identify),
            "shared.profiles.v1.ProfilesService/Get": (p.GetRequest, self._get),
            "shared.profiles.v1.ProfilesService/GetByExternalId": (
                p.GetByExternalIdRequest, self._get_by_external_id
            ),
            "shared.profiles.v1.ProfilesService/Delete": (p.DeleteRequest, self._delete),
            "shared.profiles.v1.ProfilesService/DeleteDataSubject": (
                p.DeleteDataSubjectRequest, self._delete_data_subject
            ),
            "shared.profiles.v1.ProfilesService/GetDeletionRequest": (
                p.GetDeletionRequestRequest, self._get_deletion_request
            ),
            "shared.activity.v1.ActivityService/GetActivityFeed": (
                a.GetActivityFeedRequest, self._activity_feed
            ),
            "shared.activity.v1.ActivityService/GetEventExplorer": (
                a.GetEventExplorerRequest, self._event_explorer
            ),
            "shared.activity.v1.ActivityService/GetFilterSchema": (
                GetFilterSchemaRequest, self._filter_schema
            ),
            "shared.activity.v1.ActivityService/GetPropertyValues": (
                a.GetPropertyValuesRequest, self._activity_property_values
            ),
            "shared.activity.v1.ActivityService/GetActivityHeatmap": (
                a.GetActivityHeatmapRequest, self._activity_heatmap
            ),
            "shared.activity.v1.ActivityService/GetProfileStats": (
                a.GetProfileStatsRequest, self._profile_stats
            ),
            "shared.insights.v1.InsightsService/Query": (i.QueryRequest, self._query),
            "shared.insights.v1.InsightsService/SegmentUsers": (
                i.SegmentUsersRequest, self._segment_users
            ),
            "shared.insights.v1.InsightsService/GetFilterSchema": (
                GetFilterSchemaRequest, self._filter_schema
            ),
            "shared.insights.v1.InsightsService/GetPropertyValues": (
                i.GetPropertyValuesRequest, self._insights_property_values
            ),
        }  # fmt: skip
        self._streams: dict[str, _Stream] = {
            "shared.profiles.v1.ProfilesService/List": (p.ListRequest, self._list),
        }

    def _clear(self) -> None:
        self._events: list[_Event] = []
        self._seen: set[tuple[str, str, datetime.datetime]] = set()
        self._seq = 0
        self._profiles: dict[str, _Profile] = {}  # by external id, in creation order
        self._aliases: dict[str, str] = {}  # merged anonymous id → identified external id
        self._deletions: dict[str, _Deletion] = {}

    # ---- entry points ------------------------------------------------------------------

    def handle(self, method: str, body: bytes) -> bytes:
        """Answer one unary call: the serialized request in, the serialized response out.
        Raises `PugError` with the code a Pug server would answer."""
        route = self._unary.get(method)
        if route is None:
            raise self._no_route(method, streaming=False)
        request_type, answer = route
        request = _parse(request_type, body)
        with self._state_lock:
            response = answer(request)
        return bytes(response)

    def handle_stream(self, method: str, body: bytes) -> list[bytes]:
        """Answer one server-streaming call: every serialized response message, in order."""
        route = self._streams.get(method)
        if route is None:
            raise self._no_route(method, streaming=True)
        request_type, answer = route
        request = _parse(request_type, body)
        with self._state_lock:
            responses = answer(request)
        return [bytes(message) for message in responses]

    def _no_route(self, method: str, *, streaming: bool) -> PugError:
        if streaming and method in self._unary:
            return error_for("unimplemented", f"{method} is unary: call handle()")
        if not streaming and method in self._streams:
            return error_for("unimplemented", f"{method} is server-streaming: call handle_stream()")
        return error_for("unimplemented", f"FakePug does not implement {method}")

    def reset_after_fork(self) -> None:
        super().reset_after_fork()
        self._state_lock = threading.Lock()

    # ---- ingestion ---------------------------------------------------------------------

    def _batch_create(self, request: BatchCreateRequest) -> BatchCreateResponse:
        _raise_if(_batch_violations(request))
        for event in request.events:
            self._store(event)
        return BatchCreateResponse(accepted=len(request.events), dropped=0)

    def _store(self, event: Event) -> None:
        occur_time = _utc(event.occur_time)
        kind, event_id = event.kind or "", event.event_id or ""
        key = (event_id, kind, occur_time.replace(second=0, microsecond=0))
        if key in self._seen:
            return
        self._seen.add(key)
        owner = "" if event.cookieless else self._owner(event.distinct_id or "")
        if owner:
            self._profile_for(owner)
        self._seq += 1
        self._events.append(
            _Event(
                seq=self._seq,
                event_id=event_id,
                kind=kind,
                distinct_id=event.distinct_id or "",
                session_id=event.session_id,
                occur_time=occur_time,
                cookieless=bool(event.cookieless),
                auto=_plain_map(event.auto_properties),
                custom=_plain_map(event.custom_properties),
                owner=owner,
            )
        )

    def _owner(self, distinct_id: str) -> str:
        """The external id whose profile a distinct id's events belong to."""
        return self._aliases.get(distinct_id, distinct_id)

    def _profile_for(self, external_id: str) -> _Profile:
        """The profile of an external id, created on first sight."""
        profile = self._profiles.get(external_id)
        if profile is None:
            now = self.clock()
            profile = _Profile(str(uuid.uuid4()), external_id, {}, now, now)
            self._profiles[external_id] = profile
        return profile

    def _identify(self, request: IdentifyRequest) -> IdentifyResponse:
        _raise_if(_identify_violations(request))
        external_id = request.external_id or ""
        if not external_id:
            # Accepted by the API, then dropped by the server's worker (its message needs
            # a non-empty external_id): nothing changes.
            return IdentifyResponse()
        profile = self._profile_for(external_id)
        traits = request.traits.to_dict() if request.traits is not None else {}
        profile.properties.update(traits)
        profile.update_time = self.clock()
        anonymous_id = request.anonymous_id or ""
        if anonymous_id and anonymous_id != external_id:
            self._merge(anonymous_id, profile)
        return IdentifyResponse()

    def _merge(self, anonymous_id: str, into: _Profile) -> None:
        """Fold the anonymous profile into the identified one: its properties (the
        identified profile's win), its events, and the anonymous id itself."""
        anonymous = self._profiles.pop(anonymous_id, None)
        if anonymous is not None:
            into.properties = {**anonymous.properties, **into.properties}
            into.create_time = min(into.create_time, anonymous.create_time)
        for alias, target in self._aliases.items():
            if target == anonymous_id:
                self._aliases[alias] = into.external_id
        self._aliases[anonymous_id] = into.external_id
        for event in self._events:
            if event.owner == anonymous_id:
                event.owner = into.external_id

    # ---- profiles ----------------------------------------------------------------------

    def _events_of(self, owner: str) -> list[_Event]:
        return [e for e in self._events if e.owner == owner]

    def _profile_message(self, profile: _Profile) -> profiles_v1.Profile:
        events = self._events_of(profile.external_id)
        summary = profiles_v1.ProfileActivitySummary(
            total_events=len(events),
            pageviews=sum(1 for e in events if e.kind == "page_view"),
            sessions=len({e.session_id for e in events if e.session_id}),
        )
        if events:
            summary.first_seen = min(e.occur_time for e in events)
            summary.last_seen = max(e.occur_time for e in events)
        return profiles_v1.Profile(
            create_time=profile.create_time,
            external_id=profile.external_id,
            id=profile.id,
            properties=_struct(profile.properties),
            project_id=PROJECT_ID,
            update_time=profile.update_time,
            activity=summary,
        )

    def _profile_by_id(self, profile_id: str) -> _Profile:
        for profile in self._profiles.values():
            if profile.id == profile_id:
                return profile
        raise error_for("not_found", f"profile {profile_id} not found")

    def _get(self, request: profiles_v1.GetRequest) -> profiles_v1.GetResponse:
        _raise_if(_required_violations("id", request.id))
        profile = self._profile_by_id(request.id or "")
        return profiles_v1.GetResponse(profile=self._profile_message(profile))

    def _get_by_external_id(
        self, request: profiles_v1.GetByExternalIdRequest
    ) -> profiles_v1.GetByExternalIdResponse:
        _raise_if(_required_violations("external_id", request.external_id))
        external_id = request.external_id or ""
        profile = self._profiles.get(external_id)
        if profile is None:
            raise error_for("not_found", f"profile with external id {external_id} not found")
        return profiles_v1.GetByExternalIdResponse(profile=self._profile_message(profile))

    def _list(self, request: profiles_v1.ListRequest) -> list[profiles_v1.ListResponse]:
        _raise_if(_groups_violations(request.filter_groups, request.filter_groups_operator))
        chosen = [
            p
            for p in self._profiles.values()
            if _groups_match(
                request.filter_groups,
                request.filter_groups_operator,
                self._profile_lookup(p.external_id),
            )
        ]
        offset = _page_offset(request.page_token)
        pages = []
        for start in range(offset, max(len(chosen), offset + 1), LIST_PAGE_SIZE):
            end = start + LIST_PAGE_SIZE
            pages.append(
                profiles_v1.ListResponse(
                    profiles=[self._profile_message(p) for p in chosen[start:end]],
                    next_page_token=_page_token(end) if end < len(chosen) else "",
                )
            )
        return pages

    def _delete(self, request: profiles_v1.DeleteRequest) -> profiles_v1.DeleteResponse:
        _raise_if(_required_violations("id", request.id))
        profile = self._profile_by_id(request.id or "")
        deletion = self._erase(profile.external_id)
        return profiles_v1.DeleteResponse(
            request_id=deletion.request_id,
            status=profiles_v1.ComplianceRequestStatus.COMPLETED,
        )

    def _delete_data_subject(
        self, request: profiles_v1.DeleteDataSubjectRequest
    ) -> profiles_v1.DeleteDataSubjectResponse:
        out: list[_Violation] = []
        if _required(out, "external_id", request.external_id) and not request.external_id:
            # Erasing "nobody" is refused: an empty id would match cookieless data.
            out.append(_Violation("external_id", "required", "value is required"))
        _raise_if(out)
        deletion = self._erase(request.external_id or "")
        return profiles_v1.DeleteDataSubjectResponse(
            request_id=deletion.request_id,
            status=profiles_v1.ComplianceRequestStatus.COMPLETED,
        )

    def _erase(self, external_id: str) -> _Deletion:
        """Delete a profile, its events and its aliases at once (the server does it in the
        background: the request is COMPLETED when it is first read)."""
        requested_at = self.clock()
        profile = self._profiles.pop(external_id, None)
        kept = [e for e in self._events if e.owner != external_id]
        erased = len(self._events) - len(kept)
        self._events = kept
        self._aliases = {k: v for k, v in self._aliases.items() if v != external_id}
        deletion = _Deletion(
            request_id=str(uuid.uuid4()),
            external_id=external_id,
            profile_id=profile.id if profile is not None else None,
            events=erased,
            requested_at=requested_at,
            completed_at=self.clock(),
        )
        self._deletions[deletion.request_id] = deletion
        return deletion

    def _get_deletion_request(
        self, request: profiles_v1.GetDeletionRequestRequest
    ) -> profiles_v1.GetDeletionRequestResponse:
        _raise_if(_required_violations("request_id", request.request_id))
        deletion = self._deletions.get(request.request_id or "")
        if deletion is None:
            raise error_for("not_found", f"deletion request {request.request_id} not found")
        return profiles_v1.GetDeletionRequestResponse(
            request_id=deletion.request_id,
            external_id=deletion.external_id,
            profile_id=deletion.profile_id,
            status=profiles_v1.ComplianceRequestStatus.COMPLETED,
            events_identified=deletion.events,
            requested_at=deletion.requested_at,
            completed_at=deletion.completed_at,
        )

    # ---- activity ----------------------------------------------------------------------

    def _event_lookup(self, event: _Event) -> _Lookup:
        """How a filter reads an event: PROFILE from its profile, AUTO from its auto
        properties, CUSTOM from its custom ones (unspecified: auto for `$` keys)."""

        def lookup(f: PropertyFilter) -> tuple[bool, Any]:
            key, source = f.property or "", f.source or PropertySource.UNSPECIFIED
            if source == PropertySource.PROFILE:
                profile = self._profiles.get(event.owner)
                return _lookup(profile.properties if profile else {}, key)
            if source == PropertySource.AUTO:
                return _lookup(event.auto, key)
            if source == PropertySource.CUSTOM:
                return _lookup(event.custom, key)
            return _event_property(event, key)

        return lookup

    def _event_filter_matches(self, event: _Event, event_filter: EventFilter) -> bool:
        if event_filter.kind and event.kind != event_filter.kind:
            return False
        lookup = self._event_lookup(event)
        return all(_matches(f, *lookup(f)) for f in event_filter.filters)

    def _select_events(
        self, request: activity_v1.GetActivityFeedRequest | activity_v1.GetEventExplorerRequest
    ) -> list[_Event]:
        """The events a feed request asks for, newest first."""
        owner = self._owner(request.distinct_id) if request.distinct_id else None
        chosen = []
        for e in self._events:
            lookup = self._event_lookup(e)
            if (
                (owner is None or e.owner == owner)
                and (not request.session_id or e.session_id == request.session_id)
                and _in_range(e.occur_time, request.time_range)
                and all(_matches(f, *lookup(f)) for f in request.property_filters)
                and (
                    not request.events
                    or any(self._event_filter_matches(e, f) for f in request.events)
                )
            ):
                chosen.append(e)
        chosen.sort(key=lambda e: (e.occur_time, e.seq), reverse=True)
        return chosen

    def _event_page(
        self, request: activity_v1.GetActivityFeedRequest | activity_v1.GetEventExplorerRequest
    ) -> tuple[list[activity_v1.ActivityEvent], str]:
        page, token = _page(self._select_events(request), request.page_token, request.page_size)
        return [_activity_event(e) for e in page], token

    def _activity_feed(
        self, request: activity_v1.GetActivityFeedRequest
    ) -> activity_v1.GetActivityFeedResponse:
        _raise_if(_feed_violations(request, "activity_feed", distinct_id_required=True))
        events, token = self._event_page(request)
        return activity_v1.GetActivityFeedResponse(events=events, next_page_token=token)

    def _event_explorer(
        self, request: activity_v1.GetEventExplorerRequest
    ) -> activity_v1.GetEventExplorerResponse:
        _raise_if(_feed_violations(request, "event_explorer", distinct_id_required=False))
        events, token = self._event_page(request)
        return activity_v1.GetEventExplorerResponse(events=events, next_page_token=token)

    def _activity_heatmap(
        self, request: activity_v1.GetActivityHeatmapRequest
    ) -> activity_v1.GetActivityHeatmapResponse:
        out = _required_violations("distinct_id", request.distinct_id)
        if request.time_range is not None:
            out.extend(_time_range_violations("time_range", request.time_range))
        _raise_if(out)
        # distinct_id must be sent; "" asks for everyone.
        owner = self._owner(request.distinct_id) if request.distinct_id else None
        events = [
            e
            for e in self._events
            if (owner is None or e.owner == owner) and _in_range(e.occur_time, request.time_range)
        ]
        return activity_v1.GetActivityHeatmapResponse(days=_heatmap(events))

    def _profile_stats(
        self, request: activity_v1.GetProfileStatsRequest
    ) -> activity_v1.GetProfileStatsResponse:
        _raise_if(_required_violations("distinct_id", request.distinct_id))
        owner = self._owner(request.distinct_id or "")
        profile = self._profiles.get(owner)
        if profile is None:
            raise error_for("not_found", f"profile {request.distinct_id} not found")
        events = self._events_of(owner)
        stats = activity_v1.ProfileStats(total_events=len(events))
        if events:
            stats.first_seen = min(e.occur_time for e in events)
            stats.last_seen = max(e.occur_time for e in events)
        return activity_v1.GetProfileStatsResponse(
            stats=stats, heatmap=_heatmap(events), properties=_struct(profile.properties)
        )

    def _filter_schema(self, request: GetFilterSchemaRequest) -> GetFilterSchemaResponse:
        _raise_if(_filter_schema_violations(request))
        events = [e for e in self._events if not request.event_kind or e.kind == request.event_kind]
        allowed = set(request.allowed_types)
        return GetFilterSchemaResponse(
            events=_kind_metas(events),
            auto_property_keys=_key_metas(
                ((e.auto, e.occur_time) for e in events), _event_value_type, allowed
            ),
            custom_property_keys=_key_metas(
                ((e.custom, e.occur_time) for e in events), _event_value_type, allowed
            ),
            profile_property_keys=_key_metas(
                ((p.properties, p.update_time) for p in self._profiles.values()),
                _profile_value_type,
                allowed,
            ),
        )

    def _property_values(
        self, request: activity_v1.GetPropertyValuesRequest | insights_v1.GetPropertyValuesRequest
    ) -> list[str]:
        _raise_if(_property_values_violations(request))
        key, source = request.property_key or "", request.source
        if source == PropertySource.PROFILE:
            return _ranked_texts(_lookup(p.properties, key)[1] for p in self._profiles.values())
        auto = source == PropertySource.AUTO or (
            source == PropertySource.UNSPECIFIED and key.startswith("$")
        )
        events = [e for e in self._events if not request.event_kind or e.kind == request.event_kind]
        return _ranked_texts(_lookup(e.auto if auto else e.custom, key)[1] for e in events)

    def _activity_property_values(
        self, request: activity_v1.GetPropertyValuesRequest
    ) -> activity_v1.GetPropertyValuesResponse:
        return activity_v1.GetPropertyValuesResponse(values=self._property_values(request))

    # ---- insights ----------------------------------------------------------------------

    def _insights_property_values(
        self, request: insights_v1.GetPropertyValuesRequest
    ) -> insights_v1.GetPropertyValuesResponse:
        return insights_v1.GetPropertyValuesResponse(values=self._property_values(request))

    def _query(self, request: insights_v1.QueryRequest) -> insights_v1.QueryResponse:
        _raise_if(_query_violations(request))
        spec, time_range = request.spec, request.time_range
        assert spec is not None and time_range is not None and request.granularity is not None
        if spec.insight_type != insights_v1.InsightType.TRENDS:
            raise error_for("unimplemented", "FakePug implements only trends queries")
        if spec.breakdowns or spec.session is not None:
            message = "FakePug does not implement trends breakdowns or session metrics"
            raise error_for("unimplemented", message)
        zone = _zone(request.timezone)
        buckets = _buckets(time_range, request.granularity, zone)
        events = [
            e
            for e in self._events
            if _in_range(e.occur_time, time_range)
            and (spec.include_cookieless or not e.cookieless)
            and _groups_match(
                spec.filter_groups, spec.filter_groups_operator, self._event_lookup(e)
            )
        ]
        series = [
            self._trend_series(query, events, buckets, request.granularity, zone)
            for query in spec.events
        ]
        return insights_v1.QueryResponse(trends=insights_v1.TrendsResult(series=series))

    def _trend_series(
        self,
        query: insights_v1.EventQuery,
        events: Sequence[_Event],
        buckets: Sequence[datetime.datetime],
        granularity: Granularity,
        zone: datetime.tzinfo,
    ) -> insights_v1.TrendSeries:
        event_filter = query.event or EventFilter()
        by_bucket: dict[datetime.datetime, list[_Event]] = defaultdict(list)
        for e in events:
            if self._event_filter_matches(e, event_filter):
                by_bucket[_bucket_start(e.occur_time, granularity, zone)].append(e)
        points = [
            insights_v1.DataPoint(
                time=start.astimezone(_UTC), value=_aggregate(query, by_bucket[start])
            )
            for start in buckets
        ]
        return insights_v1.TrendSeries(event_kind=event_filter.kind or "", points=points)

    def _segment_users(
        self, request: insights_v1.SegmentUsersRequest
    ) -> insights_v1.SegmentUsersResponse:
        _raise_if(_segment_violations(request))
        candidates = [
            e for e in self._events if e.owner and _in_range(e.occur_time, request.time_range)
        ]
        users: set[str] | None = None
        for query in request.events:
            event_filter = query.event or EventFilter()
            did = {e.owner for e in candidates if self._event_filter_matches(e, event_filter)}
            users = did if users is None else users & did
        chosen = sorted(
            user
            for user in users or set()
            if _groups_match(
                request.filter_groups,
                request.filter_groups_operator,
                self._profile_lookup(user),
            )
        )
        page, token = _page(chosen, request.page_token, request.page_size)
        return insights_v1.SegmentUsersResponse(distinct_ids=page, next_page_token=token)

    def _profile_lookup(self, external_id: str) -> _Lookup:
        profile = self._profiles.get(external_id)
        props = profile.properties if profile is not None else {}
        return lambda f: _lookup(props, f.property or "")

    # ---- for users' tests --------------------------------------------------------------

    def attach(self, client: _Flushable) -> None:
        """Flush `client` before every assertion, so what it queued has arrived. `client`
        is a `Pug`, an `AsyncPug` or anything with a `flush()`."""
        if isinstance(client, Pug):
            self.flush_hooks.append(functools.partial(client.flush, FLUSH_TIMEOUT))
        elif isinstance(client, AsyncPug):
            # AsyncPug.flush is a coroutine; its core's flush blocks this thread only (the
            # worker runs on its own), so a synchronous assertion can wait for it.
            self.flush_hooks.append(functools.partial(client._core.flush, FLUSH_TIMEOUT))
        else:
            self.flush_hooks.append(client.flush)

    def _run_flush_hooks(self) -> None:
        for hook in list(self.flush_hooks):
            hook()

    def events(
        self, kind: str | None = None, distinct_id: str | None = None
    ) -> list[ReceivedEvent]:
        """The events accepted so far, in arrival order (optionally one kind, or those sent
        with one distinct id)."""
        self._run_flush_hooks()
        with self._state_lock:
            stored = [
                e
                for e in self._events
                if (kind is None or e.kind == kind)
                and (distinct_id is None or e.distinct_id == distinct_id)
            ]
            return [_received(e) for e in stored]

    def assert_tracked(
        self,
        expected: PugEvent | str,
        properties: Mapping[str, Any] | None = None,
        *,
        distinct_id: str | None = None,
    ) -> ReceivedEvent:
        """Pass if an event of the expected kind was received with every property the
        expected event sets (and `properties`), and return the first such event; otherwise
        raise AssertionError showing the closest events received, field by field."""
        kind, want, labels = _expectation(expected, properties)
        received = self.events()
        for event in received:
            if event.kind == kind and not _differences(want, labels, event, distinct_id):
                return event
        raise AssertionError(_failure(kind, want, labels, distinct_id, received))

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        """External id → properties, for every profile."""
        self._run_flush_hooks()
        with self._state_lock:
            return {k: dict(p.properties) for k, p in self._profiles.items()}

    def profile(self, external_id: str) -> profiles_v1.Profile:
        """The Profile message for an external id; KeyError if there is none."""
        self._run_flush_hooks()
        with self._state_lock:
            profile = self._profiles.get(external_id)
            if profile is None:
                raise KeyError(f"no profile with external id {external_id!r}")
            return self._profile_message(profile)

    def reset(self) -> None:
        """Forget every event, profile, deletion and request, and any injected failure."""
        self.recover()
        with self._lock:
            self.requests.clear()
            self.attempts.clear()
        with self._state_lock:
            self._clear()


def _required_violations(path: str, value: object) -> list[_Violation]:
    out: list[_Violation] = []
    _required(out, path, value)
    return out


def _received(e: _Event) -> ReceivedEvent:
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


def _activity_event(e: _Event) -> activity_v1.ActivityEvent:
    return activity_v1.ActivityEvent(
        event_id=e.event_id,
        kind=e.kind,
        distinct_id=e.owner,
        occur_time=e.occur_time,
        session_id=e.session_id,
        auto_properties=_struct(e.auto),
        custom_properties=_struct(e.custom),
    )
