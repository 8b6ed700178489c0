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

`FakePug` is an `InMemoryTransport` whose handler answers like a Pug server (this module
takes the requests and checks them; `query` holds the state and computes the answers):

- ingestion: `BatchCreate` checks every event against the server's validation rules
  (one invalid event rejects the whole batch with `invalid_argument`, naming the event,
  field and rule) and stores the rest; `Identify` upserts a profile, merges its traits
  and folds an anonymous profile into the identified one;
- reads, computed from what it received: profiles (get, list with filter groups, delete,
  data-subject deletion), activity (feed, event explorer, heatmap, profile stats, filter
  schema, property values) and insights (trends, segment users, filter schema, property
  values). Insights queries of every type are computed (`insights`): trends (with
  breakdowns), segmentation, session metrics, funnels, retention, user flow and top k.
  Read requests are checked by the server's rules too (every rule of InsightQuerySpec and
  the queries inside it included): as on a real server, the activity feed and heatmap need
  `distinct_id` set ("" for everyone); an invalid request gets the server's
  `invalid_argument` with its violations.

Every pattern, limit and prefix comes from `pug.rules` (generated from the wire contract);
the CEL rules are written here as Python, in one table by rule id (`_CEL`, checked at
import against the contract), their ids, messages and order read from `pug.rules`.
The methods served are those of the generated service definitions (`service_methods`,
shared with the dev server), each answered by the `Store` method named after it.

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
- a `timezone` the pattern allows but Python's tz database does not know is refused
  `invalid_argument` without violations (the server's handler refuses unknown zones);
- days and buckets are UTC (insights honour `timezone`); weeks start on Monday; minute
  and hour buckets step in real time, longer ones by the local calendar;
- cookieless events belong to no profile: insights count them only with
  `include_cookieless`, and never as users (funnels, retention, top-k users);
- a breakdown value is the property as text ("" when unset): the event's own (trends),
  a user's first step-matching event (funnel), first start event (retention), a session's
  entry event (exit event for EXIT);
- breakdowns keep the top `breakdown_limit` (10 when unset) combinations, by the sum of
  their points (trends), their users (funnel, retention), heaviest first, ties by value,
  then one `$others` series computed over the rest (not summed);
- trends with breakdowns and no event have no series, retention without a cohort none,
  a funnel without users one series of zero steps; trends points cover every bucket;
- trends without event queries count every event (one series, event_kind ""); segmentation
  aggregates the events matching any query (every event when none), as the first says;
- sessions: events by session_id (scope and filter groups applied), counted if they start
  in the range, measured over all their events; AVG_DURATION in seconds, BOUNCE_RATE in
  percent of one-event sessions; a series with no scope kind is `$session`;
- funnel: per user, the longest chain of steps in order (an event fills one) within
  `conversion_window` (else the range's length) of its first; step timing from the
  previous step (none on the first), p95 by nearest rank, bucket bounds exclusive;
- retention: a user's cohort is the bucket of their first start event; each bucket on
  gets the percent of the cohort with a return event in it at or after their start (the
  start event itself with one event); `cohort` is RFC 3339 in the request's timezone;
- user flow: each session's first `max_hops`+1 events (defaults 5 hops, 20 nodes per
  depth, 250 links); a link counts sessions; node ids are `depth:label`; a depth's
  labels past `max_nodes` merge into its `$others` node;
- top k: 10 rows by default, ties by value; the `$others` row aggregates the other rows'
  events; a USER row's value is the profile id, with its profile;
- SegmentUsers returns the users who did every one of the given events (sorted);
- DeleteDataSubject with `external_id` sent as "" breaks no rule (a present "" passes
  `required`) but is refused, `invalid_argument` without violations: it would erase
  "nobody" (an empty id matches cookieless data).
"""

from __future__ import annotations

import builtins
import datetime
import functools
import importlib
import keyword
import math
import pkgutil
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeAlias, TypeVar

import betterproto2

import pug.rules as rules
from pug._wire.reader import Timestamp as WireTimestamp
from pug._wire.reader import Value, WireEvent, event_spans, read_batch
from pug.client import AsyncPug, Pug
from pug.errors import PugError, error_for
from pug.event import PugEvent
from pug.proto.common.v1 import (
    EventFilter,
    FilterOperator,
    PropertyFilter,
    PropertyValue,
    TimeRange,
)
from pug.proto.sdk.events.v1 import BatchCreateRequest, Event
from pug.proto.shared.activity import v1 as activity_v1
from pug.proto.shared.insights import v1 as insights_v1
from pug.proto.shared.profiles import v1 as profiles_v1
from pug.testing.fake import assertions, ingest, wire
from pug.testing.fake.assertions import ReceivedEvent
from pug.testing.fake.query import DEFAULT_MAX_BYTES, Store
from pug.testing.fake.values import COMPARISONS, NUMERIC_AGGREGATIONS, FilterGroup, go_float, now
from pug.transports.memory import InMemoryTransport

__all__ = ["FakePug", "Method", "service_methods"]

FLUSH_TIMEOUT = 10.0  # seconds an assertion waits for an attached client's flush
_NANOS_PER_SECOND = 1_000_000_000
M = TypeVar("M", bound=betterproto2.Message)


# ---- the methods served: the generated service definitions -------------------------------


@dataclass(frozen=True)
class Method:
    """One RPC of the SDK-facing API, as the generated server bases declare it."""

    path: str  # "shared.profiles.v1.ProfilesService/List"
    request: type[betterproto2.Message]
    streams: bool  # server-streaming

    @property
    def python_name(self) -> str:
        """The RPC's name in snake_case (`GetByExternalId` → `get_by_external_id`), with
        PEP 8's trailing underscore where that is a keyword or a builtin (`list_`)."""
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", self.path.rpartition("/")[2]).lower()
        return f"{name}_" if keyword.iskeyword(name) or hasattr(builtins, name) else name


@functools.cache
def service_methods() -> dict[str, Method]:
    """Every RPC of the generated service bases under `pug.proto`, by path; so a new RPC
    in catalog/proto is routed without a table to update (the fake answers it once
    `Store` has a method of its name, `unimplemented` until then)."""
    import grpclib.const

    import pug.proto

    methods: dict[str, Method] = {}
    for info in pkgutil.walk_packages(pug.proto.__path__, "pug.proto."):
        module = importlib.import_module(info.name)
        for name, base in vars(module).items():
            if isinstance(base, type) and name.endswith("ServiceBase"):
                for path, handler in base().__mapping__().items():
                    streams = handler.cardinality is grpclib.const.Cardinality.UNARY_STREAM
                    method = Method(path.lstrip("/"), handler.request_type, streams)
                    methods[method.path] = method
    return dict(sorted(methods.items()))


# ---- the server's validation rules (pug.rules, generated from the wire contract) ---------


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


def _rules(message: type[betterproto2.Message]) -> rules.Message:
    """The rules of a generated message class (`pug.proto.common.v1.TimeRange` is
    `common.v1.TimeRange` in the contract)."""
    package = message.__module__.removeprefix("pug.proto.")
    return rules.MESSAGES[f"{package}.{message.__name__}"]


def _cel(out: list[_Violation], path: str, cels: Sequence[rules.Cel], this: object) -> None:
    """The CEL rules `cels` (a message's or a field's, from pug.rules, in the contract's
    order) on `this`, each by its entry in `_CEL`; a broken one is reported at `path` with
    its id and message from pug.rules. All are evaluated, as protovalidate does."""
    for cel in cels:
        if not _CEL[cel.id](this):
            out.append(_Violation(path, cel.id, cel.message))


def _check(out: list[_Violation], path: str, value: object, rule: rules.Field) -> bool:
    """The standard rules of one field, with protovalidate's rule ids and messages, then
    its CEL rules the fake implements. True if the field is set (rules apply only then)."""
    if value is None:
        if rule.required:
            out.append(_Violation(path, "required", "value is required"))
        return False
    if isinstance(value, str):
        _check_string(out, path, value, rule)
    elif isinstance(value, list):
        _check_size(out, path, len(value), rule)
        if rule.items is not None:
            for i, item in enumerate(value):
                _check(out, f"{path}[{i}]", item, rule.items)
    elif rule.type == "enum" and isinstance(value, int):
        # Only the rules the contract gives: an unknown number is legal without
        # defined_only (betterproto2 keeps it as a pseudo-member, not iterated).
        members = {int(m) for m in type(value)} if isinstance(value, betterproto2.Enum) else ()
        if rule.defined_only and int(value) not in members:
            message = "value must be one of the defined enum values"
            out.append(_Violation(path, "enum.defined_only", message))
        elif int(value) in rule.not_in:
            message = f"must not be in list [{', '.join(map(str, rule.not_in))}]"
            out.append(_Violation(path, "enum.not_in", message))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _check_number(out, path, value, rule)
    _cel(out, path, rule.cel, value)
    return True


def _check_string(out: list[_Violation], path: str, value: str, rule: rules.Field) -> None:
    # Lengths count code points, as protovalidate does (not UTF-8 bytes).
    if rule.uuid and value == "":
        out.append(
            _Violation(path, "string.uuid_empty", "value is empty, which is not a valid UUID")
        )
    elif rule.uuid and not rules.UUID_PATTERN.matches(value):
        out.append(_Violation(path, "string.uuid", "must be a valid UUID"))
    _check_size(out, path, len(value), rule)
    if rule.pattern is not None and not rule.pattern.matches(value):
        message = f"does not match regex pattern `{rule.pattern.source}`"
        out.append(_Violation(path, "string.pattern", message))


# protovalidate's size rules: the Field attribute, the rule id and message (a `min_` limit
# is the least size allowed, a `max_` one the most). A string has only the lengths, a list
# only the item counts.
_SIZE_RULES = (
    ("min_len", "string.min_len", "must be at least {} characters"),
    ("max_len", "string.max_len", "must be at most {} characters"),
    ("min_items", "repeated.min_items", "must contain at least {} item(s)"),
    ("max_items", "repeated.max_items", "must contain no more than {} item(s)"),
)


def _check_size(out: list[_Violation], path: str, size: int, rule: rules.Field) -> None:
    for name, rule_id, message in _SIZE_RULES:
        limit = getattr(rule, name)
        if limit is not None and (size < limit if name.startswith("min") else size > limit):
            out.append(_Violation(path, rule_id, message.format(limit)))


def _check_number(out: list[_Violation], path: str, value: float, rule: rules.Field) -> None:
    if rule.finite and not math.isfinite(value):
        out.append(_Violation(path, f"{rule.type}.finite", "must be finite"))
    low, high = rule.gte, rule.lte
    if low is not None and high is not None and not low <= value <= high:
        message = f"must be greater than or equal to {low} and less than or equal to {high}"
        out.append(_Violation(path, f"{rule.type}.gte_lte", message))
    elif high is None and low is not None and value < low:
        message = f"must be greater than or equal to {low}"
        out.append(_Violation(path, f"{rule.type}.gte", message))
    elif low is None and high is not None and value > high:
        message = f"must be less than or equal to {high}"
        out.append(_Violation(path, f"{rule.type}.lte", message))


def _check_fields(out: list[_Violation], prefix: str, message: betterproto2.Message) -> None:
    """Every field rule of a message, in the contract's order (fields named as in the
    contract: `from` is the attribute `from_`)."""
    for name, rule in _rules(type(message)).fields.items():
        attribute = f"{name}_" if keyword.iskeyword(name) else name
        _check(out, prefix + name, getattr(message, attribute), rule)


def _violations(message: betterproto2.Message) -> list[_Violation]:
    """The field rules of a flat request (every rule on its own scalar fields)."""
    out: list[_Violation] = []
    _check_fields(out, "", message)
    return out


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
               "\t": "\\t", "\v": "\\v", '"': '\\"', "\\": "\\\\"}  # fmt: skip


def _go_quote(key: str) -> str:
    """A map key in a field path as protovalidate-go writes it (Go's strconv.Quote):
    printable characters as they are, others escaped (JSON would escape every non-ASCII)."""
    out = []
    for char in key:
        code = ord(char)
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


# ---- BatchCreate on `WireEvent`s (pug._wire.reader): the hot path of ingestion -----------
#
# The same violations, in the same order, as protovalidate on the message (tests compare
# them with the betterproto2 path the fake took before, tests/support/wire_batches.py): an
# event is first tested by `_clean`, a quick test that it breaks none of its fields'
# rules (derived from pug.rules at import: only the kinds of rule it understands), and
# checked rule by rule as before when that test fails. The CEL rules are the same `_CEL`
# functions: a WireEvent has the attributes they read.


class _WireBatch(NamedTuple):
    events: list[WireEvent]


_EVENT_RULES = _rules(Event)
_VALUE_RULES = _rules(PropertyValue)
_VALUE_MEMBERS: dict[type, str] = {
    str: "string_value", int: "int_value", float: "double_value", bool: "bool_value",
    WireTimestamp: "timestamp_value",
}  # fmt: skip


def _quick(rule: rules.Field) -> Callable[[Any], bool]:
    """A fast test that a value breaks none of `rule`'s rules. Knows required, uuid,
    pattern and max_len on strings, finite on doubles; a rule with any other part is
    always checked in full (the test says False)."""
    known = rules.Field(
        type=rule.type, required=rule.required, uuid=rule.uuid, pattern=rule.pattern,
        max_len=rule.max_len, finite=rule.finite,
    )  # fmt: skip
    if rule != known or rule.type not in ("", "string", "double"):
        return lambda value: False
    uuid, pattern, max_len = rule.uuid and rules.UUID_PATTERN, rule.pattern, rule.max_len
    optional, finite = not rule.required, rule.finite

    def clean(value: Any) -> bool:
        if value is None:
            return optional
        if isinstance(value, str):
            return (
                (not uuid or uuid.matches(value))
                and (pattern is None or pattern.matches(value))
                and (max_len is None or len(value) <= max_len)
            )
        return not finite or math.isfinite(value)

    return clean


# Each field rule of Event as (the field's place in a WireEvent, its quick test).
_EVENT_FIELD_TESTS = [
    (WireEvent._fields.index(name), _quick(rule)) for name, rule in _EVENT_RULES.fields.items()
]


def _value_limits() -> tuple[float, bool] | None:
    """(the longest string, whether doubles must be finite): PropertyValue's rules, if they
    are only those (the quick test knows no others: None, every value checked in full)."""
    fields = dict(_VALUE_RULES.fields)
    string = fields.pop("string_value", rules.Field(type="string"))
    double = fields.pop("double_value", rules.Field(type="double"))
    if (
        fields
        or _VALUE_RULES.cel
        or string != rules.Field(type="string", max_len=string.max_len)
        or double != rules.Field(type="double", finite=double.finite)
    ):
        return None
    return (math.inf if string.max_len is None else string.max_len), double.finite


_VALUE_LIMITS = _value_limits()


def _clean(event: WireEvent) -> bool:
    """True if `event` breaks no rule of Event: its fields', its property values' (an
    event has a dozen) and its CEL rules."""
    for place, test in _EVENT_FIELD_TESTS:
        if not test(event[place]):
            return False
    for props in (event.auto_properties, event.custom_properties):
        for value in props.values():
            if not _value_clean(value):
                return False
    return all(_CEL[cel.id](event) for cel in _EVENT_RULES.cel)


def _value_clean(value: Value) -> bool:
    """True if a property value breaks no rule of PropertyValue (False whenever its rules
    are not the ones this knows: the value is then checked in full)."""
    if _VALUE_LIMITS is None:
        return False
    if isinstance(value, str):
        return len(value) <= _VALUE_LIMITS[0]
    if isinstance(value, float):
        return not _VALUE_LIMITS[1] or math.isfinite(value)
    return value is not None  # None: no member, the required oneof is broken


# The CEL rules the fast path of BatchCreate (`ingest.Scanner`) checks itself.
_SCANNED_CEL = {
    "event.auto_properties_dollar_prefix", "event.custom_properties_no_dollar_prefix",
    "event.identity_required_unless_cookieless", "batch.cookieless_identity_server_owned",
    "batch.distinct_id_reserved_prefix",
}  # fmt: skip


def _scanner() -> ingest.Scanner | None:
    """BatchCreate's fast path, when every rule of BatchCreateRequest, Event and
    PropertyValue is one it checks (else None: every batch takes the exact path)."""
    batch, fields = _rules(BatchCreateRequest), _EVENT_RULES.fields
    events = batch.fields.get("events", rules.Field(type="repeated"))
    occur = fields.get("occur_time", rules.Field(required=True))
    known = (
        set(fields) <= {"event_id", "kind", "occur_time", "session_id"}
        and occur == rules.Field(required=True)  # a Scanner requires a time, no more
        and {c.id for c in (*_EVENT_RULES.cel, *batch.cel)} <= _SCANNED_CEL
        and set(batch.fields) <= {"events"}
        and events == rules.Field(type="repeated", max_items=events.max_items)
    )
    if not known or _VALUE_LIMITS is None:  # _value_clean knows no other value rules
        return None
    none = rules.Field()
    event_id = fields.get("event_id", none)
    return ingest.Scanner(
        # An id is new in every event: a UUID's test is the regex's, without a call around it.
        event_id_ok=rules.UUID_PATTERN.regex.search
        if event_id == rules.Field(type="string", required=True, uuid=True)
        else _quick(event_id),
        kind_ok=_quick(fields.get("kind", none)),
        session_ok=_quick(fields.get("session_id", none)),
        value_ok=_value_clean,
        value_limits=_VALUE_LIMITS,
        auto_prefix=rules.AUTO_PROPERTY_PREFIX,
        reserved_prefix=rules.RESERVED_ID_PREFIX,
        max_events=(1 << 62) if events.max_items is None else events.max_items,
    )


_SCANNER = _scanner()


def _wire_value_violations(path: str, value: Value) -> list[_Violation]:
    """The rules of a common.v1.PropertyValue read as a plain value (None: no member)."""
    out: list[_Violation] = []
    member = _VALUE_MEMBERS.get(type(value))
    for oneof in _VALUE_RULES.required_oneofs:
        if member is None:
            message = "exactly one field is required in oneof"
            out.append(_Violation(f"{path}.{oneof}", "required", message))
    for name, rule in _VALUE_RULES.fields.items():
        _check(out, f"{path}.{name}", value if name == member else None, rule)
    return out


def _wire_event_violations(index: int, event: WireEvent) -> list[_Violation]:
    """Every rule of sdk.events.v1.Event (fields, then its CEL rules) for events[index]."""
    out: list[_Violation] = []
    at = f"events[{index}]"
    fields = _EVENT_RULES.fields
    _check(out, f"{at}.event_id", event.event_id, fields["event_id"])
    for name, props in (("auto_properties", event.auto_properties),
                        ("custom_properties", event.custom_properties)):  # fmt: skip
        for key, value in props.items():
            out.extend(_wire_value_violations(f"{at}.{name}[{_go_quote(key)}]", value))
    for name in ("kind", "occur_time", "session_id"):
        _check(out, f"{at}.{name}", getattr(event, name), fields[name])
    _cel(out, at, _EVENT_RULES.cel, event)
    return out


def wire_batch_violations(events: list[WireEvent]) -> list[_Violation]:
    """Every rule a BatchCreateRequest read by `read_batch` breaks, in protovalidate's
    order: the events' count, each event's rules, the request's CEL rules."""
    out: list[_Violation] = []
    _check(out, "events", events, _rules(BatchCreateRequest).fields["events"])
    clean = _clean
    for index, event in enumerate(events):
        if not clean(event):
            out.extend(_wire_event_violations(index, event))
    _cel(out, "", _rules(BatchCreateRequest).cel, _WireBatch(events))
    return out


_SET_OPERATORS = {FilterOperator.IS_SET, FilterOperator.IS_NOT_SET}
_LIST_OPERATORS = {
    FilterOperator.IN, FilterOperator.NOT_IN, FilterOperator.BETWEEN, FilterOperator.NOT_BETWEEN
}  # fmt: skip
_RANGE_OPERATORS = {FilterOperator.BETWEEN, FilterOperator.NOT_BETWEEN}


def _filter_violations(path: str, f: PropertyFilter) -> list[_Violation]:
    """common.v1.PropertyFilter: its field rules, then its CEL rules in contract order."""
    out: list[_Violation] = []
    _check_fields(out, f"{path}.", f)
    _cel(out, path, _rules(PropertyFilter).cel, f)
    return out


def _ordered(f: PropertyFilter) -> bool:
    """`double(values[0]) <= double(values[1])` for a range: false with a NaN too (so NaN
    breaks both this rule and numeric_value_required); text that is not a number fails the
    server's evaluation instead, which the fake reports as numeric_value_required alone."""
    bounds = [go_float(v) for v in f.values[:2]] if f.operator in _RANGE_OPERATORS else []
    low, high = [*bounds, None, None][:2]
    return low is None or high is None or low <= high


def _is_number(text: str) -> bool:
    """CEL's `double(text) == double(text)`: the text parses as a number (Go's
    strconv.ParseFloat, which the server's CEL calls), and not NaN. Where the server's CEL
    fails to convert, the server answers invalid_argument; the fake names this rule."""
    number = go_float(text)
    return number is not None and not math.isnan(number)


def _numbers_given(op: FilterOperator | None, value: str, values: Sequence[str]) -> bool:
    """The rule property_filter.numeric_value_required: comparisons need a numeric value,
    ranges two numeric values."""
    if op in COMPARISONS:
        return _is_number(value)
    if op in _RANGE_OPERATORS:
        return len(values) >= 2 and _is_number(values[0]) and _is_number(values[1])
    return True


def _filters_violations(path: str, filters: Sequence[PropertyFilter]) -> list[_Violation]:
    return [v for i, f in enumerate(filters) for v in _filter_violations(f"{path}[{i}]", f)]


def _event_filter_violations(path: str, event_filter: EventFilter) -> list[_Violation]:
    out: list[_Violation] = []
    _check_fields(out, f"{path}.", event_filter)
    out.extend(_filters_violations(f"{path}.filters", event_filter.filters))
    return out


def _groups_violations(prefix: str, groups: Sequence[FilterGroup]) -> list[_Violation]:
    # The contract has no rule on a group's `operator` nor on `filter_groups_operator`.
    out: list[_Violation] = []
    for i, group in enumerate(groups):
        at = f"{prefix}filter_groups[{i}]"
        _check_fields(out, f"{at}.", group)
        out.extend(_filters_violations(f"{at}.filters", group.filters))
    return out


def _time_range_violations(
    path: str, time_range: TimeRange | None, times: wire.Times
) -> list[_Violation]:
    """common.v1.TimeRange's rules, when one is given; the times compared exactly as
    sent (nanoseconds, any year), as CEL compares them."""
    out: list[_Violation] = []
    if time_range is None:
        return out
    _check_fields(out, f"{path}.", time_range)
    # An unset end reads as the epoch in CEL (the default Timestamp), so protovalidate
    # evaluates the rule beside `required`: an empty range breaks both.
    span = _Span(times.nanos(f"{path}.from") or 0, times.nanos(f"{path}.to") or 0)
    _cel(out, path, _rules(TimeRange).cel, span)
    return out


def _feed_violations(
    request: activity_v1.GetActivityFeedRequest | activity_v1.GetEventExplorerRequest,
    times: wire.Times,
) -> list[_Violation]:
    out: list[_Violation] = []
    rule = _rules(type(request))
    if "distinct_id" in rule.fields:
        _check(out, "distinct_id", request.distinct_id, rule.fields["distinct_id"])
    out.extend(_time_range_violations("time_range", request.time_range, times))
    _check(out, "property_filters", request.property_filters, rule.fields["property_filters"])
    out.extend(_filters_violations("property_filters", request.property_filters))
    _check(out, "page_size", request.page_size, rule.fields["page_size"])
    _check(out, "events", request.events, rule.fields["events"])
    for i, event_filter in enumerate(request.events):
        out.extend(_event_filter_violations(f"events[{i}]", event_filter))
    _cel(out, "", rule.cel, request)  # `<rpc>.events_non_empty_in_multi`
    return out


def _heatmap_violations(
    request: activity_v1.GetActivityHeatmapRequest, times: wire.Times
) -> list[_Violation]:
    return _violations(request) + _time_range_violations("time_range", request.time_range, times)


def _event_queries_violations(
    path: str, queries: Sequence[insights_v1.EventQuery]
) -> list[_Violation]:
    out: list[_Violation] = []
    for i, query in enumerate(queries):
        at = f"{path}[{i}]"
        if query.event is not None:
            out.extend(_event_filter_violations(f"{at}.event", query.event))
        _check_fields(out, f"{at}.", query)
        _cel(out, at, _rules(insights_v1.EventQuery).cel, query)
    return out


def _query_violations(request: insights_v1.QueryRequest, times: wire.Times) -> list[_Violation]:
    out: list[_Violation] = []
    fields = _rules(insights_v1.QueryRequest).fields
    spec = request.spec
    if _check(out, "spec", spec, fields["spec"]) and spec is not None:
        out.extend(_spec_violations("spec", spec, times))
    _check(out, "time_range", request.time_range, fields["time_range"])
    out.extend(_time_range_violations("time_range", request.time_range, times))
    for name in ("granularity", "timezone"):
        _check(out, name, getattr(request, name), fields[name])
    # The CEL rules bounding the range of each granularity, evaluated whatever else is
    # broken, an unset time reading as the epoch (CEL's default Timestamp).
    start, end = times.nanos("time_range.from") or 0, times.nanos("time_range.to") or 0
    ranged = _Ranged(int(request.granularity or 0), end - start)
    _cel(out, "", _rules(insights_v1.QueryRequest).cel, ranged)
    return out


_Spec: TypeAlias = insights_v1.InsightQuerySpec
_Type = insights_v1.InsightType
_TOP_K, _USER_FLOW = _Type.TOP_K, _Type.USER_FLOW
_PROPERTY_KEY = rules.PROPERTY_KEY_PATTERN  # the pattern the CEL rules `matches()`
_PAGE_METRICS = {insights_v1.SessionMetric.ENTRY, insights_v1.SessionMetric.EXIT}
_USER_METRICS = {
    insights_v1.AggregationType.UNIQUE_USERS, insights_v1.AggregationType.PER_USER_AVG
}  # fmt: skip


def _kind(spec: _Spec) -> int:
    """`this.insight_type`: unset reads as 0 in CEL."""
    return int(spec.insight_type or 0)


def _top_k(spec: _Spec) -> insights_v1.TopKQuery:
    """`this.top_k`: an unset message reads as its defaults in CEL."""
    return spec.top_k or insights_v1.TopKQuery()


def _flow(spec: _Spec) -> insights_v1.UserFlowQuery:
    return spec.user_flow or insights_v1.UserFlowQuery()


def _in_range(value: int | None, low: int, high: int) -> bool:
    """`v == 0 || (v >= low && v <= high)`: an unset limit reads as 0 (the default)."""
    return not value or low <= value <= high


def _key_given(text: str | None) -> bool:
    """`p.size() > 0 && p.matches('^\\$?[a-zA-Z0-9_.-]+$')`."""
    return bool(text) and _PROPERTY_KEY.matches(text or "")


class _Span(NamedTuple):
    """`this` of common.v1.TimeRange's CEL rule: its ends in nanoseconds, exactly as sent
    (an unset end reads as the epoch, CEL's default Timestamp)."""

    start: int
    end: int


class _Ranged(NamedTuple):
    """`this` of QueryRequest's CEL rules: its granularity's number and the length of its
    time range in nanoseconds, exactly as sent."""

    granularity: int
    length: int


def _within(number: int, limit: rules.MaxRange) -> Callable[[_Ranged], bool]:
    """`query_request.granularity_*_max_range`: granularity `number`'s range at most
    `limit.longest` (pug.rules.GRANULARITY_MAX_RANGES)."""
    return lambda q: q.granularity != number or q.length <= _nanos(limit)


def _auto_keys_prefixed(e: Event) -> bool:
    return all(key.startswith(rules.AUTO_PROPERTY_PREFIX) for key in e.auto_properties)


def _custom_keys_unprefixed(e: Event) -> bool:
    return not any(key.startswith(rules.AUTO_PROPERTY_PREFIX) for key in e.custom_properties)


def _events_named(r: activity_v1.GetActivityFeedRequest) -> bool:
    """`<rpc>.events_non_empty_in_multi`: with several event filters, each has a kind or a
    property filter."""
    return len(r.events) <= 1 or all(e.kind or e.filters for e in r.events)


# Every CEL rule the fake implements, by rule id: true when `this` passes. Each is the
# contract's expression in Python (unset fields read as their defaults, as in CEL) on
# `this` as the fake holds it: the message (or field value) the rule is on, or, for the
# rules on times, their exact nanoseconds (`_Span`, `_Ranged`, a duration's int). The
# ids, messages and order come from pug.rules; `_CEL_IDS_UNCOVERED` below holds the
# table to exactly the contract's CEL rules of the messages the fake validates.
_CEL: dict[str, Callable[[Any], bool]] = {
    # sdk.events.v1.BatchCreateRequest (`this.events.all(...)`)
    "batch.cookieless_identity_server_owned": lambda r: (
        not any(e.cookieless and (e.distinct_id or e.session_id) for e in r.events)
    ),
    "batch.distinct_id_reserved_prefix": lambda r: (
        not any((e.distinct_id or "").startswith(rules.RESERVED_ID_PREFIX) for e in r.events)
    ),
    # sdk.events.v1.Event
    "event.auto_properties_dollar_prefix": _auto_keys_prefixed,
    "event.custom_properties_no_dollar_prefix": _custom_keys_unprefixed,
    "event.identity_required_unless_cookieless": lambda e: bool(
        e.cookieless or (e.distinct_id and e.session_id)
    ),
    # sdk.profiles.v1.IdentifyRequest.external_id (a field rule: `this` is the string)
    "external_id.reserved_prefix": lambda v: not v.startswith(rules.RESERVED_ID_PREFIX),
    # common.v1.PropertyFilter
    "property_filter.value_required": lambda f: (
        f.operator in _SET_OPERATORS | _LIST_OPERATORS or bool(f.value)
    ),
    "property_filter.numeric_value_required": lambda f: _numbers_given(
        f.operator, f.value or "", f.values
    ),
    "property_filter.values_required": lambda f: (
        f.operator not in _LIST_OPERATORS or bool(f.values)
    ),
    "property_filter.values_not_allowed": lambda f: f.operator in _LIST_OPERATORS or not f.values,
    "property_filter.between_requires_two_values": lambda f: (
        f.operator not in _RANGE_OPERATORS or len(f.values) == 2
    ),
    "property_filter.value_not_allowed_for_set_operators": lambda f: (
        f.operator not in _SET_OPERATORS or not f.value
    ),
    "property_filter.between_ordered_values": _ordered,
    # common.v1.TimeRange
    "time_range.from_before_to": lambda span: span.start < span.end,
    # shared.activity.v1.GetActivityFeedRequest, GetEventExplorerRequest
    "activity_feed.events_non_empty_in_multi": _events_named,
    "event_explorer.events_non_empty_in_multi": _events_named,
    # shared.insights.v1.EventQuery
    "event_query.property_required_for_numeric_agg": lambda q: (
        q.aggregation not in NUMERIC_AGGREGATIONS or bool(q.aggregation_property)
    ),
    # shared.insights.v1.QueryRequest: the longest range of each granularity
    **{
        limit.rule.id: _within(number, limit)
        for number, limit in rules.GRANULARITY_MAX_RANGES.items()
    },
    # shared.insights.v1.InsightQuerySpec.conversion_window (`this` in nanoseconds)
    "conversion_window.whole_seconds": lambda nanos: nanos % _NANOS_PER_SECOND == 0,
    # shared.insights.v1.InsightQuerySpec
    "insight_query_spec.funnel_retention_require_events": lambda s: (
        _kind(s) not in (_Type.FUNNEL, _Type.RETENTION) or len(s.events) > 0
    ),
    "insight_query_spec.funnel_only_conversion_window": lambda s: (
        _kind(s) == _Type.FUNNEL or s.conversion_window is None
    ),
    "insight_query_spec.funnel_only_step_timing": lambda s: (
        _kind(s) == _Type.FUNNEL or not s.include_step_timing
    ),
    "insight_query_spec.session_only_trends_segmentation": lambda s: (
        s.session is None or _kind(s) in (_Type.TRENDS, _Type.SEGMENTATION)
    ),
    "insight_query_spec.session_no_events": lambda s: s.session is None or not s.events,
    "insight_query_spec.session_page_metrics_require_trends_breakdown": lambda s: (
        s.session is None
        or s.session.metric not in _PAGE_METRICS
        or (_kind(s) == _Type.TRENDS and len(s.breakdowns) == 1)
    ),
    "insight_query_spec.segmentation_no_breakdowns": lambda s: (
        _kind(s) != _Type.SEGMENTATION or not s.breakdowns
    ),
    "insight_query_spec.unique_breakdown_properties": lambda s: (
        len({b.property or "" for b in s.breakdowns}) == len(s.breakdowns)
    ),
    "insight_query_spec.breakdown_limit_requires_breakdowns": lambda s: (
        not s.breakdown_limit or len(s.breakdowns) > 0
    ),
    "insight_query_spec.retention_max_events": lambda s: (
        _kind(s) != _Type.RETENTION or len(s.events) <= 2
    ),
    "insight_query_spec.funnel_max_steps": lambda s: (
        _kind(s) != _Type.FUNNEL or len(s.events) <= 20
    ),
    "insight_query_spec.numeric_agg_only_trends_segmentation": lambda s: (
        _kind(s) in (_Type.TRENDS, _Type.SEGMENTATION)
        or not any(e.aggregation in NUMERIC_AGGREGATIONS for e in s.events)
    ),
    "insight_query_spec.user_flow_only_for_user_flow": lambda s: (
        s.user_flow is None or _kind(s) == _USER_FLOW
    ),
    "insight_query_spec.user_flow_required": lambda s: (
        _kind(s) != _USER_FLOW or s.user_flow is not None
    ),
    "insight_query_spec.user_flow_no_events": lambda s: _kind(s) != _USER_FLOW or not s.events,
    "insight_query_spec.user_flow_no_session": lambda s: (
        _kind(s) != _USER_FLOW or s.session is None
    ),
    "insight_query_spec.user_flow_no_breakdowns": lambda s: (
        _kind(s) != _USER_FLOW or not s.breakdowns
    ),
    "insight_query_spec.user_flow_no_breakdown_limit": lambda s: (
        _kind(s) != _USER_FLOW or not s.breakdown_limit
    ),
    "insight_query_spec.user_flow_property_required": lambda s: (
        _kind(s) != _USER_FLOW
        or _flow(s).node_kind != insights_v1.UserFlowQueryNodeKind.PROPERTY
        or _key_given(_flow(s).node_property)
    ),
    "insight_query_spec.user_flow_max_hops_range": lambda s: (
        _kind(s) != _USER_FLOW or _in_range(_flow(s).max_hops, 1, 10)
    ),
    "insight_query_spec.user_flow_max_nodes_range": lambda s: (
        _kind(s) != _USER_FLOW or _in_range(_flow(s).max_nodes, 2, 50)
    ),
    "insight_query_spec.user_flow_max_links_range": lambda s: (
        _kind(s) != _USER_FLOW or _in_range(_flow(s).max_links, 1, 500)
    ),
    "insight_query_spec.top_k_only_for_top_k": lambda s: s.top_k is None or _kind(s) == _TOP_K,
    "insight_query_spec.top_k_required": lambda s: _kind(s) != _TOP_K or s.top_k is not None,
    "insight_query_spec.top_k_no_events": lambda s: _kind(s) != _TOP_K or not s.events,
    "insight_query_spec.top_k_no_session": lambda s: _kind(s) != _TOP_K or s.session is None,
    "insight_query_spec.top_k_no_breakdowns": lambda s: _kind(s) != _TOP_K or not s.breakdowns,
    "insight_query_spec.top_k_no_breakdown_limit": lambda s: (
        _kind(s) != _TOP_K or not s.breakdown_limit
    ),
    "insight_query_spec.top_k_property_required": lambda s: (
        _kind(s) != _TOP_K
        or _top_k(s).dimension != insights_v1.TopKQueryDimension.PROPERTY
        or _key_given(_top_k(s).property)
    ),
    "insight_query_spec.top_k_property_only_for_property_dimension": lambda s: (
        _kind(s) != _TOP_K
        or _top_k(s).dimension == insights_v1.TopKQueryDimension.PROPERTY
        or not _top_k(s).property
    ),
    "insight_query_spec.top_k_metric_property_required": lambda s: (
        _kind(s) != _TOP_K
        or _top_k(s).metric not in NUMERIC_AGGREGATIONS
        or bool(_top_k(s).metric_property)
    ),
    "insight_query_spec.top_k_user_dimension_metric": lambda s: (
        _kind(s) != _TOP_K
        or _top_k(s).dimension != insights_v1.TopKQueryDimension.USER
        or _top_k(s).metric not in _USER_METRICS
    ),
}


def contract_cel_ids() -> set[str]:
    """The ids of every CEL rule of the messages the fake validates: those of pug.rules'
    MESSAGES (each method's request and the messages inside it), on a message, a field or
    a field's items."""
    ids: set[str] = set()
    for message in rules.MESSAGES.values():
        ids.update(cel.id for cel in message.cel)
        for field in message.fields.values():
            item: rules.Field | None = field
            while item is not None:
                ids.update(cel.id for cel in item.cel)
                item = item.items
    return ids


# A rule the contract gains must be written here before the fake starts (one it drops,
# removed): checked at import, so no request can meet a rule the fake would skip.
_CEL_IDS_UNCOVERED = contract_cel_ids() ^ set(_CEL)
if _CEL_IDS_UNCOVERED:
    raise RuntimeError(f"FakePug's _CEL and pug.rules differ on {sorted(_CEL_IDS_UNCOVERED)}")


def _spec_violations(path: str, spec: _Spec, times: wire.Times) -> list[_Violation]:
    """shared.insights.v1.InsightQuerySpec: its fields' rules, the messages inside it
    (events, breakdowns, filter groups, session, user flow, top k and their scopes), then
    its CEL rules in the contract's order, all evaluated (protovalidate reports every one)."""
    out: list[_Violation] = []
    rule = _rules(insights_v1.InsightQuerySpec)
    for name in ("insight_type", "breakdowns", "breakdown_limit"):
        _check(out, f"{path}.{name}", getattr(spec, name), rule.fields[name])
    out.extend(_event_queries_violations(f"{path}.events", spec.events))
    for i, breakdown in enumerate(spec.breakdowns):
        _check_fields(out, f"{path}.breakdowns[{i}].", breakdown)
    out.extend(_groups_violations(f"{path}.", spec.filter_groups))
    window = times.nanos(f"{path}.conversion_window")
    if window is not None:
        out.extend(_window_violations(f"{path}.conversion_window", window, rule))
    for name in ("session", "user_flow", "top_k"):
        sub = getattr(spec, name)
        if sub is not None:
            _check_fields(out, f"{path}.{name}.", sub)
            if sub.scope is not None:
                out.extend(_event_filter_violations(f"{path}.{name}.scope", sub.scope))
    _cel(out, path, rule.cel, spec)
    return out


def _window_violations(path: str, nanos: int, rule: rules.Message) -> list[_Violation]:
    """conversion_window: `duration.gte` (from pug.rules, in seconds) and its CEL rule
    (a whole number of seconds), on the exact value sent."""
    out: list[_Violation] = []
    field = rule.fields["conversion_window"]
    if field.gte is not None and nanos < field.gte * _NANOS_PER_SECOND:
        message = f"must be greater than or equal to {field.gte:g}s"
        out.append(_Violation(path, "duration.gte", message))
    _cel(out, path, field.cel, nanos)  # conversion_window.whole_seconds
    return out


def _nanos(limit: rules.MaxRange) -> int:
    return limit.longest // datetime.timedelta(microseconds=1) * 1000


def _segment_violations(
    request: insights_v1.SegmentUsersRequest, times: wire.Times
) -> list[_Violation]:
    out: list[_Violation] = []
    fields = _rules(insights_v1.SegmentUsersRequest).fields
    _check(out, "time_range", request.time_range, fields["time_range"])
    out.extend(_time_range_violations("time_range", request.time_range, times))
    _check(out, "events", request.events, fields["events"])
    out.extend(_event_queries_violations("events", request.events))
    _check(out, "page_size", request.page_size, fields["page_size"])
    out.extend(_groups_violations("", request.filter_groups))
    return out


# What the fake checks of each request, by its type (the rest of each is in pug.rules).
_REQUEST_RULES: dict[type[betterproto2.Message], Callable[[Any, wire.Times], list[_Violation]]] = {
    activity_v1.GetActivityFeedRequest: _feed_violations,
    activity_v1.GetEventExplorerRequest: _feed_violations,
    activity_v1.GetActivityHeatmapRequest: _heatmap_violations,
    profiles_v1.ListRequest: lambda r, _: _groups_violations("", r.filter_groups),
    insights_v1.QueryRequest: _query_violations,
    insights_v1.SegmentUsersRequest: _segment_violations,
}


def _request_violations(request: betterproto2.Message, times: wire.Times) -> list[_Violation]:
    """Every rule a request breaks: its own checks, or (a flat request: Get, Identify,
    GetPropertyValues, GetFilterSchema, ...) the rules of its fields."""
    check = _REQUEST_RULES.get(type(request))
    return _violations(request) if check is None else check(request, times)


# ---- the fake -----------------------------------------------------------------------------


class _Flushable(Protocol):
    def flush(self) -> object: ...


def _parse(cls: type[M], body: bytes) -> tuple[M, wire.Times]:
    """The request as the server reads it (`wire.canonical`), and its exact times. Bytes
    the server cannot unmarshal are `invalid_argument`, as connect-go answers them."""
    try:
        readable, times = wire.canonical(cls, body)
    except wire.Unreadable as exc:
        raise error_for("invalid_argument", f"unreadable {cls.__name__}: {exc}") from None
    return cls.parse(readable), times


_Answer: TypeAlias = Callable[[Any], Any]


class FakePug(InMemoryTransport):
    """An in-memory Pug server that plugs into the SDK as its transport.

    - `events(kind=, distinct_id=)`: what was received, as `ReceivedEvent`s;
      `assert_tracked(expected, properties, distinct_id=)` fails with a field-by-field diff.
    - `profiles` (external id → properties), `profile(external_id)` (the Profile message),
      `merged_ids(external_id)` (the anonymous ids folded into it).
    - `flush_hooks`: callables run before `events`, `assert_tracked` and `profiles`;
      `attach(client)` registers the client's flush there.
    - `reset()`: forget everything received and any injected failure.
    - `clock`: the server's "now" (profile and deletion times).
    - `settle()`: store what arrived now, not at the next read (the dev server's idle work).
    - `max_store_bytes`: what the store holds at most (estimated); past it, the oldest
      events are dropped (counted in `evicted_events`, a warning logged once), then
      profiles left without events, traits or aliases.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        clock: Callable[[], datetime.datetime] = now,
        max_store_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        super().__init__(self.handle, stream_handler=self.handle_stream, latency=latency)
        self.flush_hooks: list[Callable[[], object]] = []
        self._state_lock = threading.Lock()
        self._store = Store(clock, max_store_bytes)

    @property
    def clock(self) -> Callable[[], datetime.datetime]:
        return self._store.clock

    @clock.setter
    def clock(self, clock: Callable[[], datetime.datetime]) -> None:
        self._store.clock = clock

    def settle(self) -> None:
        """Store the batches taken and not stored yet (every read does this first; so does
        a batch past the bound on what may wait): the dev server calls it when no batch is
        arriving, so that a burst's batches are answered without it."""
        with self._state_lock:
            self._store.settle()

    @property
    def evicted_events(self) -> int:
        """Events dropped (the oldest first) to keep the store within `max_store_bytes`."""
        with self._state_lock:
            self._store.settle()
            return self._store.evicted_events

    # ---- entry points ------------------------------------------------------------------

    def handle(self, method: str, body: bytes) -> bytes:
        """Answer one unary call: the serialized request in, the serialized response out.
        Raises `PugError` with the code a Pug server would answer."""
        return bytes(self._answer(method, body, streaming=False))

    def handle_stream(self, method: str, body: bytes) -> list[bytes]:
        """Answer one server-streaming call: every serialized response message, in order."""
        return [bytes(message) for message in self._answer(method, body, streaming=True)]

    def _answer(self, method: str, body: bytes, *, streaming: bool) -> Any:
        """Parse the request, check it by the server's rules, answer it from the store."""
        route = service_methods().get(method)
        answer = self._answers(route)
        if route is None or answer is None:
            raise error_for("unimplemented", f"FakePug does not implement {method}")
        if route.streams != streaming:
            raise self._wrong_call(method, streams=route.streams)
        if route.request is BatchCreateRequest:
            return self.handle_batch(body)[0]
        request, times = _parse(route.request, body)
        with self._state_lock:
            _raise_if(_request_violations(request, times))
            return answer(request)

    def handle_batch(self, body: bytes) -> tuple[bytes, list[ingest.Arrival]]:
        """Answer one BatchCreate (the serialized response) and the events it carried.
        A batch as the SDK writes it is judged by `ingest.Scanner` (fields judged once by
        their bytes, events kept as bytes); any other, or one that breaks a rule, is read
        by `read_batch` and checked rule by rule. No betterproto2 object either way: the
        dev server keeps up with the SDK, and prints the same events."""
        arrivals = None if _SCANNER is None else _SCANNER.scan(body)
        if arrivals is None:
            try:
                events = read_batch(body)
            except ValueError as exc:
                raise error_for(
                    "invalid_argument", f"unreadable BatchCreateRequest: {exc}"
                ) from None
            _raise_if(wire_batch_violations(events))
            data = bytes(body)
            spans = event_spans(data)
            arrivals = [
                ingest.arrival(e, data[a:b]) for e, (a, b) in zip(events, spans, strict=True)
            ]
        with self._state_lock:
            response = self._store.batch_create(arrivals, len(body))
        return response, arrivals

    def _answers(self, route: Method | None) -> _Answer | None:
        """The store's method that answers `route` (named after the RPC), if it has one."""
        return None if route is None else getattr(self._store, route.python_name, None)

    @staticmethod
    def _wrong_call(method: str, *, streams: bool) -> PugError:
        if streams:
            return error_for("unimplemented", f"{method} is server-streaming: call handle_stream()")
        return error_for("unimplemented", f"{method} is unary: call handle()")

    def reset_after_fork(self) -> None:
        super().reset_after_fork()
        self._state_lock = threading.Lock()

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
                for e in self._store.events
                if (kind is None or e.kind == kind)
                and (distinct_id is None or e.distinct_id == distinct_id)
            ]
            return [assertions.received(e) for e in stored]

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
        return assertions.tracked(expected, properties, distinct_id, self.events())

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        """External id → properties, for every profile."""
        self._run_flush_hooks()
        with self._state_lock:
            return {k: dict(p.properties) for k, p in self._store.profiles.items()}

    def profile(self, external_id: str) -> profiles_v1.Profile:
        """The Profile message for an external id; KeyError if there is none."""
        self._run_flush_hooks()
        with self._state_lock:
            profile = self._store.profiles.get(external_id)
            if profile is None:
                raise KeyError(f"no profile with external id {external_id!r}")
            return self._store.profile_message(profile)

    def merged_ids(self, external_id: str) -> list[str]:
        """The anonymous ids identify merged into a profile (its events sent with them are
        the profile's), in merge order."""
        with self._state_lock:
            return [a for a, target in self._store.aliases.items() if target == external_id]

    def reset(self) -> None:
        """Forget every event, profile, deletion and request, and any injected failure."""
        self.recover()
        with self._lock:
            self.requests.clear()
            self.attempts.clear()
        with self._state_lock:
            self._store = Store(self._store.clock, self._store.max_bytes)
