"""Wire round trips between the betterproto2 stubs and Google's protobuf runtime.

Google's classes are built by protoc from catalog/proto (see conftest.py), so they are an
independent implementation of the same wire format. Each message goes both ways:
stubs -> bytes -> Google, and Google -> bytes -> stubs. Every check compares with literal
expected values, never one side with the other, so a bug shared by both directions still
fails. Set-but-zero values ("", 0, 0.0, False, the epoch, enum value 0) get special care:
with explicit presence they must arrive as set, not be dropped as defaults.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import betterproto2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message as GoogleMessage
from protoc_helpers import GoogleMessages
from pug.proto.common.v1 import (
    FilterOperator,
    LogicalOperator,
    PropertyFilter,
    PropertySource,
    PropertyValue,
)
from pug.proto.google.protobuf import Struct
from pug.proto.sdk.events.v1 import BatchCreateRequest, Event
from pug.proto.sdk.profiles.v1 import IdentifyRequest
from pug.proto.shared.profiles.v1 import FilterGroup, ListRequest

# --- Google messages as plain data ---------------------------------------------------------
#
# A "wire view" lists the fields present on a Google message: nested messages and maps as
# dicts, repeated fields as lists, enums by value name. Absent fields are left out, so a
# set-but-zero field shows up with its zero value and an unset one does not show up at all.


def google_view(message: GoogleMessage) -> dict[str, Any]:
    return {field.name: _view_field(field, value) for field, value in message.ListFields()}


def _view_field(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {key: _view_single(value_field, item) for key, item in value.items()}
    if field.is_repeated:
        return [_view_single(field, item) for item in value]
    return _view_single(field, value)


def _view_single(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return google_view(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    return value


def fill_google(message: GoogleMessage, view: dict[str, Any]) -> GoogleMessage:
    """The inverse of google_view: set every field of `view` on a Google message."""
    for name, value in view.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _fill_map(getattr(message, name), field.message_type.fields_by_name["value"], value)
        elif field.is_repeated and field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value:
                fill_google(getattr(message, name).add(), item)
        elif field.is_repeated:
            getattr(message, name).extend(_google_scalar(field, item) for item in value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            # SetInParent: an all-zero sub-message (the epoch Timestamp) still counts as set.
            getattr(message, name).SetInParent()
            fill_google(getattr(message, name), value)
        else:
            setattr(message, name, _google_scalar(field, value))
    return message


def _fill_map(target: Any, value_field: FieldDescriptor, items: dict[str, Any]) -> None:
    for key, item in items.items():
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            fill_google(target[key], item)  # indexing a message map creates the entry
        else:
            target[key] = _google_scalar(value_field, item)


def _google_scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_name[value].number
    return value


def stubs_to_google(stub: betterproto2.Message, google_cls: type[GoogleMessage]) -> GoogleMessage:
    return google_cls.FromString(bytes(stub))


def as_json(value: Any) -> str:
    """JSON text tells apart what Python equality does not: True == 1, 0 == False, 1 == 1.0."""
    return json.dumps(value, sort_keys=True)


# --- Event ---------------------------------------------------------------------------------

EVENT_ID = "0f8b1c2e-5d6a-4b7c-9e8f-1a2b3c4d5e6f"
DISTINCT_ID = "user-42"
KIND = "order_completed"
SESSION_ID = "sess-7"
LIB = "pug-python"

# Timestamps as the stubs hold them (datetime) and as they travel (seconds, nanos).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OCCUR_TIME = datetime(2024, 5, 17, 12, 34, 56, 789123, tzinfo=UTC)
OCCUR_TIME_WIRE = {"seconds": 1715949296, "nanos": 789_123_000}
SIGNUP_AT = datetime(2021, 3, 4, 5, 6, 7, 500000, tzinfo=UTC)
SIGNUP_AT_WIRE = {"seconds": 1614834367, "nanos": 500_000_000}

INT64_MAX = 9_223_372_036_854_775_807
INT64_MIN = -9_223_372_036_854_775_808

# Custom properties as the stubs hold them: key -> (PropertyValue variant, value).
CUSTOM_PROPERTIES: dict[str, tuple[str, Any]] = {
    "coupon": ("string_value", ""),
    "items_returned": ("int_value", 0),
    "discount": ("double_value", 0.0),
    "gift": ("bool_value", False),
    "first_refund_at": ("timestamp_value", EPOCH),
    "signup_at": ("timestamp_value", SIGNUP_AT),
    "plan": ("string_value", "pro"),
    "balance_delta": ("int_value", -42),
    "order_number": ("int_value", INT64_MAX),
    "oldest_sequence": ("int_value", INT64_MIN),
    "total": ("double_value", 99.95),
    "newsletter": ("bool_value", True),
}

# The same properties as they travel. The epoch is an empty, but present, Timestamp.
CUSTOM_PROPERTIES_WIRE: dict[str, dict[str, Any]] = {
    "coupon": {"string_value": ""},
    "items_returned": {"int_value": 0},
    "discount": {"double_value": 0.0},
    "gift": {"bool_value": False},
    "first_refund_at": {"timestamp_value": {}},
    "signup_at": {"timestamp_value": SIGNUP_AT_WIRE},
    "plan": {"string_value": "pro"},
    "balance_delta": {"int_value": -42},
    "order_number": {"int_value": INT64_MAX},
    "oldest_sequence": {"int_value": INT64_MIN},
    "total": {"double_value": 99.95},
    "newsletter": {"bool_value": True},
}

FIRST_EVENT_WIRE = {
    "event_id": EVENT_ID,
    "auto_properties": {"$lib": {"string_value": LIB}},
    "custom_properties": CUSTOM_PROPERTIES_WIRE,
    "distinct_id": DISTINCT_ID,
    "kind": KIND,
    "occur_time": OCCUR_TIME_WIRE,
    "session_id": SESSION_ID,
    "cookieless": False,
}

# The second event leaves session_id, occur_time, cookieless and custom_properties unset:
# absence must survive the trip as well (None on the stubs, not a zero value).
SECOND_EVENT_WIRE = {
    "event_id": "evt-2",
    "auto_properties": {"$lib": {"string_value": LIB}},
    "distinct_id": DISTINCT_ID,
    "kind": "$pageview",
}


def stub_first_event() -> Event:
    return Event(
        event_id=EVENT_ID,
        distinct_id=DISTINCT_ID,
        kind=KIND,
        session_id=SESSION_ID,
        occur_time=OCCUR_TIME,
        cookieless=False,
        auto_properties={"$lib": PropertyValue(string_value=LIB)},
        # One oneof member per PropertyValue, passed to the constructor.
        custom_properties={
            key: PropertyValue(**{variant: value})
            for key, (variant, value) in CUSTOM_PROPERTIES.items()
        },
    )


def stub_second_event() -> Event:
    return Event(
        event_id="evt-2",
        distinct_id=DISTINCT_ID,
        kind="$pageview",
        auto_properties={"$lib": PropertyValue(string_value=LIB)},
    )


def stub_property_values(properties: dict[str, PropertyValue]) -> dict[str, tuple[str, Any]]:
    return {key: betterproto2.which_one_of(value, "value") for key, value in properties.items()}


def assert_google_first_event(event: GoogleMessage) -> None:
    assert google_view(event) == FIRST_EVENT_WIRE
    # The set-but-zero values, spelled out: present, and in the right oneof variant.
    assert event.HasField("cookieless")
    assert event.cookieless is False
    custom = event.custom_properties
    assert custom["coupon"].WhichOneof("value") == "string_value"
    assert custom["items_returned"].WhichOneof("value") == "int_value"
    assert custom["discount"].WhichOneof("value") == "double_value"
    assert custom["gift"].WhichOneof("value") == "bool_value"
    assert custom["first_refund_at"].WhichOneof("value") == "timestamp_value"


def assert_google_second_event(event: GoogleMessage) -> None:
    assert google_view(event) == SECOND_EVENT_WIRE
    assert not event.HasField("session_id")
    assert not event.HasField("occur_time")
    assert not event.HasField("cookieless")


def assert_stub_first_event(event: Event) -> None:
    assert event.event_id == EVENT_ID
    assert event.distinct_id == DISTINCT_ID
    assert event.kind == KIND
    assert event.session_id == SESSION_ID
    assert event.occur_time == OCCUR_TIME
    assert event.cookieless is False  # set-but-zero: False, not None
    assert stub_property_values(event.auto_properties) == {"$lib": ("string_value", LIB)}
    assert stub_property_values(event.custom_properties) == CUSTOM_PROPERTIES


def assert_stub_second_event(event: Event) -> None:
    assert event.event_id == "evt-2"
    assert event.distinct_id == DISTINCT_ID
    assert event.kind == "$pageview"
    assert event.session_id is None
    assert event.occur_time is None
    assert event.cookieless is None
    assert stub_property_values(event.auto_properties) == {"$lib": ("string_value", LIB)}
    assert event.custom_properties == {}


def test_event_stubs_to_google(google_pb2: GoogleMessages) -> None:
    event = stubs_to_google(stub_first_event(), google_pb2["sdk.events.v1.Event"])
    assert_google_first_event(event)


def test_batch_stubs_to_google(google_pb2: GoogleMessages) -> None:
    batch = BatchCreateRequest(events=[stub_first_event(), stub_second_event()])
    parsed = stubs_to_google(batch, google_pb2["sdk.events.v1.BatchCreateRequest"])
    assert len(parsed.events) == 2
    assert_google_first_event(parsed.events[0])
    assert_google_second_event(parsed.events[1])


def test_event_google_to_stubs(google_pb2: GoogleMessages) -> None:
    event = fill_google(google_pb2["sdk.events.v1.Event"](), FIRST_EVENT_WIRE)
    assert_stub_first_event(Event.parse(event.SerializeToString()))


def test_batch_google_to_stubs(google_pb2: GoogleMessages) -> None:
    batch = fill_google(
        google_pb2["sdk.events.v1.BatchCreateRequest"](),
        {"events": [FIRST_EVENT_WIRE, SECOND_EVENT_WIRE]},
    )
    parsed = BatchCreateRequest.parse(batch.SerializeToString())
    assert len(parsed.events) == 2
    assert_stub_first_event(parsed.events[0])
    assert_stub_second_event(parsed.events[1])


def test_sub_microsecond_nanos_are_dropped_by_the_stubs(google_pb2: GoogleMessages) -> None:
    # The stubs unwrap Timestamp into datetime, which stops at microseconds: a server
    # timestamp with nanosecond digits comes back truncated (not rounded).
    wire = {"occur_time": {"seconds": 1715949296, "nanos": 789_123_999}}
    event = fill_google(google_pb2["sdk.events.v1.Event"](), wire)
    assert Event.parse(event.SerializeToString()).occur_time == OCCUR_TIME


# --- IdentifyRequest -----------------------------------------------------------------------

EXTERNAL_ID = "crm-1234"
ANONYMOUS_ID = "anon-5678"
DEVICE_ID = "device-9abc"

# Struct numbers are doubles, so the numbers here are floats to compare exactly as JSON.
TRAITS: dict[str, Any] = {
    "age": 36.0,
    "name": "Ada",
    "vip": True,
    "nickname": None,
    "address": {"city": "Paris", "zip": "75001", "floor": 0.0},
    "tags": ["beta", 2.5, False, None, {"source": "import"}],
}


def test_identify_stubs_to_google(google_pb2: GoogleMessages) -> None:
    request = IdentifyRequest(
        external_id=EXTERNAL_ID,
        anonymous_id=ANONYMOUS_ID,
        device_id=DEVICE_ID,
        traits=Struct.from_dict(TRAITS),
    )
    parsed = stubs_to_google(request, google_pb2["sdk.profiles.v1.IdentifyRequest"])
    assert (parsed.external_id, parsed.anonymous_id, parsed.device_id) == (
        EXTERNAL_ID,
        ANONYMOUS_ID,
        DEVICE_ID,
    )
    assert parsed.HasField("traits")
    assert as_json(json_format.MessageToDict(parsed.traits)) == as_json(TRAITS)
    assert parsed.traits.fields["nickname"].WhichOneof("kind") == "null_value"


def test_identify_google_to_stubs(google_pb2: GoogleMessages) -> None:
    request = google_pb2["sdk.profiles.v1.IdentifyRequest"](
        external_id=EXTERNAL_ID, anonymous_id=ANONYMOUS_ID, device_id=DEVICE_ID
    )
    request.traits.update(TRAITS)
    parsed = IdentifyRequest.parse(request.SerializeToString())
    assert (parsed.external_id, parsed.anonymous_id, parsed.device_id) == (
        EXTERNAL_ID,
        ANONYMOUS_ID,
        DEVICE_ID,
    )
    assert parsed.traits is not None
    assert as_json(parsed.traits.to_dict()) == as_json(TRAITS)
    # JSON null is the zero enum value in a oneof: it must still arrive as set.
    assert betterproto2.which_one_of(parsed.traits.fields["nickname"], "kind")[0] == "null_value"


# --- shared.profiles.v1.ListRequest --------------------------------------------------------

LIST_REQUEST_WIRE = {
    "page_token": "",  # the first page: an empty token, but sent
    "filter_groups": [
        {
            "filters": [
                {
                    "property": "plan",
                    "operator": "FILTER_OPERATOR_EQUALS",
                    "value": "pro",
                    "source": "PROPERTY_SOURCE_PROFILE",
                },
                {
                    "property": "$browser",
                    "operator": "FILTER_OPERATOR_IN",
                    "values": ["Chrome", "Firefox"],
                    "source": "PROPERTY_SOURCE_AUTO",
                },
            ],
            "operator": "LOGICAL_OPERATOR_AND",
        },
        {
            "filters": [
                {
                    "property": "age",
                    "operator": "FILTER_OPERATOR_BETWEEN",
                    "values": ["18", "30"],
                    "source": "PROPERTY_SOURCE_PROFILE",
                },
                {
                    "property": "email",
                    "operator": "FILTER_OPERATOR_IS_SET",
                    # Enum value 0, set explicitly: must travel as present.
                    "source": "PROPERTY_SOURCE_UNSPECIFIED",
                },
            ],
            "operator": "LOGICAL_OPERATOR_OR",
        },
    ],
    "filter_groups_operator": "LOGICAL_OPERATOR_OR",
}


def stub_list_request() -> ListRequest:
    return ListRequest(
        page_token="",
        filter_groups=[
            FilterGroup(
                filters=[
                    PropertyFilter(
                        property="plan",
                        operator=FilterOperator.EQUALS,
                        value="pro",
                        source=PropertySource.PROFILE,
                    ),
                    PropertyFilter(
                        property="$browser",
                        operator=FilterOperator.IN,
                        values=["Chrome", "Firefox"],
                        source=PropertySource.AUTO,
                    ),
                ],
                operator=LogicalOperator.AND,
            ),
            FilterGroup(
                filters=[
                    PropertyFilter(
                        property="age",
                        operator=FilterOperator.BETWEEN,
                        values=["18", "30"],
                        source=PropertySource.PROFILE,
                    ),
                    PropertyFilter(
                        property="email",
                        operator=FilterOperator.IS_SET,
                        source=PropertySource.UNSPECIFIED,
                    ),
                ],
                operator=LogicalOperator.OR,
            ),
        ],
        filter_groups_operator=LogicalOperator.OR,
    )


def stub_filter(f: PropertyFilter) -> tuple[Any, ...]:
    return (f.property, f.operator, f.value, f.values, f.source)


def test_list_request_stubs_to_google(google_pb2: GoogleMessages) -> None:
    parsed = stubs_to_google(stub_list_request(), google_pb2["shared.profiles.v1.ListRequest"])
    assert google_view(parsed) == LIST_REQUEST_WIRE
    assert parsed.HasField("page_token")
    assert parsed.filter_groups[1].filters[1].HasField("source")


def test_list_request_google_to_stubs(google_pb2: GoogleMessages) -> None:
    request = fill_google(google_pb2["shared.profiles.v1.ListRequest"](), LIST_REQUEST_WIRE)
    parsed = ListRequest.parse(request.SerializeToString())
    assert parsed.page_token == ""  # set-but-empty: "", not None
    assert parsed.filter_groups_operator == LogicalOperator.OR
    assert [group.operator for group in parsed.filter_groups] == [
        LogicalOperator.AND,
        LogicalOperator.OR,
    ]
    assert [[stub_filter(f) for f in group.filters] for group in parsed.filter_groups] == [
        [
            ("plan", FilterOperator.EQUALS, "pro", [], PropertySource.PROFILE),
            ("$browser", FilterOperator.IN, None, ["Chrome", "Firefox"], PropertySource.AUTO),
        ],
        [
            ("age", FilterOperator.BETWEEN, None, ["18", "30"], PropertySource.PROFILE),
            # source 0 was set: UNSPECIFIED, not None.
            ("email", FilterOperator.IS_SET, None, [], PropertySource.UNSPECIFIED),
        ],
    ]
