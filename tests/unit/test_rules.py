"""pug.rules: the server's validation rules, generated from the wire contract, are the one
copy the SDK and FakePug use.

The generated module is deterministic and current; every rule the contract puts on a
request message (the input of a service method, and every message inside one) is in it,
nothing else is; the names the runtime uses are the contract's rules; and FakePug, which
reads them, rejects each broken rule with protovalidate's field path, rule id and message.
"""

from __future__ import annotations

import copy
import datetime
import re
from typing import Any

import pug.rules as rules
import pytest
from contract_file import REPO_ROOT, load_contract
from pug.errors import PugError
from pug.proto.common.v1 import (
    EventFilter,
    FilterOperator,
    GetFilterSchemaRequest,
    PropertyFilter,
    PropertyValue,
    PropertyValueType,
    TimeRange,
)
from pug.proto.sdk.events.v1 import BatchCreateRequest, Event
from pug.proto.sdk.profiles.v1 import IdentifyRequest
from pug.proto.shared.activity import v1 as activity_v1
from pug.proto.shared.insights import v1 as insights_v1
from pug.testing import FakePug
from pug_codegen import rules as generator
from pug_codegen.cli import SDK_HEADER
from pug_codegen.patterns import python_pattern
from pug_codegen.render import rules_module

CONTRACT: dict[str, Any] = load_contract()
GENERATED = REPO_ROOT / "generated" / "pug" / "rules.py"


def test_the_generated_module_is_deterministic_and_current() -> None:
    text = rules_module(generator.collect(CONTRACT), header=SDK_HEADER)
    assert text == rules_module(generator.collect(copy.deepcopy(CONTRACT)), header=SDK_HEADER)
    assert text == GENERATED.read_text(encoding="utf-8")


# --- every rule of the contract's request messages, and no other ----------------------------


def _number(value: object) -> object:
    """A contract value as pug.rules holds it: "1000" → 1000, "1s" → 1.0 (seconds)."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9.]+s", value):
        return float(value[:-1])
    return value


def contract_facts(found: dict[str, Any], prefix: str = "") -> dict[str, object]:
    """One field's contract rules, flat: {"string.max_len": 1024, "cel": [ids], ...}."""
    out: dict[str, object] = {}
    for key, value in found.items():
        if key == "cel":
            out[prefix + key] = [rule["id"] for rule in value]
        elif isinstance(value, dict):
            out.update(contract_facts(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            out[prefix + key] = [_number(v) for v in value]
        else:
            out[prefix + key] = value if key == "pattern" else _number(value)
    return out


def generated_facts(field: rules.Field, prefix: str = "") -> dict[str, object]:
    """The same, read back from a generated `rules.Field`."""
    out: dict[str, object] = {}
    if field.required:
        out[prefix + "required"] = True
    for name in ("pattern", "uuid", "min_len", "max_len", "min_items", "max_items", "gt",
                 "gte", "lt", "lte", "finite", "defined_only", "not_in"):  # fmt: skip
        value = getattr(field, name)
        if value is None or value is False or value == ():
            continue
        if isinstance(value, rules.Pattern):
            value = value.source
        out[f"{prefix}{field.type}.{name}"] = list(value) if name == "not_in" else value
    if field.items is not None:
        out.update(generated_facts(field.items, f"{prefix}{field.type}.items."))
    if field.cel:
        out[prefix + "cel"] = [rule.id for rule in field.cel]
    return out


def request_messages() -> dict[str, dict[str, Any]]:
    found = {}
    for f in CONTRACT["files"].values():
        for name, message in f["messages"].items():
            found[f"{f['package']}.{name}"] = message
    return {name: found[name] for name in generator.request_messages(CONTRACT)}


def test_every_rule_of_the_request_messages_is_in_pug_rules() -> None:
    messages = request_messages()
    # The inputs of the 17 methods and what they hold (PropertyFilter, Event, ...).
    assert {"sdk.events.v1.Event", "common.v1.PropertyFilter", "common.v1.TimeRange"} <= set(
        messages
    )
    with_rules = set()
    for name, message in messages.items():
        fields = {f["name"]: contract_facts(f["rules"]) for f in message["fields"] if "rules" in f}
        cel = [
            rules.Cel(rule["id"], rule["message"], rule["expression"])
            for rule in message.get("rules", {}).get("cel", [])
        ]
        oneofs = [k for k, v in message.get("oneof_rules", {}).items() if v.get("required")]
        if not (fields or cel or oneofs):
            assert name not in rules.MESSAGES
            continue
        with_rules.add(name)
        generated = rules.MESSAGES[name]
        assert {k: generated_facts(v) for k, v in generated.fields.items()} == fields, name
        assert list(generated.cel) == cel, name
        assert list(generated.required_oneofs) == oneofs, name
        for field in message["fields"]:
            for rule in field.get("rules", {}).get("cel", []):
                assert rules.CEL[rule["id"]] == rules.Cel(
                    rule["id"], rule["message"], rule["expression"]
                )
    assert set(rules.MESSAGES) == with_rules
    assert len(rules.MESSAGES) == 29


def test_each_pattern_is_the_python_translation_of_its_re2_source() -> None:
    patterns = [
        p
        for message in rules.MESSAGES.values()
        for f in message.fields.values()
        for p in (f.pattern, f.items.pattern if f.items else None)
        if p is not None
    ] + [rules.UUID_PATTERN]
    assert len({p.source for p in patterns}) == 8
    for p in patterns:
        assert p.regex.pattern == python_pattern(p.source)
        assert not p.matches("page.viewed\n")  # `$` is the very end, as in RE2


def test_the_names_the_runtime_uses_are_the_contracts_rules() -> None:
    def field(path: str) -> rules.Field:
        message, _, name = path.rpartition(".")
        return rules.MESSAGES[message].fields[name]

    assert rules.KIND_PATTERN is field("sdk.events.v1.Event.kind").pattern
    assert rules.KIND_PATTERN.source == "^[a-zA-Z0-9_.-]+$"
    assert rules.KIND_OR_EMPTY_PATTERN is field("common.v1.EventFilter.kind").pattern
    assert rules.PROPERTY_PATH_PATTERN is field("common.v1.PropertyFilter.property").pattern
    assert rules.TIMEZONE_PATTERN is field("shared.insights.v1.QueryRequest.timezone").pattern
    anonymous_id = field("sdk.profiles.v1.IdentifyRequest.anonymous_id")
    assert rules.ANONYMOUS_ID_PATTERN is anonymous_id.pattern
    assert rules.MAX_ANONYMOUS_ID_CHARS == anonymous_id.max_len == 255
    assert rules.ANONYMOUS_ID_PREFIX == "anon-"
    for value, ok in (("", True), ("anon-1", True), ("anon", False), ("x-anon-1", False)):
        assert rules.ANONYMOUS_ID_PATTERN.matches(value) is ok
    assert rules.MAX_BATCH_EVENTS == 1000
    assert field("sdk.events.v1.BatchCreateRequest.events").max_items == 1000
    assert rules.MAX_STRING_CHARS == 1024
    assert field("common.v1.PropertyValue.string_value").max_len == 1024
    assert rules.MAX_DEVICE_ID_CHARS == 36
    assert rules.MAX_PAGE_SIZE == 1000
    assert field("shared.insights.v1.SegmentUsersRequest.page_size").lte == 1000
    assert rules.AUTO_PROPERTY_PREFIX == "$"
    assert rules.RESERVED_ID_PREFIX == "cookieless-"
    assert rules.UUID_PATTERN.matches("019a0b3c-1234-7abc-8def-0123456789ab")
    assert not rules.UUID_PATTERN.matches("019a0b3c-1234-7abc-8def-0123456789ab\n")
    ranges = {
        insights_v1.Granularity(k).name: (v.longest, v.rule.id)
        for k, v in rules.GRANULARITY_MAX_RANGES.items()
    }
    assert ranges == {
        "MINUTE": (datetime.timedelta(hours=6), "query_request.granularity_minute_max_range"),
        "HOUR": (datetime.timedelta(days=14), "query_request.granularity_hour_max_range"),
        "DAY": (datetime.timedelta(days=365), "query_request.granularity_day_max_range"),
        "WEEK": (datetime.timedelta(days=1461), "query_request.granularity_week_max_range"),
        "MONTH": (datetime.timedelta(days=3652.5), "query_request.granularity_month_max_range"),
    }


def _event_fields(contract: dict[str, Any]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = contract["files"]["sdk/events/v1/events.proto"]["messages"][
        "Event"
    ]["fields"]
    return fields


def test_the_generator_refuses_a_rule_it_does_not_model_or_a_named_rule_gone() -> None:
    unmodelled = copy.deepcopy(CONTRACT)
    _event_fields(unmodelled)[0]["rules"]["string"]["email"] = True
    with pytest.raises(generator.ContractError, match="string rules not modelled"):
        generator.collect(unmodelled)
    renamed = copy.deepcopy(CONTRACT)
    del _event_fields(renamed)[4]["rules"]["string"]  # Event.kind's pattern
    with pytest.raises(generator.ContractError, match="KIND_PATTERN"):
        generator.collect(renamed)


# --- FakePug rejects each rule as the server does ----------------------------------------------

T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
EVENT_ID = "019a0b3c-1234-7abc-8def-0123456789ab"


def event(**changes: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": EVENT_ID,
        "kind": "page.viewed",
        "distinct_id": "u1",
        "session_id": EVENT_ID,
        "occur_time": T0,
    }
    return Event(**{**fields, **changes})


def batch(*events: Event) -> BatchCreateRequest:
    return BatchCreateRequest(events=list(events))


FEED = "shared.activity.v1.ActivityService/GetActivityFeed"
QUERY = "shared.insights.v1.InsightsService/Query"
SPEC = insights_v1.InsightQuerySpec(insight_type=insights_v1.InsightType.TRENDS)
DAY = insights_v1.Granularity.DAY
REJECTED = [
    ("batch max_items", "sdk.events.v1.EventsService/BatchCreate", batch(*[event()] * 1001),
     "events: must contain no more than 1000 item(s)"),
    ("kind pattern", "sdk.events.v1.EventsService/BatchCreate", batch(event(kind="a b")),
     "events[0].kind: does not match regex pattern `^[a-zA-Z0-9_.-]+$`"),
    ("uuid", "sdk.events.v1.EventsService/BatchCreate", batch(event(event_id="x")),
     "events[0].event_id: must be a valid UUID"),
    ("string max_len", "sdk.events.v1.EventsService/BatchCreate",
     batch(event(custom_properties={"k": PropertyValue(string_value="é" * 1025)})),
     'events[0].custom_properties["k"].string_value: must be at most 1024'
     " characters"),
    ("auto prefix", "sdk.events.v1.EventsService/BatchCreate",
     batch(event(auto_properties={"lib": PropertyValue(bool_value=True)})),
     "events[0]: auto_properties keys must start with '$'"),
    ("reserved prefix", "sdk.events.v1.EventsService/BatchCreate",
     batch(event(distinct_id="cookieless-1")),
     # A rule of BatchCreateRequest: reported at the request, with no field.
     "distinct_id must not start with the reserved 'cookieless-' prefix"),
    ("anonymous id", "sdk.profiles.v1.ProfilesSDKService/Identify",
     IdentifyRequest(external_id="cookieless-u", anonymous_id="a" * 256),
     "external_id: external_id must not start with the reserved 'cookieless-' prefix; "
     "anonymous_id: must be at most 255 characters; "
     "anonymous_id: does not match regex pattern `^$|^anon-`"),
    ("page size", FEED, activity_v1.GetActivityFeedRequest(distinct_id="", page_size=1001),
     "page_size: must be greater than or equal to 0 and less than or equal to 1000"),
    ("filters", FEED, activity_v1.GetActivityFeedRequest(distinct_id="", property_filters=[
        PropertyFilter(property="$a b", operator=FilterOperator.GT, value="x")]),
     "property_filters[0].property: does not match regex pattern "
     "`^\\$?[a-zA-Z0-9_-]+(\\.[a-zA-Z0-9_-]+)*$`; property_filters[0]: value/values must "
     "contain valid numbers for lte/gte/lt/gt/between/not_between operators"),
    ("multi events", FEED, activity_v1.GetActivityFeedRequest(
        distinct_id="", events=[EventFilter(kind="a"), EventFilter()]),
     "each event filter must specify a kind or at least one property filter"),
    ("allowed types", "shared.activity.v1.ActivityService/GetFilterSchema",
     GetFilterSchemaRequest(allowed_types=[PropertyValueType.UNSPECIFIED]),
     "allowed_types[0]: must not be in list [0]"),
    ("time range", QUERY, insights_v1.QueryRequest(
        spec=SPEC, time_range=TimeRange(from_=T0, to=T0), granularity=DAY, timezone="a b"),
     "time_range: time_range.from must be before time_range.to; "
     "timezone: does not match regex pattern `^[A-Za-z0-9_+/-]*$`"),
    ("granularity range", QUERY, insights_v1.QueryRequest(
        spec=SPEC, time_range=TimeRange(from_=T0, to=T0 + datetime.timedelta(hours=7)),
        granularity=insights_v1.Granularity.MINUTE),
     "GRANULARITY_MINUTE requires a time range of at most 6 hours"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "request_", "message"), [r[1:] for r in REJECTED],
                         ids=[r[0] for r in REJECTED])  # fmt: skip
def test_fake_pug_rejects_each_rule_as_the_server_does(
    method: str, request_: Any, message: str
) -> None:
    with pytest.raises(PugError) as caught:
        FakePug().handle(method, bytes(request_))
    assert caught.value.code == "invalid_argument"
    assert str(caught.value) == f"invalid_argument: {message}"
