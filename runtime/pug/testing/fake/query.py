"""What FakePug holds and how it answers from it: the stored events, profiles and
deletions (`Store`), the filters, pagination, trends and schema summaries of the read API.

`Store` has one method per RPC, named after it (`get_activity_feed`, `list_` for List:
PEP 8's trailing underscore for a builtin's name), taking a request already checked by the
server's rules (`server.py`) and returning the response. It holds no lock: `FakePug`
serializes calls. Where the real server's behaviour is not pinned down, the choices are
listed in `pug.testing.fake.server`'s docstring.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
import uuid
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import betterproto2

import pug.rules as rules
from pug.errors import error_for
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

PROJECT_ID = "fake-project"
# Page sizes are the fake's choice (the contract bounds them, it does not fix them).
LIST_PAGE_SIZE = 100  # profiles per ListResponse message
DEFAULT_PAGE_SIZE = 50  # feed, event explorer and segment pages when page_size is 0

_UTC = datetime.UTC
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
    return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)


def now() -> datetime.datetime:
    return datetime.datetime.now(_UTC)


def _plain(value: PropertyValue) -> _Plain | None:
    """The Python value of a PropertyValue's set variant."""
    _, got = betterproto2.which_one_of(value, "value")
    if isinstance(got, datetime.datetime):
        return utc(got)
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
        return iso(value)
    return value


def iso(value: datetime.datetime) -> str:
    return utc(value).isoformat().replace("+00:00", "Z")


def _struct(values: Mapping[str, object]) -> Struct:
    return Struct.from_dict({key: _json_value(value) for key, value in values.items()})


def _text(value: object) -> str:
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


def _number(value: object) -> float | None:
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
        return text.lower() == _text(value)
    number, wanted = _number(value), _finite_number(text)
    if isinstance(value, int | float) and number is not None and wanted is not None:
        return number == wanted
    if isinstance(value, datetime.datetime):
        try:
            return utc(value) == utc(datetime.datetime.fromisoformat(text))
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
    if op in COMPARISONS:
        return COMPARISONS[op](number, _checked(text))
    if op == FilterOperator.BETWEEN:
        return _checked(f.values[0]) <= number <= _checked(f.values[1])
    return False


_Lookup: TypeAlias = Callable[[PropertyFilter], tuple[bool, Any]]


def _combine(operator: LogicalOperator | None, results: Iterable[bool]) -> bool:
    return any(results) if operator == LogicalOperator.OR else all(results)


def _groups_match(
    groups: Sequence[FilterGroup], operator: LogicalOperator | None, lookup: _Lookup
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
    start = utc(time_range.from_) if time_range.from_ is not None else None
    end = utc(time_range.to) if time_range.to is not None else None
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
    start, end = utc(time_range.from_), utc(time_range.to)
    current = _bucket_start(start, granularity, zone)
    out = []
    while current < end:
        out.append(current)
        current = _next_bucket(current, granularity, zone)
    return out


def _event_property(event: StoredEvent, key: str) -> tuple[bool, Any]:
    return _lookup(event.auto if key.startswith(rules.AUTO_PROPERTY_PREFIX) else event.custom, key)


def _aggregate(query: insights_v1.EventQuery, events: Sequence[StoredEvent]) -> float:
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


def _kind_metas(events: Sequence[StoredEvent]) -> list[EventNameMeta]:
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


def _heatmap(events: Iterable[StoredEvent]) -> list[activity_v1.HeatmapDay]:
    counts = Counter(e.occur_time.date().isoformat() for e in events)
    return [activity_v1.HeatmapDay(date=day, count=counts[day]) for day in sorted(counts)]


# ---- the store ----------------------------------------------------------------------------


class Store:
    """Every event, profile, alias and deletion the fake holds, and the answer to each RPC."""

    def __init__(self, clock: Callable[[], datetime.datetime]) -> None:
        self.clock = clock
        self.events: list[StoredEvent] = []
        self._seen: set[tuple[str, str, datetime.datetime]] = set()
        self._seq = 0
        self.profiles: dict[str, StoredProfile] = {}  # by external id, in creation order
        self.aliases: dict[str, str] = {}  # merged anonymous id → identified external id
        self.deletions: dict[str, Deletion] = {}

    # ---- ingestion ---------------------------------------------------------------------

    def batch_create(self, request: BatchCreateRequest) -> BatchCreateResponse:
        for event in request.events:
            self._add(event)
        return BatchCreateResponse(accepted=len(request.events), dropped=0)

    def _add(self, event: Event) -> None:
        occur_time = utc(event.occur_time)
        kind, event_id = event.kind or "", event.event_id or ""
        key = (event_id, kind, occur_time.replace(second=0, microsecond=0))
        if key in self._seen:
            return
        self._seen.add(key)
        owner = "" if event.cookieless else self._owner(event.distinct_id or "")
        if owner:
            self._profile_for(owner)
        self._seq += 1
        self.events.append(
            StoredEvent(
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
        return self.aliases.get(distinct_id, distinct_id)

    def _profile_for(self, external_id: str) -> StoredProfile:
        """The profile of an external id, created on first sight."""
        profile = self.profiles.get(external_id)
        if profile is None:
            now = self.clock()
            profile = StoredProfile(str(uuid.uuid4()), external_id, {}, now, now)
            self.profiles[external_id] = profile
        return profile

    def identify(self, request: IdentifyRequest) -> IdentifyResponse:
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

    def _merge(self, anonymous_id: str, into: StoredProfile) -> None:
        """Fold the anonymous profile into the identified one: its properties (the
        identified profile's win), its events, and the anonymous id itself."""
        anonymous = self.profiles.pop(anonymous_id, None)
        if anonymous is not None:
            into.properties = {**anonymous.properties, **into.properties}
            into.create_time = min(into.create_time, anonymous.create_time)
        for alias, target in self.aliases.items():
            if target == anonymous_id:
                self.aliases[alias] = into.external_id
        self.aliases[anonymous_id] = into.external_id
        for event in self.events:
            if event.owner == anonymous_id:
                event.owner = into.external_id

    # ---- profiles ----------------------------------------------------------------------

    def _events_of(self, owner: str) -> list[StoredEvent]:
        return [e for e in self.events if e.owner == owner]

    def profile_message(self, profile: StoredProfile) -> profiles_v1.Profile:
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

    def _profile_by_id(self, profile_id: str) -> StoredProfile:
        for profile in self.profiles.values():
            if profile.id == profile_id:
                return profile
        raise error_for("not_found", f"profile {profile_id} not found")

    def get(self, request: profiles_v1.GetRequest) -> profiles_v1.GetResponse:
        profile = self._profile_by_id(request.id or "")
        return profiles_v1.GetResponse(profile=self.profile_message(profile))

    def get_by_external_id(
        self, request: profiles_v1.GetByExternalIdRequest
    ) -> profiles_v1.GetByExternalIdResponse:
        external_id = request.external_id or ""
        profile = self.profiles.get(external_id)
        if profile is None:
            raise error_for("not_found", f"profile with external id {external_id} not found")
        return profiles_v1.GetByExternalIdResponse(profile=self.profile_message(profile))

    def list_(self, request: profiles_v1.ListRequest) -> list[profiles_v1.ListResponse]:
        chosen = [
            p
            for p in self.profiles.values()
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
                    profiles=[self.profile_message(p) for p in chosen[start:end]],
                    next_page_token=_page_token(end) if end < len(chosen) else "",
                )
            )
        return pages

    def delete(self, request: profiles_v1.DeleteRequest) -> profiles_v1.DeleteResponse:
        profile = self._profile_by_id(request.id or "")
        deletion = self._erase(profile.external_id)
        return profiles_v1.DeleteResponse(
            request_id=deletion.request_id,
            status=profiles_v1.ComplianceRequestStatus.COMPLETED,
        )

    def delete_data_subject(
        self, request: profiles_v1.DeleteDataSubjectRequest
    ) -> profiles_v1.DeleteDataSubjectResponse:
        if not request.external_id:
            # external_id is proto3 `optional`: sent as "", it is present and passes
            # `required` (protovalidate checks presence). Erasing "nobody" is refused by
            # the handler (an empty id would match cookieless data): a decision of the
            # fake, invalid_argument without violations.
            raise error_for("invalid_argument", "external_id: must not be empty")
        deletion = self._erase(request.external_id)
        return profiles_v1.DeleteDataSubjectResponse(
            request_id=deletion.request_id,
            status=profiles_v1.ComplianceRequestStatus.COMPLETED,
        )

    def _erase(self, external_id: str) -> Deletion:
        """Delete a profile, its events and its aliases at once (the server does it in the
        background: the request is COMPLETED when it is first read)."""
        requested_at = self.clock()
        profile = self.profiles.pop(external_id, None)
        kept = [e for e in self.events if e.owner != external_id]
        erased = len(self.events) - len(kept)
        self.events = kept
        self.aliases = {k: v for k, v in self.aliases.items() if v != external_id}
        deletion = Deletion(
            request_id=str(uuid.uuid4()),
            external_id=external_id,
            profile_id=profile.id if profile is not None else None,
            events=erased,
            requested_at=requested_at,
            completed_at=self.clock(),
        )
        self.deletions[deletion.request_id] = deletion
        return deletion

    def get_deletion_request(
        self, request: profiles_v1.GetDeletionRequestRequest
    ) -> profiles_v1.GetDeletionRequestResponse:
        deletion = self.deletions.get(request.request_id or "")
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

    def _event_lookup(self, event: StoredEvent) -> _Lookup:
        """How a filter reads an event: PROFILE from its profile, AUTO from its auto
        properties, CUSTOM from its custom ones (unspecified: auto for `$` keys)."""

        def lookup(f: PropertyFilter) -> tuple[bool, Any]:
            key, source = f.property or "", f.source or PropertySource.UNSPECIFIED
            if source == PropertySource.PROFILE:
                profile = self.profiles.get(event.owner)
                return _lookup(profile.properties if profile else {}, key)
            if source == PropertySource.AUTO:
                return _lookup(event.auto, key)
            if source == PropertySource.CUSTOM:
                return _lookup(event.custom, key)
            return _event_property(event, key)

        return lookup

    def _event_filter_matches(self, event: StoredEvent, event_filter: EventFilter) -> bool:
        if event_filter.kind and event.kind != event_filter.kind:
            return False
        lookup = self._event_lookup(event)
        return all(_matches(f, *lookup(f)) for f in event_filter.filters)

    def _select_events(
        self, request: activity_v1.GetActivityFeedRequest | activity_v1.GetEventExplorerRequest
    ) -> list[StoredEvent]:
        """The events a feed request asks for, newest first."""
        owner = self._owner(request.distinct_id) if request.distinct_id else None
        chosen = []
        for e in self.events:
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
        return [activity_event(e) for e in page], token

    def get_activity_feed(
        self, request: activity_v1.GetActivityFeedRequest
    ) -> activity_v1.GetActivityFeedResponse:
        events, token = self._event_page(request)
        return activity_v1.GetActivityFeedResponse(events=events, next_page_token=token)

    def get_event_explorer(
        self, request: activity_v1.GetEventExplorerRequest
    ) -> activity_v1.GetEventExplorerResponse:
        events, token = self._event_page(request)
        return activity_v1.GetEventExplorerResponse(events=events, next_page_token=token)

    def get_activity_heatmap(
        self, request: activity_v1.GetActivityHeatmapRequest
    ) -> activity_v1.GetActivityHeatmapResponse:
        # distinct_id must be sent; "" asks for everyone.
        owner = self._owner(request.distinct_id) if request.distinct_id else None
        events = [
            e
            for e in self.events
            if (owner is None or e.owner == owner) and _in_range(e.occur_time, request.time_range)
        ]
        return activity_v1.GetActivityHeatmapResponse(days=_heatmap(events))

    def get_profile_stats(
        self, request: activity_v1.GetProfileStatsRequest
    ) -> activity_v1.GetProfileStatsResponse:
        owner = self._owner(request.distinct_id or "")
        profile = self.profiles.get(owner)
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

    def get_filter_schema(self, request: GetFilterSchemaRequest) -> GetFilterSchemaResponse:
        events = [e for e in self.events if not request.event_kind or e.kind == request.event_kind]
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
                ((p.properties, p.update_time) for p in self.profiles.values()),
                _profile_value_type,
                allowed,
            ),
        )

    def get_property_values(
        self, request: activity_v1.GetPropertyValuesRequest | insights_v1.GetPropertyValuesRequest
    ) -> activity_v1.GetPropertyValuesResponse | insights_v1.GetPropertyValuesResponse:
        """The values of a property, the most frequent first: both services answer this
        RPC, each with its own response message."""
        key, source = request.property_key or "", request.source
        if source == PropertySource.PROFILE:
            values = _ranked_texts(_lookup(p.properties, key)[1] for p in self.profiles.values())
        else:
            auto = source == PropertySource.AUTO or (
                source == PropertySource.UNSPECIFIED and key.startswith(rules.AUTO_PROPERTY_PREFIX)
            )
            kind = request.event_kind
            events = [e for e in self.events if not kind or e.kind == kind]
            values = _ranked_texts(_lookup(e.auto if auto else e.custom, key)[1] for e in events)
        if isinstance(request, insights_v1.GetPropertyValuesRequest):
            return insights_v1.GetPropertyValuesResponse(values=values)
        return activity_v1.GetPropertyValuesResponse(values=values)

    # ---- insights ----------------------------------------------------------------------

    def query(self, request: insights_v1.QueryRequest) -> insights_v1.QueryResponse:
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
            for e in self.events
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
        events: Sequence[StoredEvent],
        buckets: Sequence[datetime.datetime],
        granularity: Granularity,
        zone: datetime.tzinfo,
    ) -> insights_v1.TrendSeries:
        event_filter = query.event or EventFilter()
        by_bucket: dict[datetime.datetime, list[StoredEvent]] = defaultdict(list)
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

    def segment_users(
        self, request: insights_v1.SegmentUsersRequest
    ) -> insights_v1.SegmentUsersResponse:
        candidates = [
            e for e in self.events if e.owner and _in_range(e.occur_time, request.time_range)
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
        profile = self.profiles.get(external_id)
        props = profile.properties if profile is not None else {}
        return lambda f: _lookup(props, f.property or "")


def activity_event(e: StoredEvent) -> activity_v1.ActivityEvent:
    return activity_v1.ActivityEvent(
        event_id=e.event_id,
        kind=e.kind,
        distinct_id=e.owner,
        occur_time=e.occur_time,
        session_id=e.session_id,
        auto_properties=_struct(e.auto),
        custom_properties=_struct(e.custom),
    )
