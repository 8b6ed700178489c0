"""FakePug: validates like a Pug server (rule by rule), keeps profiles and events, answers
the read API, and gives users' tests typed views and readable assertions."""

from __future__ import annotations

import asyncio
import datetime
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pug.rules as rules
import pytest
from fake_clients import client_over, new_fake
from pug import AsyncPug, InvalidArgumentError, NotFoundError, Pug, PugError
from pug.events import Purchase, Signup, VideoPlay
from pug.proto.common.v1 import (
    EventFilter,
    FilterOperator,
    LogicalOperator,
    PropertyFilter,
    PropertySource,
    PropertyValue,
    PropertyValueType,
    TimeRange,
)
from pug.proto.sdk.events.v1 import BatchCreateRequest, BatchCreateResponse, Event
from pug.proto.sdk.profiles.v1 import IdentifyRequest
from pug.proto.shared.insights.v1 import (
    AggregationType,
    EventQuery,
    Granularity,
    InsightQuerySpec,
    InsightType,
)
from pug.proto.shared.insights.v1 import FilterGroup as InsightsFilterGroup
from pug.proto.shared.profiles.v1 import (
    ComplianceRequestStatus,
    FilterGroup,
    ListRequest,
    ListResponse,
)
from pug.testing import FakePug, ReceivedEvent
from pug.testing.fake import server
from pug.transports.base import BATCH_CREATE, IDENTIFY

UTC = datetime.UTC
T0 = datetime.datetime(2024, 5, 6, 12, 0, tzinfo=UTC)  # a Monday
LIST = "shared.profiles.v1.ProfilesService/List"


fake = pytest.fixture(new_fake, name="fake")
client = pytest.fixture(client_over, name="client")


def at(minutes: float = 0, days: int = 0) -> datetime.datetime:
    return T0 + datetime.timedelta(days=days, minutes=minutes)


def raw_event(**fields: Any) -> Event:
    """A valid Event as the SDK would send it; `fields` override (None unsets)."""
    values: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "kind": "signup",
        "distinct_id": "u1",
        "session_id": str(uuid.uuid4()),
        "occur_time": T0,
        "auto_properties": {"$lib": PropertyValue(string_value="pug-python")},
        "custom_properties": {"plan": PropertyValue(string_value="pro")},
    }
    values.update(fields)
    return Event(**{k: v for k, v in values.items() if v is not None})


def send(fake: FakePug, *events: Event) -> BatchCreateResponse:
    body = fake.handle(BATCH_CREATE, bytes(BatchCreateRequest(events=list(events))))
    return BatchCreateResponse.parse(body)


# ---- BatchCreate: every rule of the contract, one case each -------------------------------

BAD_KIND = "does not match regex pattern `^[a-zA-Z0-9_.-]+$`"
INVALID_BATCHES: dict[str, tuple[Callable[[], list[Event]], str]] = {
    "event_id required": (
        lambda: [raw_event(event_id=None)],
        "events[0].event_id: value is required",
    ),
    "event_id uuid": (
        lambda: [raw_event(), raw_event(event_id="evt-1")],
        "events[1].event_id: must be a valid UUID",
    ),
    "event_id uuid (empty)": (
        lambda: [raw_event(event_id="")],
        "events[0].event_id: value is empty, which is not a valid UUID",
    ),
    "kind required": (
        lambda: [raw_event(kind=None)],
        "events[0].kind: value is required",
    ),
    "kind pattern": (
        lambda: [raw_event(), raw_event(), raw_event(kind="sign up")],
        f"events[2].kind: {BAD_KIND}",
    ),
    "kind pattern (RE2 anchors: no trailing newline)": (
        lambda: [raw_event(kind="signup\n")],
        f"events[0].kind: {BAD_KIND}",
    ),
    "occur_time required": (
        lambda: [raw_event(occur_time=None)],
        "events[0].occur_time: value is required",
    ),
    "session_id uuid": (
        lambda: [raw_event(session_id="s1")],
        "events[0].session_id: must be a valid UUID",
    ),
    "distinct_id required unless cookieless": (
        lambda: [raw_event(distinct_id=None)],
        "events[0]: distinct_id and session_id are required unless cookieless is true",
    ),
    "session_id required unless cookieless": (
        lambda: [raw_event(session_id=None)],
        "events[0]: distinct_id and session_id are required unless cookieless is true",
    ),
    "cookieless events send no identity": (
        lambda: [raw_event(cookieless=True, session_id=None)],
        # A rule of BatchCreateRequest: protovalidate reports it at the request, once.
        "cookieless events must not send distinct_id or session_id",
    ),
    "distinct_id reserved prefix": (
        lambda: [raw_event(distinct_id="cookieless-abc")],
        "distinct_id must not start with the reserved 'cookieless-' prefix",
    ),
    "auto_properties keys start with $": (
        lambda: [raw_event(auto_properties={"lib": PropertyValue(string_value="x")})],
        "events[0]: auto_properties keys must start with '$'",
    ),
    "custom_properties keys do not start with $": (
        lambda: [raw_event(custom_properties={"$plan": PropertyValue(string_value="x")})],
        "events[0]: custom_properties keys must not start with '$' (reserved for auto-properties)",
    ),
    "PropertyValue oneof required": (
        lambda: [raw_event(custom_properties={"plan": PropertyValue()})],
        'events[0].custom_properties["plan"].value: exactly one field is required in oneof',
    ),
    "string_value max_len": (
        lambda: [raw_event(custom_properties={"note": PropertyValue(string_value="x" * 1025)})],
        'events[0].custom_properties["note"].string_value: must be at most 1024 characters',
    ),
    "double_value finite": (
        lambda: [raw_event(auto_properties={"$load": PropertyValue(double_value=float("nan"))})],
        'events[0].auto_properties["$load"].double_value: must be finite',
    ),
    "events max_items": (
        lambda: [raw_event() for _ in range(1001)],
        "events: must contain no more than 1000 item(s)",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_BATCHES), ids=list(INVALID_BATCHES))
def test_a_batch_breaking_a_rule_is_rejected_whole(fake: FakePug, case: str) -> None:
    make, message = INVALID_BATCHES[case]
    events = [raw_event(kind="page_view"), *make()]  # a valid event rides along
    with pytest.raises(InvalidArgumentError) as raised:
        send(fake, *events)
    assert raised.value.code == "invalid_argument"
    assert raised.value.message == _shift_index(message)
    assert fake.events() == []
    assert fake.profiles == {}


def _shift_index(message: str) -> str:
    """The message with its event index one higher (a valid event was sent first)."""
    if not message.startswith("events["):
        return message
    index, rest = message[len("events[") :].split("]", 1)
    return f"events[{int(index) + 1}]{rest}"


DOLLAR_CUSTOM = "custom_properties keys must not start with '$' (reserved for auto-properties)"


def test_every_violation_is_reported_with_its_rule_id(fake: FakePug) -> None:
    bad = raw_event(kind="a b", custom_properties={"$x": PropertyValue(bool_value=True)})
    with pytest.raises(InvalidArgumentError) as raised:
        send(fake, raw_event(), bad)
    assert raised.value.message == (
        f"events[1].kind: {BAD_KIND}; "
        "events[1]: custom_properties keys must not start with '$' (reserved for auto-properties)"
    )
    assert raised.value.details == [
        {"field": "events[1].kind", "rule_id": "string.pattern", "message": BAD_KIND},
        {
            "field": "events[1]",
            "rule_id": "event.custom_properties_no_dollar_prefix",
            "message": DOLLAR_CUSTOM,
        },
    ]


def test_the_cel_table_holds_exactly_the_contracts_cel_rules() -> None:
    # Every message of pug.rules is one the fake validates, so every CEL rule is in it.
    assert set(server._CEL) == server.contract_cel_ids() == set(rules.CEL)


def test_contract_cel_ids_reads_message_field_and_item_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cel = [rules.Cel(f"x.{where}", "m", "true") for where in ("message", "field", "item")]
    item = rules.Field(cel=(cel[2],))
    message = rules.Message({"f": rules.Field(cel=(cel[1],), items=item)}, cel=(cel[0],))
    monkeypatch.setattr(rules, "MESSAGES", {"x.X": message})
    assert server.contract_cel_ids() == {"x.message", "x.field", "x.item"}


def test_cel_rules_are_reported_in_the_contracts_order(fake: FakePug) -> None:
    # An IS_SET filter with a value and values breaks two PropertyFilter rules: the fake
    # reports them in pug.rules' order, whatever the table's.
    broken = PropertyFilter(property="plan", operator=FilterOperator.IS_SET, value="x")
    broken.values = ["1"]
    with pytest.raises(InvalidArgumentError) as raised:
        fake.handle_stream(LIST, bytes(ListRequest(filter_groups=[FilterGroup(filters=[broken])])))
    order = [c.id for c in rules.MESSAGES["common.v1.PropertyFilter"].cel]
    details: Any = raised.value.details
    found = [d["rule_id"] for d in details]
    assert found == sorted(found, key=order.index)
    assert found == [
        "property_filter.values_not_allowed",
        "property_filter.value_not_allowed_for_set_operators",
    ]


def test_a_valid_batch_is_accepted_and_stored(fake: FakePug) -> None:
    events = [
        raw_event(kind="page_view"),
        # 1024 characters is the limit, counted in code points, not UTF-8 bytes.
        raw_event(custom_properties={"note": PropertyValue(string_value="é" * 1024)}),
        raw_event(cookieless=True, distinct_id=None, session_id=None),
    ]
    response = send(fake, *events)
    assert (response.accepted, response.dropped) == (3, 0)
    assert [e.kind for e in fake.events()] == ["page_view", "signup", "signup"]
    assert fake.events()[2].cookieless
    assert list(fake.profiles) == ["u1"]  # cookieless events belong to no profile


def test_a_profile_is_created_when_its_first_event_arrives_not_when_it_is_read() -> None:
    """Batches are stored when the fake is next read; a profile is made then, with the
    time its first event arrived."""
    times = iter(datetime.datetime(2026, 1, 1, hour, tzinfo=datetime.UTC) for hour in range(9))
    fake = FakePug(clock=lambda: next(times))
    send(fake, raw_event(distinct_id="u1"), raw_event(distinct_id="u2"))  # one batch: 00:00
    send(fake, raw_event(distinct_id="u3"))  # 01:00
    send(fake, raw_event(distinct_id="u1"))  # 02:00, a profile already
    created = {
        p.external_id: p.create_time.hour
        for p in (fake.profile(external_id) for external_id in ["u1", "u2", "u3"])
    }
    assert created == {"u1": 0, "u2": 0, "u3": 1}
    assert list(fake.profiles) == ["u1", "u2", "u3"]  # in the order they arrived
    assert len({fake.profile(i).id for i in ["u1", "u2", "u3"]}) == 3
    assert all(uuid.UUID(fake.profile(i).id).version == 4 for i in ["u1", "u2", "u3"])


def test_a_resent_event_is_accepted_and_stored_once(fake: FakePug) -> None:
    event = raw_event()
    assert send(fake, event).accepted == 1
    assert send(fake, event).accepted == 1
    assert len(fake.events()) == 1


def test_unknown_methods_and_unreadable_bodies(fake: FakePug) -> None:
    with pytest.raises(PugError) as raised:
        fake.handle("sdk.events.v1.EventsService/Nope", b"")
    assert raised.value.code == "unimplemented"
    with pytest.raises(PugError) as raised:
        fake.handle(LIST, b"")
    assert raised.value.code == "unimplemented"
    with pytest.raises(InvalidArgumentError) as raised:
        fake.handle(BATCH_CREATE, b"\x0a\x03\x0a\x01\xff")  # an event_id that is not UTF-8
    assert raised.value.message.startswith("unreadable BatchCreateRequest: ")


def test_handle_is_safe_from_many_threads(fake: FakePug) -> None:
    def worker(n: int) -> None:
        for _ in range(20):
            send(fake, *(raw_event(distinct_id=f"u{n}") for _ in range(5)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake.events()) == 8 * 20 * 5
    assert len(fake.profiles) == 8


# ---- Identify -----------------------------------------------------------------------------

INVALID_IDENTIFIES = {
    "external_id required": (IdentifyRequest(), "external_id: value is required"),
    "external_id reserved prefix": (
        IdentifyRequest(external_id="cookieless-1"),
        "external_id: external_id must not start with the reserved 'cookieless-' prefix",
    ),
    "anonymous_id pattern": (
        IdentifyRequest(external_id="u1", anonymous_id="guest-1"),
        "anonymous_id: does not match regex pattern `^$|^anon-`",
    ),
    "anonymous_id max_len": (
        IdentifyRequest(external_id="u1", anonymous_id="anon-" + "x" * 251),
        "anonymous_id: must be at most 255 characters",
    ),
    "device_id max_len": (
        IdentifyRequest(external_id="u1", device_id="d" * 37),
        "device_id: must be at most 36 characters",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_IDENTIFIES), ids=list(INVALID_IDENTIFIES))
def test_an_identify_breaking_a_rule_is_rejected(fake: FakePug, case: str) -> None:
    request, message = INVALID_IDENTIFIES[case]
    with pytest.raises(InvalidArgumentError) as raised:
        fake.handle(IDENTIFY, bytes(request))
    assert raised.value.message == message
    assert fake.profiles == {}


def test_identify_upserts_and_merges_traits_shallowly(fake: FakePug, client: Pug) -> None:
    client.identify("u1", {"plan": "free", "address": {"city": "Paris", "zip": "75001"}})
    first = fake.profile("u1")
    client.identify("u1", {"plan": "pro", "address": {"city": "Lyon"}, "age": 36})
    assert fake.profiles == {"u1": {"plan": "pro", "address": {"city": "Lyon"}, "age": 36.0}}
    assert fake.profile("u1").id == first.id
    assert fake.profile("u1").update_time >= first.update_time


def test_identify_merges_the_anonymous_profile(fake: FakePug, client: Pug) -> None:
    client.track("anon-1", "page_view", {"path": "/pricing"}, timestamp=at(0))
    client.identify("anon-1", {"referrer": "ads", "plan": "trial"})
    client.track("anon-1", "signup", timestamp=at(1))
    client.identify("user_1", {"plan": "pro"}, anonymous_id="anon-1")
    client.track("anon-1", "page_view", {"path": "/docs"}, timestamp=at(2))  # an alias now
    client.flush()

    assert fake.profiles == {"user_1": {"referrer": "ads", "plan": "pro"}}
    feed = client.activity.feed(distinct_id="user_1")
    assert [(e.kind, e.distinct_id) for e in feed.events] == [
        ("page_view", "user_1"),
        ("signup", "user_1"),
        ("page_view", "user_1"),
    ]
    assert client.profiles.get_by_external_id("user_1").activity.total_events == 3
    with pytest.raises(NotFoundError):
        client.profiles.get_by_external_id("anon-1")
    # What was sent is unchanged: the assertions see the distinct id the code used.
    assert [e.distinct_id for e in fake.events()] == ["anon-1", "anon-1", "anon-1"]
    assert fake.merged_ids("user_1") == ["anon-1"]
    assert fake.merged_ids("anon-1") == []


# ---- ProfilesService ----------------------------------------------------------------------


def test_get_and_get_by_external_id(fake: FakePug, client: Pug) -> None:
    client.track("u1", "signup", timestamp=at(0))
    client.track("u1", "page_view", timestamp=at(5))
    client.identify("u1", {"plan": "pro"})
    client.flush()
    by_external = client.profiles.get_by_external_id("u1")
    by_id = client.profiles.get(by_external.id or "")
    assert by_id.external_id == "u1"
    assert by_id.properties is not None and by_id.properties.to_dict() == {"plan": "pro"}
    assert by_id.activity is not None
    assert (by_id.activity.first_seen, by_id.activity.last_seen) == (at(0), at(5))
    assert (by_id.activity.total_events, by_id.activity.pageviews) == (2, 1)
    assert by_id.activity.sessions == 1


def test_unknown_profiles_are_not_found(client: Pug) -> None:
    with pytest.raises(NotFoundError) as raised:
        client.profiles.get("nope")
    assert (raised.value.code, raised.value.message) == ("not_found", "profile nope not found")
    with pytest.raises(NotFoundError):
        client.profiles.get_by_external_id("nobody")


def _filter(prop: str, op: FilterOperator, value: str = "", *values: str) -> PropertyFilter:
    return PropertyFilter(property=prop, operator=op, value=value or None, values=list(values))


PEOPLE = {
    "ann": {"plan": "pro", "age": 36, "email": "Ann@Example.com"},
    "bob": {"plan": "free", "age": 17},
    "cyd": {"plan": "pro", "age": 52, "address": {"country": "FR"}},
}
F = FilterOperator
PROFILE_FILTERS: list[tuple[list[FilterGroup], LogicalOperator | None, list[str]]] = [
    ([FilterGroup(filters=[_filter("plan", F.EQUALS, "pro")])], None, ["ann", "cyd"]),
    ([FilterGroup(filters=[_filter("plan", F.NOT_EQUALS, "pro")])], None, ["bob"]),
    ([FilterGroup(filters=[_filter("email", F.CONTAINS, "example")])], None, ["ann"]),
    ([FilterGroup(filters=[_filter("email", F.NOT_CONTAINS, "example")])], None, ["bob", "cyd"]),
    ([FilterGroup(filters=[_filter("address.country", F.IS_SET)])], None, ["cyd"]),
    ([FilterGroup(filters=[_filter("email", F.IS_NOT_SET)])], None, ["bob", "cyd"]),
    ([FilterGroup(filters=[_filter("age", F.LT, "18")])], None, ["bob"]),
    ([FilterGroup(filters=[_filter("age", F.LTE, "36")])], None, ["ann", "bob"]),
    ([FilterGroup(filters=[_filter("age", F.GT, "36")])], None, ["cyd"]),
    ([FilterGroup(filters=[_filter("age", F.GTE, "36")])], None, ["ann", "cyd"]),
    ([FilterGroup(filters=[_filter("age", F.IN, "", "17", "52")])], None, ["bob", "cyd"]),
    ([FilterGroup(filters=[_filter("plan", F.NOT_IN, "", "free")])], None, ["ann", "cyd"]),
    ([FilterGroup(filters=[_filter("age", F.BETWEEN, "", "17", "36")])], None, ["ann", "bob"]),
    ([FilterGroup(filters=[_filter("age", F.NOT_BETWEEN, "", "17", "36")])], None, ["cyd"]),
    (  # AND inside a group (the default)
        [FilterGroup(filters=[_filter("plan", F.EQUALS, "pro"), _filter("age", F.GT, "40")])],
        None,
        ["cyd"],
    ),
    (  # OR inside a group
        [
            FilterGroup(
                filters=[_filter("age", F.LT, "18"), _filter("address.country", F.EQUALS, "FR")],
                operator=LogicalOperator.OR,
            )
        ],
        None,
        ["bob", "cyd"],
    ),
    (  # groups combined with AND, then with OR
        [
            FilterGroup(filters=[_filter("plan", F.EQUALS, "pro")]),
            FilterGroup(filters=[_filter("age", F.LT, "40")]),
        ],
        LogicalOperator.AND,
        ["ann"],
    ),
    (
        [
            FilterGroup(filters=[_filter("plan", F.EQUALS, "free")]),
            FilterGroup(filters=[_filter("age", F.GT, "40")]),
        ],
        LogicalOperator.OR,
        ["bob", "cyd"],
    ),
]


@pytest.mark.parametrize(("groups", "operator", "expected"), PROFILE_FILTERS)
def test_list_profiles_with_filter_groups(
    client: Pug,
    groups: list[FilterGroup],
    operator: LogicalOperator | None,
    expected: list[str],
) -> None:
    for name, traits in PEOPLE.items():
        client.identify(name, traits)
    client.flush()
    found = client.profiles.list(filter_groups=groups, filter_groups_operator=operator)
    assert [p.external_id for p in found] == expected


def test_list_streams_pages_of_100(fake: FakePug, client: Pug) -> None:
    send(fake, *(raw_event(distinct_id=f"u{n:03}") for n in range(250)))
    pages = [ListResponse.parse(m) for m in fake.handle_stream(LIST, bytes(ListRequest()))]
    assert [len(p.profiles) for p in pages] == [100, 100, 50]
    assert [bool(p.next_page_token) for p in pages] == [True, True, False]
    later = fake.handle_stream(LIST, bytes(ListRequest(page_token=pages[1].next_page_token)))
    assert [len(ListResponse.parse(m).profiles) for m in later] == [50]
    assert len(list(client.profiles.list())) == 250


BAD_FILTERS = {
    "numeric_value_required": (
        _filter("age", F.GT, "old"),
        "value/values must contain valid numbers for lte/gte/lt/gt/between/not_between operators",
    ),
    "value_required": (_filter("plan", F.EQUALS), "value is required for this operator"),
    "values_required": (
        _filter("plan", F.IN),
        "values must not be empty for in/not_in/between/not_between operators",
    ),
    "values_not_allowed": (
        _filter("plan", F.EQUALS, "pro", "free"),
        "values must be empty for this operator",
    ),
    "between_requires_two_values": (
        _filter("age", F.BETWEEN, "", "1", "2", "3"),
        "between/not_between operators require exactly 2 values",
    ),
    "value_not_allowed_for_set_operators": (
        _filter("plan", F.IS_SET, "pro"),
        "value must be empty for is_set/is_not_set operators",
    ),
    "between_ordered_values": (
        _filter("age", F.NOT_BETWEEN, "", "40", "18"),
        "between/not_between requires values[0] <= values[1]",
    ),
}


@pytest.mark.parametrize("rule", list(BAD_FILTERS))
def test_a_filter_breaking_a_rule_is_invalid_argument(client: Pug, rule: str) -> None:
    bad, message = BAD_FILTERS[rule]
    with pytest.raises(InvalidArgumentError) as raised:
        list(client.profiles.list(filter_groups=[FilterGroup(filters=[bad])]))
    assert raised.value.message == f"filter_groups[0].filters[0]: {message}"
    assert raised.value.details[0] == {
        "field": "filter_groups[0].filters[0]",
        "rule_id": f"property_filter.{rule}",
        "message": message,
    }


def test_delete_removes_the_profile_and_its_events(fake: FakePug, client: Pug) -> None:
    client.track("u1", "signup")
    client.track("u1", "page_view")
    client.track("u2", "signup")
    client.flush()
    profile = client.profiles.get_by_external_id("u1")
    deleted = client.profiles.delete(profile.id or "")
    assert deleted.status == ComplianceRequestStatus.COMPLETED
    assert [e.distinct_id for e in fake.events()] == ["u2"]
    with pytest.raises(NotFoundError):
        client.profiles.get(profile.id or "")
    request = client.profiles.get_deletion_request(deleted.request_id or "")
    assert (request.external_id, request.profile_id) == ("u1", profile.id)
    assert (request.status, request.events_identified) == (ComplianceRequestStatus.COMPLETED, 2)
    assert request.requested_at is not None and request.completed_at is not None


def test_delete_data_subject_by_external_id(fake: FakePug, client: Pug) -> None:
    client.identify("u1", {"email": "a@example.com"})
    client.track("u1", "signup")
    client.flush()
    response = client.profiles.delete_data_subject("u1")
    assert response.status == ComplianceRequestStatus.COMPLETED
    assert fake.profiles == {}
    assert fake.events() == []
    request = client.profiles.get_deletion_request(response.request_id or "")
    assert (request.external_id, request.events_identified) == ("u1", 1)
    with pytest.raises(InvalidArgumentError):
        client.profiles.delete_data_subject("")
    with pytest.raises(NotFoundError) as raised:
        client.profiles.get_deletion_request("r-unknown")
    assert raised.value.message == "deletion request r-unknown not found"


# ---- ActivityService ----------------------------------------------------------------------


@pytest.fixture
def activity(fake: FakePug, client: Pug) -> Pug:
    """u1: six events over two days (one in another session); u2: one purchase."""
    other_session = str(uuid.uuid4())
    client.track("u1", "page_view", {"path": "/"}, timestamp=at(0))
    client.track("u1", "page_view", {"path": "/pricing"}, timestamp=at(1))
    client.track("u1", Purchase(product_id="p1", amount=49.0, currency="USD"), timestamp=at(2))
    client.track("u1", "page_view", {"path": "/docs"}, timestamp=at(3, days=1))
    client.track("u1", Purchase(product_id="p2", amount=5.0, currency="EUR"), timestamp=at(4, 1))
    client.track("u1", "login", {"ok": True}, timestamp=at(5, 1), session_id=other_session)
    client.track("u2", Purchase(product_id="p1", amount=20.0, currency="USD"), timestamp=at(6))
    client.identify("u1", {"plan": "pro", "age": 36})
    client.flush()
    return client


def _kinds(events: Any) -> list[str]:
    return [e.kind for e in events]


def test_feed_is_newest_first_and_filtered(activity: Pug, fake: FakePug) -> None:
    feed = activity.activity.feed(distinct_id="u1")
    assert _kinds(feed.events) == [
        "login", "purchase", "page_view", "purchase", "page_view", "page_view"
    ]  # fmt: skip
    assert feed.next_page_token == ""
    first = feed.events[-1]
    assert first.custom_properties is not None
    assert first.custom_properties.to_dict() == {"path": "/"}
    assert first.auto_properties is not None
    assert first.auto_properties.to_dict()["$lib"] == "pug-python"

    purchases = activity.activity.feed(distinct_id="u1", events=[EventFilter(kind="purchase")])
    assert [e.occur_time for e in purchases.events] == [at(4, 1), at(2)]
    usd = activity.activity.feed(
        distinct_id="",
        property_filters=[_filter("currency", F.EQUALS, "USD")],
    )
    assert [(e.distinct_id, e.occur_time) for e in usd.events] == [("u2", at(6)), ("u1", at(2))]
    either = activity.activity.feed(
        distinct_id="u1",
        events=[
            EventFilter(kind="login"),
            EventFilter(kind="page_view", filters=[_filter("path", F.EQUALS, "/docs")]),
        ],
    )
    assert _kinds(either.events) == ["login", "page_view"]
    day_two = TimeRange(from_=at(0, days=1), to=at(0, days=2))
    assert len(activity.activity.feed(distinct_id="u1", time_range=day_two).events) == 3
    session = fake.events(kind="login")[0].session_id
    assert _kinds(activity.activity.feed(distinct_id="u1", session_id=session).events) == ["login"]
    by_profile = activity.activity.feed(
        distinct_id="",
        property_filters=[
            PropertyFilter(
                property="plan",
                operator=F.EQUALS,
                value="pro",
                source=PropertySource.PROFILE,
            )
        ],
    )
    assert {e.distinct_id for e in by_profile.events} == {"u1"}


def test_feed_pages(activity: Pug) -> None:
    page = activity.activity.feed(distinct_id="u1", page_size=4)
    assert len(page.events) == 4 and page.next_page_token
    rest = activity.activity.feed(distinct_id="u1", page_size=4, page_token=page.next_page_token)
    assert len(rest.events) == 2 and rest.next_page_token == ""
    every = list(activity.activity.iter_feed(distinct_id="u1", page_size=2))
    assert [e.event_id for e in every] == [e.event_id for e in page.events + rest.events]
    with pytest.raises(InvalidArgumentError):
        activity.activity.feed(distinct_id="u1", page_token="not-a-token")


def test_feed_needs_a_distinct_id_and_the_explorer_does_not(activity: Pug) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        activity.activity.feed()
    assert raised.value.message == "distinct_id: value is required"
    assert len(list(activity.activity.iter_event_explorer(page_size=3))) == 7
    bad_range = TimeRange(from_=at(1), to=at(0))
    with pytest.raises(InvalidArgumentError) as raised:
        activity.activity.event_explorer(time_range=bad_range)
    assert raised.value.message == "time_range: time_range.from must be before time_range.to"


def test_heatmap(activity: Pug) -> None:
    days = activity.activity.heatmap(distinct_id="u1").days
    assert [(d.date, d.count) for d in days] == [("2024-05-06", 3), ("2024-05-07", 3)]
    everyone = activity.activity.heatmap(distinct_id="").days
    assert [(d.date, d.count) for d in everyone] == [("2024-05-06", 4), ("2024-05-07", 3)]
    day_one = TimeRange(from_=at(-720), to=at(720))
    assert len(activity.activity.heatmap(distinct_id="", time_range=day_one).days) == 1


def test_profile_stats(activity: Pug) -> None:
    stats = activity.activity.profile_stats("u1")
    assert stats.stats is not None
    assert (stats.stats.first_seen, stats.stats.last_seen) == (at(0), at(5, days=1))
    assert stats.stats.total_events == 6
    assert [(d.date, d.count) for d in stats.heatmap] == [("2024-05-06", 3), ("2024-05-07", 3)]
    assert stats.properties is not None
    assert stats.properties.to_dict() == {"plan": "pro", "age": 36.0}
    with pytest.raises(NotFoundError):
        activity.activity.profile_stats("nobody")


def test_filter_schema(activity: Pug) -> None:
    schema = activity.activity.filter_schema()
    assert [(e.name, e.count, e.last_seen_at) for e in schema.events] == [
        ("page_view", 3, at(3, days=1)),
        ("purchase", 3, at(4, days=1)),
        ("login", 1, at(5, days=1)),
    ]
    custom = {k.name: (k.count, k.value_type) for k in schema.custom_property_keys}
    assert custom == {
        "amount": (3, PropertyValueType.FLOAT),
        "currency": (3, PropertyValueType.STRING),
        "productId": (3, PropertyValueType.STRING),
        "path": (3, PropertyValueType.STRING),
        "ok": (1, PropertyValueType.BOOLEAN),
    }
    assert {k.name for k in schema.auto_property_keys} == {"$lib", "$sdkVersion", "$platform"}
    profile = {k.name: k.value_type for k in schema.profile_property_keys}
    assert profile == {"plan": PropertyValueType.STRING, "age": PropertyValueType.INTEGER}
    purchases = activity.insights.filter_schema(
        event_kind="purchase", allowed_types=[PropertyValueType.FLOAT]
    )
    assert [e.name for e in purchases.events] == ["purchase"]
    assert [k.name for k in purchases.custom_property_keys] == ["amount"]


def test_property_values(activity: Pug) -> None:
    values = activity.activity.property_values(
        property_key="currency", source=PropertySource.CUSTOM
    ).values
    assert values == ["USD", "EUR"]  # the most frequent first
    paths = activity.activity.property_values(
        property_key="path", source=PropertySource.CUSTOM, event_kind="page_view"
    ).values
    assert paths == ["/", "/docs", "/pricing"]
    lib = activity.insights.property_values(property_key="$lib", source=PropertySource.AUTO)
    assert lib.values == ["pug-python"]
    ages = activity.insights.property_values(property_key="age", source=PropertySource.PROFILE)
    assert ages.values == ["36"]
    with pytest.raises(InvalidArgumentError) as raised:
        activity.activity.property_values(property_key="bad key", source=PropertySource.CUSTOM)
    assert raised.value.message.startswith("property_key: does not match regex pattern")


# ---- InsightsService ----------------------------------------------------------------------


def _trend(
    client: Pug, *queries: EventQuery, granularity: Granularity = Granularity.DAY
) -> list[list[tuple[datetime.datetime | None, float | None]]]:
    response = client.insights.query(
        spec=InsightQuerySpec(insight_type=InsightType.TRENDS, events=list(queries)),
        time_range=TimeRange(from_=at(-720), to=at(720, days=2)),
        granularity=granularity,
    )
    assert response.trends is not None
    return [[(p.time, p.value) for p in s.points] for s in response.trends.series]


def test_trends_total_and_unique_users_by_day(activity: Pug) -> None:
    purchase = EventFilter(kind="purchase")
    total, unique, amount = _trend(
        activity,
        EventQuery(event=purchase, aggregation=AggregationType.TOTAL),
        EventQuery(event=purchase, aggregation=AggregationType.UNIQUE_USERS),
        EventQuery(event=purchase, aggregation=AggregationType.SUM, aggregation_property="amount"),
    )
    midnight = T0.replace(hour=0)
    days = [midnight + datetime.timedelta(days=n) for n in range(3)]
    assert total == [(days[0], 2.0), (days[1], 1.0), (days[2], 0.0)]
    assert unique == [(days[0], 2.0), (days[1], 1.0), (days[2], 0.0)]
    assert amount == [(days[0], 69.0), (days[1], 5.0), (days[2], 0.0)]
    (weekly,) = _trend(activity, EventQuery(event=EventFilter()), granularity=Granularity.WEEK)
    assert weekly == [(midnight, 7.0)]  # 2024-05-06 is a Monday


def test_trends_reject_a_range_too_long_for_the_granularity(activity: Pug) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        _trend(activity, EventQuery(event=EventFilter()), granularity=Granularity.MINUTE)
    assert raised.value.message == "GRANULARITY_MINUTE requires a time range of at most 6 hours"


def test_segment_users(activity: Pug) -> None:
    client = activity
    client.track("u3", "page_view", timestamp=at(7))
    client.identify("u2", {"plan": "free"})
    client.flush()
    whole = TimeRange(from_=at(-720), to=at(0, days=3))
    viewers = client.insights.segment_users(
        time_range=whole, events=[EventQuery(event=EventFilter(kind="page_view"))]
    )
    assert viewers.distinct_ids == ["u1", "u3"]
    buyers_who_viewed = client.insights.segment_users(
        time_range=whole,
        events=[
            EventQuery(event=EventFilter(kind="purchase")),
            EventQuery(event=EventFilter(kind="page_view")),
        ],
    )
    assert buyers_who_viewed.distinct_ids == ["u1"]
    pro = [InsightsFilterGroup(filters=[_filter("plan", F.EQUALS, "pro")])]
    buyers = [EventQuery(event=EventFilter(kind="purchase"))]
    assert client.insights.segment_users(
        time_range=whole, events=buyers, filter_groups=pro
    ).distinct_ids == ["u1"]
    paged = list(client.insights.iter_segment_users(time_range=whole, events=buyers, page_size=1))
    assert paged == ["u1", "u2"]
    with pytest.raises(InvalidArgumentError) as raised:
        client.insights.segment_users(time_range=whole, events=[])
    assert raised.value.message == "events: must contain at least 1 item(s)"


# ---- typed views and assertions -----------------------------------------------------------


def test_events_are_typed_views(fake: FakePug, client: Pug) -> None:
    purchase = Purchase(product_id="p1", amount=49.0, currency="USD", quantity=2)
    client.track("u1", purchase)
    client.track("u2", "video_watched", {"seconds": 12})
    (received,) = fake.events(kind="purchase")
    assert isinstance(received, ReceivedEvent)
    assert received.typed == purchase
    assert received.properties == {"productId": "p1", "amount": 49.0, "currency": "USD",
                                   "quantity": 2}  # fmt: skip
    assert received.auto_properties["$lib"] == "pug-python"
    (custom,) = fake.events(distinct_id="u2")
    assert custom.typed is None
    assert custom.properties == {"seconds": 12}
    # A duration travels as float seconds and comes back as a timedelta.
    play = VideoPlay(video_id="v1", position=datetime.timedelta(seconds=90))
    client.track("u1", play)
    assert fake.events(kind="video_play")[0].typed == play


def test_assert_tracked_passes(fake: FakePug, client: Pug) -> None:
    client.track("u1", Signup())
    client.track("u1", Purchase(product_id="p1", amount=49.0, currency="USD"), {"coupon": "X"})
    found = fake.assert_tracked(Purchase(product_id="p1", amount=49.0))
    assert found.kind == "purchase"
    fake.assert_tracked(Purchase(product_id="p1"), {"coupon": "X"}, distinct_id="u1")
    fake.assert_tracked("purchase", {"product_id": "p1", "amount": 49})  # Python names, an int
    fake.assert_tracked("signup")


def test_assert_tracked_explains_a_mismatch(fake: FakePug, client: Pug) -> None:
    client.track("u1", Purchase(product_id="p1", amount=50.0))
    client.track("u2", Purchase(product_id="p9", amount=50.0, currency="EUR"))
    with pytest.raises(AssertionError) as raised:
        fake.assert_tracked(Purchase(product_id="p1", amount=49.0, currency="EUR"))
    assert str(raised.value) == (
        "expected a 'purchase' event with product_id='p1', amount=49.0, currency='EUR'\n"
        "none of the 2 'purchase' event(s) received matches; closest:\n"
        "  event #1 (distinct_id 'u1'):\n"
        "    amount: expected 49.0, got 50.0\n"
        "    currency: missing\n"
        "  event #2 (distinct_id 'u2'):\n"
        "    product_id: expected 'p1', got 'p9'\n"
        "    amount: expected 49.0, got 50.0"
    )
    with pytest.raises(AssertionError) as raised:
        fake.assert_tracked(Purchase(product_id="p1", amount=50.0), distinct_id="u2")
    assert str(raised.value) == (
        "expected a 'purchase' event with product_id='p1', amount=50.0 for distinct_id 'u2'\n"
        "none of the 2 'purchase' event(s) received matches; closest:\n"
        "  event #1 (distinct_id 'u1'):\n"
        "    distinct_id: expected 'u2', got 'u1'\n"
        "  event #2 (distinct_id 'u2'):\n"
        "    product_id: expected 'p1', got 'p9'"
    )


def test_assert_tracked_with_nothing_of_that_kind(fake: FakePug, client: Pug) -> None:
    with pytest.raises(AssertionError) as raised:
        fake.assert_tracked("purchase")
    assert str(raised.value) == "expected a 'purchase' event\nno events received"
    client.track("u1", "signup")
    client.track("u1", "page_view")
    client.track("u2", "signup")
    with pytest.raises(AssertionError) as raised:
        fake.assert_tracked("purchase", {"amount": 49.0})
    assert str(raised.value) == (
        "expected a 'purchase' event with amount=49.0\n"
        "no 'purchase' events; received: signup ×2, page_view ×1"
    )


def test_profiles_profile_and_reset(fake: FakePug, client: Pug) -> None:
    client.identify("u1", {"plan": "pro"})
    assert fake.profiles == {"u1": {"plan": "pro"}}
    assert fake.profile("u1").external_id == "u1"
    with pytest.raises(KeyError):
        fake.profile("u2")
    fake.fail("unavailable", count=None)
    fake.reset()
    assert fake.profiles == {} and fake.events() == [] and fake.requests == []
    client.track("u1", "signup")  # the failure was cleared with the rest
    assert len(fake.events()) == 1


def test_failure_injection_still_works(fake: FakePug, client: Pug) -> None:
    fake.fail("unavailable", count=2)
    client.track("u1", "signup")
    assert client.flush(5.0)
    assert len(fake.events()) == 1
    assert [m for m, _ in fake.attempts].count(BATCH_CREATE) == 3
    assert client.stats().retries == 2


def test_attach_flushes_an_async_client(fake: FakePug) -> None:
    async def scenario() -> list[str]:
        async with AsyncPug(api_key="prv_test", transport=fake) as pug:
            fake.attach(pug)
            pug.track("u1", "signup")
            return [e.kind for e in fake.events()]

    assert asyncio.run(scenario()) == ["signup"]
