"""FakePug answers as the server does: over hypothesis-generated requests, its code and
violations (field path, rule id) are those protovalidate reports for the same bytes, with
the contract's rules on the descriptors (tests/support/protovalidate_pool.py).

Covered: every method the fake answers: BatchCreate, Identify, the profiles methods (List
with its filter groups and every PropertyFilter rule, Get, GetByExternalId, Delete,
DeleteDataSubject, GetDeletionRequest), the activity methods (feed, event explorer,
heatmap, profile stats, filter schema, property values) and insights (Query with every
InsightQuerySpec rule, SegmentUsers, filter schema, property values). A valid read may
answer not_found (the store is empty), never with violations. `valid_queries` builds
queries breaking no rule, of each insight type (one in five of the generated queries, and
a test per type, answered from a store holding events: `seeded_fake`); every rule is
broken on every run by the fixed examples of tests/unit/test_fake_rule_examples.py.

Messages are compared exactly: a CEL rule's is the contract's, a standard rule's is the
wording of buf/validate/validate.proto, which protovalidate-py 2.x and the server's
protovalidate-go 1.x share ("must be at most 1024 characters"; "value is required").
Where protovalidate cannot evaluate a rule (CEL's double() of text that is not a number),
the server answers invalid_argument without violations; the fake must answer
invalid_argument (it names property_filter.numeric_value_required).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import protovalidate
import pytest
from google.protobuf import message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protovalidate_pool import Found, annotated_messages, violations
from pug import PugError
from pug.testing import FakePug
from pug.testing.fake.server import service_methods
from pug.transports.base import BATCH_CREATE, IDENTIFY

LIST = "shared.profiles.v1.ProfilesService/List"
EXAMPLES = 300  # per method

UUIDS = st.sampled_from([str(uuid.UUID(int=7)), "", "evt-1", "0" * 36])
KINDS = st.sampled_from(["signup", "", "a b", "signup\n", "ok.kind-1"])
IDS = st.sampled_from(["", "u1", "cookieless-1", "é"])
KEYS = st.sampled_from(["$lib", "plan", "", "$", "é\n"])
SECONDS = st.integers(min_value=-(2**40), max_value=2**40) | st.sampled_from([0, 2**62])


# Cached: hypothesis validates each new strategy at its first draw, and the composites
# below ask for these on every draw.
@functools.cache
def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def setter(target: message.Message, name: str, value: Any) -> None:
    if value is not None:
        setattr(target, name, value)


@st.composite
def property_values(draw: st.DrawFn, target: message.Message) -> None:
    member = draw(st.sampled_from(["none", "string", "int", "double", "bool", "timestamp"]))
    if member == "string":
        target.string_value = draw(st.sampled_from(["x", "é" * 1024, "é" * 1025]))  # type: ignore[attr-defined]
    elif member == "int":
        target.int_value = draw(st.integers(-(2**63), 2**63 - 1))  # type: ignore[attr-defined]
    elif member == "double":
        target.double_value = draw(st.floats())  # type: ignore[attr-defined]
    elif member == "bool":
        target.bool_value = draw(st.booleans())  # type: ignore[attr-defined]
    elif member == "timestamp":
        target.timestamp_value.seconds = draw(SECONDS)  # type: ignore[attr-defined]


@st.composite
def batches(draw: st.DrawFn) -> message.Message:
    request = annotated_messages()["sdk.events.v1.BatchCreateRequest"]()
    for _ in range(draw(st.integers(0, 3))):
        event = request.events.add()  # type: ignore[attr-defined]
        setter(event, "event_id", draw(maybe(UUIDS)))
        setter(event, "kind", draw(maybe(KINDS)))
        setter(event, "distinct_id", draw(maybe(IDS)))
        setter(event, "session_id", draw(maybe(UUIDS)))
        setter(event, "cookieless", draw(maybe(st.booleans())))
        seconds = draw(maybe(SECONDS))
        if seconds is not None:
            event.occur_time.seconds = seconds
            event.occur_time.nanos = draw(st.integers(0, 999_999_999))
        for name in ("auto_properties", "custom_properties"):
            for key in draw(st.lists(KEYS, max_size=2, unique=True)):
                draw(property_values(getattr(event, name)[key]))
    return request


@st.composite
def identifies(draw: st.DrawFn) -> message.Message:
    request = annotated_messages()["sdk.profiles.v1.IdentifyRequest"]()
    setter(request, "external_id", draw(maybe(IDS)))
    anonymous = st.sampled_from(["", "anon-1", "x", "anon-" + "a" * 251])
    setter(request, "anonymous_id", draw(maybe(anonymous)))
    setter(request, "device_id", draw(maybe(st.sampled_from(["", "d", "x" * 36, "x" * 37]))))
    for key in draw(st.lists(KEYS, max_size=2)):
        request.traits.fields[key].string_value = "v"  # type: ignore[attr-defined]
    return request


# Texts that cel-rust (protovalidate-py) and the server's cel-go (strconv.ParseFloat) read
# alike. They differ on " 1" and "1 " (cel-rust trims: a number; Go: not), "1e400" (Go: out
# of range, an error) and "1_0" (Go: 10; cel-rust: an error): the fake follows Go there,
# held by tests/unit/test_fake_wire.py.
NUMBERS = st.sampled_from(["1", "-2.5", "+1", ".5", "1e5", "NaN", "Inf", "0x1p1", "abc", "", "١٢"])


@st.composite
def filters(draw: st.DrawFn, target: message.Message) -> None:
    setter(target, "property", draw(maybe(st.sampled_from(["plan", "", "a..b", "$x.y", "a b"]))))
    setter(target, "operator", draw(maybe(st.integers(0, 15))))
    setter(target, "value", draw(maybe(NUMBERS)))
    target.values.extend(draw(st.lists(NUMBERS, max_size=3)))  # type: ignore[attr-defined]
    setter(target, "source", draw(maybe(st.integers(0, 4))))


@st.composite
def lists(draw: st.DrawFn) -> message.Message:
    request = annotated_messages()["shared.profiles.v1.ListRequest"]()
    for _ in range(draw(st.integers(0, 2))):
        group = request.filter_groups.add()  # type: ignore[attr-defined]
        setter(group, "operator", draw(maybe(st.integers(0, 4))))
        for _ in range(draw(st.integers(0, 2))):
            draw(filters(group.filters.add()))
    setter(request, "filter_groups_operator", draw(maybe(st.integers(0, 4))))
    return request


def fake_answer(method: str, body: bytes, fake: FakePug | None = None) -> tuple[str, list[Found]]:
    """The fake's code ("ok" when it answers) and violations for the bytes (asking a new,
    empty fake unless given one)."""
    fake = fake or FakePug()
    try:
        if service_methods()[method].streams:
            fake.handle_stream(method, body)
        else:
            fake.handle(method, body)
    except PugError as error:
        details: Any = error.details
        found = [Found(d["field"], d["rule_id"], d["message"]) for d in details or []]
        return error.code, found
    return "ok", []


def comparable(found: list[Found]) -> list[Found]:
    """Violations in a stable order (protovalidate's follows the descriptor's fields)."""
    return sorted(found)


def check(
    method: str,
    request: message.Message,
    answers: tuple[str, ...] = ("ok",),
    fake: FakePug | None = None,
) -> None:
    """The fake answers `request` as protovalidate judges it: invalid_argument with the
    same violations, or (a valid request) one of `answers` with none (a read of an empty
    store may be not_found)."""
    body = request.SerializeToString()
    code, found = fake_answer(method, body, fake)
    try:
        expected = violations(request)
    except protovalidate.EvaluationError:
        assert code == "invalid_argument", "the server fails to evaluate a rule: invalid_argument"
        return
    if expected:
        assert code == "invalid_argument"
        assert comparable(found) == comparable(expected)
    else:
        assert code in answers and found == [], (code, found)


COMMON = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@COMMON
@given(batches())
def test_batch_create_answers_as_protovalidate(request_: message.Message) -> None:
    check(BATCH_CREATE, request_)


@COMMON
@given(identifies())
def test_identify_answers_as_protovalidate(request_: message.Message) -> None:
    check(IDENTIFY, request_)


@COMMON
@given(lists())
def test_list_filters_answer_as_protovalidate(request_: message.Message) -> None:
    check(LIST, request_)


@pytest.mark.parametrize(
    "key", ["é", "a\nb", 'q"', "\x7f", "\u2028"], ids=["é", "newline", "quote", "del", "u2028"]
)
def test_a_map_key_in_a_field_path_is_quoted_as_go_quotes_it(key: str) -> None:
    request = annotated_messages()["sdk.events.v1.BatchCreateRequest"]()
    event = request.events.add()  # type: ignore[attr-defined]
    event.custom_properties[key].Clear()  # an entry whose value has no member: a violation
    check(BATCH_CREATE, request)


# ---- the read methods ----------------------------------------------------------------------

ACTIVITY = "shared.activity.v1.ActivityService/"
INSIGHTS = "shared.insights.v1.InsightsService/"
PROFILES = "shared.profiles.v1.ProfilesService/"
READ_ANSWERS = ("ok", "not_found")  # a valid read of an empty store may find nothing

KINDS_OR_EMPTY = st.sampled_from(["signup", "", "a b"])
PROPERTY_KEYS = st.sampled_from(["plan", "$lib", "", "a b", "a.b", "$"])
# Seconds around the granularities' longest ranges (6 h, 14 d, 365 d, ...) and beyond.
TIMES = st.sampled_from([0, 1, 3600, 6 * 3600, 6 * 3600 + 1, 86400 * 366, 86400 * 4000])


def build(name: str) -> message.Message:
    return annotated_messages()[name]()


@st.composite
def time_ranges(draw: st.DrawFn, target: message.Message, name: str = "time_range") -> None:
    """Maybe a time range: each end maybe set, `to` after, at or before `from`."""
    if not draw(st.booleans()):
        return
    time_range = getattr(target, name)
    time_range.SetInParent()
    start = draw(maybe(TIMES))
    if start is not None:
        getattr(time_range, "from").seconds = start
    end = draw(maybe(TIMES))
    if end is not None:
        time_range.to.seconds = end
        time_range.to.nanos = draw(st.sampled_from([0, 1]))


def cheap_filters(target: Any, count: int) -> None:
    """`count` valid filters (to cross a max_items cheaply)."""
    for _ in range(count):
        f = target.add()
        f.property, f.operator, f.value = "plan", 1, "x"


@st.composite
def property_filters(draw: st.DrawFn, target: Any, most: int) -> None:
    """0 to 2 generated filters, or one more than `most` valid ones."""
    if draw(st.integers(0, 9)) == 0:
        cheap_filters(target, most + 1)
        return
    for _ in range(draw(st.integers(0, 2))):
        draw(filters(target.add()))


@st.composite
def event_filters(draw: st.DrawFn, target: message.Message) -> None:
    target.SetInParent()
    setter(target, "kind", draw(maybe(KINDS_OR_EMPTY)))
    for _ in range(draw(st.integers(0, 1))):
        draw(filters(target.filters.add()))  # type: ignore[attr-defined]


@st.composite
def feeds(draw: st.DrawFn, name: str) -> message.Message:
    request = build(name)
    setter(request, "distinct_id", draw(maybe(IDS)))
    setter(request, "session_id", draw(maybe(st.sampled_from(["", "s1"]))))
    draw(time_ranges(request))
    draw(property_filters(request.property_filters, 20))  # type: ignore[attr-defined]
    setter(request, "page_size", draw(maybe(st.sampled_from([-1, 0, 1, 1000, 1001]))))
    events = request.events  # type: ignore[attr-defined]
    if draw(st.integers(0, 9)) == 0:
        for _ in range(51):
            events.add().kind = "k"
    for _ in range(draw(st.integers(0, 3))):
        draw(event_filters(events.add()))
    return request


@st.composite
def heatmaps(draw: st.DrawFn) -> message.Message:
    request = build("shared.activity.v1.GetActivityHeatmapRequest")
    setter(request, "distinct_id", draw(maybe(IDS)))
    draw(time_ranges(request))
    return request


@st.composite
def profile_stats(draw: st.DrawFn) -> message.Message:
    request = build("shared.activity.v1.GetProfileStatsRequest")
    setter(request, "distinct_id", draw(maybe(IDS)))
    return request


@st.composite
def filter_schemas(draw: st.DrawFn) -> message.Message:
    request = build("common.v1.GetFilterSchemaRequest")
    setter(request, "event_kind", draw(maybe(KINDS_OR_EMPTY)))
    types = draw(st.lists(st.integers(0, 8), max_size=3))
    request.allowed_types.extend(types)  # type: ignore[attr-defined]
    return request


@st.composite
def property_values_requests(draw: st.DrawFn, name: str) -> message.Message:
    request = build(name)
    setter(request, "property_key", draw(maybe(st.sampled_from(["plan", "a.b", "", "a..b"]))))
    setter(request, "source", draw(maybe(st.integers(0, 4))))
    setter(request, "event_kind", draw(maybe(KINDS_OR_EMPTY)))
    return request


@st.composite
def event_queries(draw: st.DrawFn, target: Any, most: int = 3) -> None:
    for _ in range(draw(st.integers(0, most))):
        query = target.add()
        if draw(st.booleans()):
            draw(event_filters(query.event))
        setter(query, "aggregation", draw(maybe(st.integers(0, 8))))
        setter(query, "aggregation_property", draw(maybe(st.sampled_from(["", "amount", "a b"]))))


@st.composite
def filter_groups(draw: st.DrawFn, target: message.Message) -> None:
    for _ in range(draw(st.integers(0, 1))):
        group = target.filter_groups.add()  # type: ignore[attr-defined]
        setter(group, "operator", draw(maybe(st.integers(0, 3))))
        for _ in range(draw(st.integers(0, 1))):
            draw(filters(group.filters.add()))
    setter(target, "filter_groups_operator", draw(maybe(st.integers(0, 3))))


@st.composite
def scopes(draw: st.DrawFn, target: message.Message) -> None:
    if draw(st.integers(0, 4)) == 0:
        draw(event_filters(target.scope))  # type: ignore[attr-defined]


def mostly(valid: Any, *others: Any) -> st.SearchStrategy[Any]:
    """`valid` three times in four, else one of `others` (so rules break one at a time)."""
    return st.sampled_from([valid, valid, valid, *others]) if others else st.just(valid)


@st.composite
def specs(draw: st.DrawFn, spec: message.Message) -> None:
    """An InsightQuerySpec touching each of its rules: mostly coherent for its insight type
    (the sub-query of its type, events where it takes them) with one thing changed now and
    then: another type's sub-query, limits at and past their bounds, unset or unknown enums."""
    spec.SetInParent()
    kind = draw(st.sampled_from([1, 1, 2, 3, 4, 5, 6, 0, 7, None]))
    setter(spec, "insight_type", kind)
    stray = draw(st.integers(0, 3)) == 0  # add what this type does not take
    events = spec.events  # type: ignore[attr-defined]
    if draw(st.integers(0, 19)) == 0:
        for _ in range(21):  # past funnel_max_steps
            events.add().aggregation = 1
    elif kind not in (5, 6) or stray:
        for _ in range(draw(st.sampled_from([1, 1, 2, 3, 0]))):
            query = events.add()
            query.event.kind = draw(mostly("signup", "", "a b"))
            setter(query, "aggregation", draw(mostly(1, 2, 3, 4, 8, None)))
            setter(query, "aggregation_property", draw(mostly("amount", "", "a b", None)))
    if draw(st.integers(0, 9)) == 0:
        draw(event_queries(events))
    if kind not in (2, 5, 6) or stray:
        keys = st.sampled_from(["plan", "$lib", "", "a b", None])
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 6]))):
            setter(spec.breakdowns.add(), "property", draw(keys))  # type: ignore[attr-defined]
    setter(spec, "breakdown_limit", draw(mostly(None, 0, -1, 1, 100, 101)))
    if draw(st.integers(0, 9)) == 0:
        draw(filter_groups(spec))
    if (kind == 3 or stray) and draw(st.booleans()):
        spec.conversion_window.seconds = draw(mostly(60, -1, 0, 1))  # type: ignore[attr-defined]
        spec.conversion_window.nanos = draw(mostly(0, 5))  # type: ignore[attr-defined]
    if kind == 3 or stray:
        setter(spec, "include_step_timing", draw(maybe(st.booleans())))
    takes_session = (kind in (1, 2) and not spec.events) or stray  # type: ignore[attr-defined]
    if takes_session and draw(st.booleans()):
        session = spec.session  # type: ignore[attr-defined]
        session.SetInParent()
        setter(session, "metric", draw(mostly(1, 4, 5, 6, 0, 7, None)))
        draw(scopes(session))
    if kind == 5 or stray:
        flow = spec.user_flow  # type: ignore[attr-defined]
        flow.SetInParent()
        setter(flow, "node_kind", draw(mostly(1, 2, 0, 3, None)))
        setter(flow, "node_property", draw(mostly("plan", "", "a b", "$lib", None)))
        setter(flow, "group_by", draw(maybe(st.integers(0, 2))))
        draw(scopes(flow))
        setter(flow, "max_hops", draw(maybe(mostly(3, -1, 0, 1, 10, 11))))
        setter(flow, "max_nodes", draw(maybe(mostly(10, -1, 0, 1, 2, 50, 51))))
        setter(flow, "max_links", draw(maybe(mostly(10, -1, 0, 1, 500, 501))))
    if kind == 6 or stray:
        top_k = spec.top_k  # type: ignore[attr-defined]
        top_k.SetInParent()
        setter(top_k, "dimension", draw(mostly(1, 2, 3, 0, 4, None)))
        setter(top_k, "property", draw(mostly("plan", "", "a b", "$lib", None)))
        draw(scopes(top_k))
        setter(top_k, "metric", draw(mostly(1, 2, 3, 4, 0, 8, None)))
        setter(top_k, "metric_property", draw(mostly("amount", "", "a b", None)))
        setter(top_k, "limit", draw(maybe(mostly(10, -1, 0, 100, 101))))
        setter(top_k, "omit_others", draw(maybe(st.booleans())))
    setter(spec, "include_cookieless", draw(maybe(st.booleans())))


# ---- valid queries: every rule of InsightQuerySpec kept, for each insight type ------------

TRENDS, SEGMENTATION, FUNNEL, RETENTION, USER_FLOW, TOP_K = range(1, 7)
NUMERIC = (4, 5, 6, 7)  # SUM, AVG, MIN, MAX: need an aggregation_property
VALID_KEYS = st.sampled_from(["plan", "$lib", "a.b", "x-y_1", "$os.version"])


@st.composite
def valid_filters(draw: st.DrawFn, target: message.Message) -> None:
    """A PropertyFilter keeping every rule: the value or values its operator takes."""
    setter(target, "property", draw(st.sampled_from(["plan", "$lib", "a.b"])))
    operator = draw(st.integers(1, 14))
    target.operator = operator  # type: ignore[attr-defined]
    if operator <= 4:  # EQUALS, NOT_EQUALS, CONTAINS, NOT_CONTAINS
        target.value = draw(st.sampled_from(["x", "1", "é"]))  # type: ignore[attr-defined]
    elif 7 <= operator <= 10:  # LTE, GTE, LT, GT
        target.value = draw(st.sampled_from(["1", "-2.5", "1e5", "Inf"]))  # type: ignore[attr-defined]
    elif operator in (11, 12):  # IN, NOT_IN
        values = draw(st.lists(st.sampled_from(["a", "b", "1"]), min_size=1, max_size=3))
        target.values.extend(values)  # type: ignore[attr-defined]
    elif operator in (13, 14):  # BETWEEN, NOT_BETWEEN: two ordered numbers
        low, high = sorted(
            draw(st.lists(st.sampled_from([-1, 0, 2.5, 10]), min_size=2, max_size=2))
        )
        target.values.extend([str(low), str(high)])  # type: ignore[attr-defined]
    setter(target, "source", draw(maybe(st.integers(0, 3))))


@st.composite
def valid_event_filters(draw: st.DrawFn, target: message.Message) -> None:
    target.SetInParent()
    setter(target, "kind", draw(maybe(st.sampled_from(["signup", "page_view", ""]))))
    for _ in range(draw(st.integers(0, 1))):
        draw(valid_filters(target.filters.add()))  # type: ignore[attr-defined]


@st.composite
def valid_event_queries(draw: st.DrawFn, target: Any, kind: int) -> None:
    """1 to 3 events (a funnel up to 20 steps, a retention 2); numeric aggregations only
    for trends and segmentation, each with its property."""
    most = {FUNNEL: 20, RETENTION: 2}.get(kind, 3)
    count = draw(st.integers(1, most) if most <= 3 else st.sampled_from([1, 2, 3, most]))
    numeric = kind in (TRENDS, SEGMENTATION)
    for _ in range(count):
        query = target.add()
        if draw(st.booleans()):
            draw(valid_event_filters(query.event))
        aggregation = draw(maybe(st.integers(0, 7 if numeric else 3)))
        setter(query, "aggregation", aggregation)
        if aggregation in NUMERIC or draw(st.booleans()):
            query.aggregation_property = draw(VALID_KEYS)


@st.composite
def valid_scopes(draw: st.DrawFn, target: message.Message) -> None:
    if draw(st.booleans()):
        draw(valid_event_filters(target.scope))  # type: ignore[attr-defined]


@st.composite
def valid_specs(draw: st.DrawFn, spec: Any, kind: int) -> None:
    """An InsightQuerySpec of insight type `kind` that breaks no rule: what the type takes
    (events, breakdowns, a session, a conversion window, a user flow, a top k) within
    its limits, nothing it does not."""
    spec.SetInParent()
    spec.insight_type = kind
    session = kind in (TRENDS, SEGMENTATION) and draw(st.integers(0, 3)) == 0
    if kind in (TRENDS, SEGMENTATION, FUNNEL, RETENTION) and not session:
        draw(valid_event_queries(spec.events, kind))
    if session:
        page_metric = kind == TRENDS and draw(st.booleans())  # ENTRY, EXIT: one breakdown
        spec.session.metric = draw(st.sampled_from([4, 5] if page_metric else [1, 2, 3, 6]))
        draw(valid_scopes(spec.session))
        if page_metric:
            spec.breakdowns.add().property = draw(VALID_KEYS)
    elif kind in (TRENDS, FUNNEL, RETENTION):
        for key in draw(st.lists(VALID_KEYS, max_size=5, unique=True)):
            spec.breakdowns.add().property = key
    if spec.breakdowns:
        setter(spec, "breakdown_limit", draw(maybe(st.integers(0, 100))))
    if kind == FUNNEL:
        if draw(st.booleans()):
            spec.conversion_window.seconds = draw(st.sampled_from([1, 60, 86400 * 30]))
        setter(spec, "include_step_timing", draw(maybe(st.booleans())))
    if kind == USER_FLOW:
        flow = spec.user_flow
        flow.SetInParent()
        flow.node_kind = draw(st.integers(1, 2))
        if flow.node_kind == 2 or draw(st.booleans()):  # PROPERTY needs a property
            flow.node_property = draw(VALID_KEYS)
        setter(flow, "group_by", draw(maybe(st.integers(0, 2))))
        draw(valid_scopes(flow))
        setter(flow, "max_hops", draw(maybe(st.sampled_from([0, 1, 5, 10]))))
        setter(flow, "max_nodes", draw(maybe(st.sampled_from([0, 2, 20, 50]))))
        setter(flow, "max_links", draw(maybe(st.sampled_from([0, 1, 100, 500]))))
    if kind == TOP_K:
        top_k = spec.top_k
        dimension = draw(st.integers(1, 3))  # PROPERTY, EVENT_KIND, USER
        top_k.dimension = dimension
        if dimension == 1:
            top_k.property = draw(VALID_KEYS)
        draw(valid_scopes(top_k))
        # USER counts users already: not by UNIQUE_USERS or PER_USER_AVG.
        metric = draw(maybe(st.sampled_from([0, 1, 4, 5, 6, 7] if dimension == 3 else range(8))))
        setter(top_k, "metric", metric)
        if metric in NUMERIC:
            top_k.metric_property = draw(VALID_KEYS)
        setter(top_k, "limit", draw(maybe(st.sampled_from([0, 1, 100]))))
        setter(top_k, "omit_others", draw(maybe(st.booleans())))
    if draw(st.booleans()):
        group = spec.filter_groups.add()
        setter(group, "operator", draw(maybe(st.integers(0, 2))))
        for _ in range(draw(st.integers(1, 2))):
            draw(valid_filters(group.filters.add()))
    setter(spec, "include_cookieless", draw(maybe(st.booleans())))


# A granularity and the longest time range it takes (seconds): 6 h for minutes, ...
GRANULARITY_RANGES = [(1, 6 * 3600), (2, 14 * 86400), (3, 365 * 86400), (4, 4 * 365 * 86400)]


@st.composite
def valid_queries(draw: st.DrawFn, kind: int) -> message.Message:
    request = build("shared.insights.v1.QueryRequest")
    draw(valid_specs(request.spec, kind))
    granularity, longest = draw(st.sampled_from(GRANULARITY_RANGES))
    request.granularity = granularity  # type: ignore[attr-defined]
    time_range = request.time_range  # type: ignore[attr-defined]
    getattr(time_range, "from").seconds = start = draw(st.sampled_from([0, 1_700_000_000]))
    time_range.to.seconds = start + draw(st.sampled_from([1, 3600, longest]))
    setter(request, "timezone", draw(st.sampled_from(["UTC", "", "Europe/Paris", None])))
    return request


@functools.cache
def seeded_fake() -> FakePug:
    """A fake holding events for every valid query to compute over: three users (one of
    them also cookieless), two kinds, the properties of VALID_KEYS, sessions of one to three
    events, near both starts of `valid_queries`' time ranges. Queries leave it unchanged."""
    fake = FakePug()
    events = []
    for start in (0, 1_700_000_000):
        for n, offset in enumerate([0, 30, 61, 3600, 86400, 86400 * 3]):
            for user in ("u1", "u2", "u3")[: n % 3 + 1]:
                event = build("sdk.events.v1.Event")
                event.event_id = str(uuid.uuid4())  # type: ignore[attr-defined]
                event.kind = ("signup", "page_view")[(n + len(user)) % 2]  # type: ignore[attr-defined]
                event.occur_time.seconds = start + offset  # type: ignore[attr-defined]
                if user == "u3" and n == 5:
                    event.cookieless = True  # type: ignore[attr-defined]
                else:
                    event.distinct_id = user  # type: ignore[attr-defined]
                    event.session_id = str(uuid.UUID(int=n // 2 + 1))  # type: ignore[attr-defined]
                event.auto_properties["$lib"].string_value = "x"  # type: ignore[attr-defined]
                event.auto_properties["$os.version"].int_value = n  # type: ignore[attr-defined]
                for key, value in (("plan", ("x", "é", "1")[n % 3]), ("a.b", "2.5"), ("x-y_1", "")):
                    event.custom_properties[key].string_value = value  # type: ignore[attr-defined]
                events.append(event)
    batch = build("sdk.events.v1.BatchCreateRequest")
    batch.events.extend(events)  # type: ignore[attr-defined]
    fake.handle(BATCH_CREATE, batch.SerializeToString())
    return fake


@settings(COMMON, max_examples=80)
@pytest.mark.parametrize(
    "kind", [TRENDS, SEGMENTATION, FUNNEL, RETENTION, USER_FLOW, TOP_K],
    ids=["trends", "segmentation", "funnel", "retention", "user_flow", "top_k"],
)  # fmt: skip
@given(data=st.data())
def test_valid_queries_of_every_type_are_answered(kind: int, data: st.DataObject) -> None:
    request = data.draw(valid_queries(kind))
    assert violations(request) == []
    check(INSIGHTS + "Query", request, ("ok",), seeded_fake())


@st.composite
def queries(draw: st.DrawFn) -> message.Message:
    if not draw(st.integers(0, 4)):  # one in five valid, so valid ones are compared too
        return draw(valid_queries(draw(st.integers(TRENDS, TOP_K))))
    request = build("shared.insights.v1.QueryRequest")
    if draw(st.integers(0, 19)):
        draw(specs(request.spec))  # type: ignore[attr-defined]
    if draw(st.integers(0, 4)):
        time_range = request.time_range  # type: ignore[attr-defined]
        getattr(time_range, "from").seconds = 0
        time_range.to.seconds = draw(TIMES.filter(bool))
    else:
        draw(time_ranges(request))
    setter(request, "granularity", draw(mostly(draw(st.integers(1, 5)), 0, 6, None)))
    timezones = mostly("UTC", "", "Europe/Paris", "a b", "x" * 65, None)
    setter(request, "timezone", draw(timezones))
    return request


@st.composite
def segment_users(draw: st.DrawFn) -> message.Message:
    request = build("shared.insights.v1.SegmentUsersRequest")
    draw(time_ranges(request))
    draw(event_queries(request.events, most=2))  # type: ignore[attr-defined]
    setter(request, "page_size", draw(maybe(st.sampled_from([-1, 0, 1, 1000, 1001]))))
    draw(filter_groups(request))
    return request


@st.composite
def by_id(draw: st.DrawFn, name: str, field: str) -> message.Message:
    request = build(name)
    setter(request, field, draw(maybe(st.sampled_from(["", "u1", "cookieless-1"]))))
    return request


@COMMON
@given(st.sampled_from(["GetActivityFeed", "GetEventExplorer"]).flatmap(
    lambda rpc: st.tuples(st.just(rpc), feeds(f"shared.activity.v1.{rpc}Request"))
))  # fmt: skip
def test_feeds_answer_as_protovalidate(call: tuple[str, message.Message]) -> None:
    rpc, request = call
    check(ACTIVITY + rpc, request)


@COMMON
@given(heatmaps())
def test_heatmap_answers_as_protovalidate(request_: message.Message) -> None:
    check(ACTIVITY + "GetActivityHeatmap", request_)


@settings(COMMON, max_examples=50)
@given(profile_stats())
def test_profile_stats_answer_as_protovalidate(request_: message.Message) -> None:
    check(ACTIVITY + "GetProfileStats", request_, READ_ANSWERS)


@settings(COMMON, max_examples=100)
@given(st.sampled_from([ACTIVITY, INSIGHTS]), filter_schemas())
def test_filter_schemas_answer_as_protovalidate(service: str, request_: message.Message) -> None:
    check(service + "GetFilterSchema", request_)


@settings(COMMON, max_examples=100)
@given(st.sampled_from(["shared.activity.v1", "shared.insights.v1"]).flatmap(
    lambda package: st.tuples(
        st.just(package), property_values_requests(f"{package}.GetPropertyValuesRequest")
    )
))  # fmt: skip
def test_property_values_answer_as_protovalidate(call: tuple[str, message.Message]) -> None:
    package, request = call
    service = ACTIVITY if package == "shared.activity.v1" else INSIGHTS
    check(service + "GetPropertyValues", request)


@settings(COMMON, max_examples=600)
@given(queries())
def test_queries_answer_as_protovalidate(request_: message.Message) -> None:
    check(INSIGHTS + "Query", request_)


@COMMON
@given(segment_users())
def test_segment_users_answers_as_protovalidate(request_: message.Message) -> None:
    check(INSIGHTS + "SegmentUsers", request_)


BY_ID = [
    ("Get", "shared.profiles.v1.GetRequest", "id"),
    ("GetByExternalId", "shared.profiles.v1.GetByExternalIdRequest", "external_id"),
    ("Delete", "shared.profiles.v1.DeleteRequest", "id"),
    ("DeleteDataSubject", "shared.profiles.v1.DeleteDataSubjectRequest", "external_id"),
    ("GetDeletionRequest", "shared.profiles.v1.GetDeletionRequestRequest", "request_id"),
]


@settings(COMMON, max_examples=30)
@pytest.mark.parametrize(("rpc", "name", "field"), BY_ID, ids=[rpc for rpc, _, _ in BY_ID])
@given(data=st.data())
def test_profile_reads_answer_as_protovalidate(
    rpc: str, name: str, field: str, data: st.DataObject
) -> None:
    # DeleteDataSubject refuses "" in its handler (no violations): see Store.
    answers = (*READ_ANSWERS, "invalid_argument") if rpc == "DeleteDataSubject" else READ_ANSWERS
    check(PROFILES + rpc, data.draw(by_id(name, field)), answers)


def test_an_empty_time_range_breaks_from_before_to_beside_required() -> None:
    request = build("shared.activity.v1.GetActivityHeatmapRequest")
    request.distinct_id = ""  # type: ignore[attr-defined]
    request.time_range.SetInParent()  # type: ignore[attr-defined]
    check(ACTIVITY + "GetActivityHeatmap", request)


def test_a_granularity_range_rule_reads_an_unset_from_as_the_epoch() -> None:
    request = build("shared.insights.v1.QueryRequest")
    request.spec.insight_type = 1  # type: ignore[attr-defined]
    request.time_range.to.seconds = 86400  # type: ignore[attr-defined]
    request.granularity = 1  # type: ignore[attr-defined]
    check(INSIGHTS + "Query", request)


@pytest.mark.parametrize("kind", [3, 4, 5, 6, 2, 1])
def test_a_spec_of_every_type_is_validated_by_its_cel_rules(kind: int) -> None:
    request = build("shared.insights.v1.QueryRequest")
    spec = request.spec  # type: ignore[attr-defined]
    spec.insight_type = kind
    spec.breakdown_limit = 3
    spec.session.metric = 4
    spec.top_k.dimension = 1
    spec.user_flow.max_hops = 11
    spec.conversion_window.nanos = 5
    request.time_range.to.seconds = 60  # type: ignore[attr-defined]
    request.granularity = 1  # type: ignore[attr-defined]
    check(INSIGHTS + "Query", request)


def test_delete_data_subject_with_an_empty_external_id_breaks_no_rule() -> None:
    request = build("shared.profiles.v1.DeleteDataSubjectRequest")
    request.external_id = ""  # type: ignore[attr-defined]
    assert violations(request) == []
    code, found = fake_answer(PROFILES + "DeleteDataSubject", request.SerializeToString())
    assert (code, found) == ("invalid_argument", [])


@pytest.mark.parametrize("timezone", ["Mars/Base", "America", "Europe/", "/", "utc", "Local"])
def test_an_unknown_timezone_breaks_no_rule_and_is_refused(timezone: str) -> None:
    """The contract bounds `timezone` (pattern, 64 characters), it does not list zones:
    protovalidate finds nothing wrong, and the server's handler refuses the name
    (invalid_argument without violations)."""
    request = build("shared.insights.v1.QueryRequest")
    request.spec.insight_type = TRENDS  # type: ignore[attr-defined]
    getattr(request.time_range, "from").SetInParent()  # type: ignore[attr-defined]
    request.time_range.to.seconds = 3600  # type: ignore[attr-defined]
    request.granularity = 2  # type: ignore[attr-defined]
    request.timezone = timezone  # type: ignore[attr-defined]
    assert violations(request) == []
    with pytest.raises(PugError) as raised:
        FakePug().handle(INSIGHTS + "Query", request.SerializeToString())
    assert (raised.value.code, raised.value.details) == ("invalid_argument", [])
    assert raised.value.message == f'invalid timezone "{timezone}"'
