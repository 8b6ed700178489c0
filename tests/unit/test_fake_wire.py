"""FakePug reads request bytes as the server's protobuf does: legal wire forms are read (not
raised on), malformed bytes are `invalid_argument`; and it applies exactly the contract's
rules (no extra enum rule; numbers in filters as Go's strconv.ParseFloat reads them)."""

from __future__ import annotations

import datetime
import uuid

import pytest
from pug import InvalidArgumentError, PugError
from pug.proto.common.v1 import FilterOperator, LogicalOperator, PropertyFilter
from pug.proto.sdk.events.v1 import BatchCreateRequest, BatchCreateResponse, Event
from pug.proto.shared.profiles.v1 import FilterGroup, ListRequest
from pug.testing import FakePug
from pug.testing.fake import values
from pug.transports.base import BATCH_CREATE, IDENTIFY

LIST = "shared.profiles.v1.ProfilesService/List"


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (payloads here are shorter than 128 bytes)."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def event_bytes(extra: bytes = b"") -> bytes:
    """A valid Event's bytes, then `extra` (later fields win or merge, as in protobuf)."""
    event = Event(
        event_id=str(uuid.uuid4()),
        kind="signup",
        distinct_id="u1",
        session_id=str(uuid.uuid4()),
        occur_time=datetime.datetime(2024, 5, 6, tzinfo=datetime.UTC),
    )
    return bytes(event) + extra


def batch(fake: FakePug, *events: bytes) -> BatchCreateResponse:
    body = b"".join(field(1, event) for event in events)
    return BatchCreateResponse.parse(fake.handle(BATCH_CREATE, body))


def test_a_map_entry_with_no_value_is_an_empty_property_value() -> None:
    # Go reads the missing value as an empty PropertyValue, whose oneof is required.
    with pytest.raises(InvalidArgumentError) as raised:
        batch(FakePug(), event_bytes(field(3, field(1, b"plan"))))
    assert raised.value.details == [
        {
            "field": 'events[0].custom_properties["plan"].value',
            "rule_id": "required",
            "message": "exactly one field is required in oneof",
        }
    ]


def test_a_map_entry_with_no_key_has_the_empty_key() -> None:
    fake = FakePug()
    assert batch(fake, event_bytes(field(3, field(2, field(1, b"pro"))))).accepted == 1
    assert fake.events()[0].properties == {"": "pro"}


def test_the_last_member_of_a_oneof_wins() -> None:
    fake = FakePug()
    value = field(1, b"text") + bytes([2 << 3, 7])  # string_value, then int_value = 7
    assert batch(fake, event_bytes(field(3, field(1, b"n") + field(2, value)))).accepted == 1
    assert fake.events()[0].properties == {"n": 7}


def test_a_field_of_the_wrong_wire_type_is_an_unknown_field() -> None:
    fake = FakePug()
    # distinct_id (4) as a varint and cookieless (8) as bytes: Go keeps both as unknown
    # fields, so the event keeps the distinct id sent first and is not cookieless.
    extra = bytes([4 << 3 | 0, 1]) + field(8, b"\x01")
    assert batch(fake, event_bytes(extra)).accepted == 1
    assert fake.events()[0].distinct_id == "u1"


def test_a_traits_value_with_no_kind_is_read_as_null() -> None:
    fake = FakePug()
    traits = field(1, field(1, b"plan") + field(2, b""))  # Struct.fields["plan"] = Value{}
    fake.handle(IDENTIFY, field(1, b"u1") + field(2, traits))
    assert fake.profiles == {"u1": {"plan": None}}


@pytest.mark.parametrize("seconds", [-(10**12), 10**12, 2**63 - 1])
def test_a_timestamp_beyond_datetime_is_accepted(seconds: int) -> None:
    # No rule bounds occur_time; the fake stores the nearest time datetime holds.
    timestamp = bytes([1 << 3]) + _varint(seconds)
    assert batch(FakePug(), event_bytes(field(6, timestamp))).accepted == 1


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff",  # a field key whose varint never ends
        field(1, event_bytes())[:-3],  # an event cut short
        b"\x0a\x05\x0a\x01",  # a length past the end
        b"\x0f",  # wire type 7
        b"\x00\x00",  # field number 0
        field(1, field(5, b"\xc3\x28")),  # a kind that is not UTF-8
    ],
    ids=["ff ff ff", "truncated", "length past the end", "wire type 7", "field 0", "utf-8"],
)
def test_malformed_bytes_are_invalid_argument(body: bytes) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        FakePug().handle(BATCH_CREATE, body)
    assert raised.value.message.startswith("unreadable BatchCreateRequest: ")
    assert raised.value.details == []


def list_profiles(request: ListRequest) -> None:
    FakePug().handle_stream(LIST, bytes(request))


def test_no_enum_rule_on_filter_group_operators() -> None:
    # The contract gives FilterGroup.operator and filter_groups_operator no rule: an
    # unknown operator is accepted, as protovalidate accepts it.
    name = PropertyFilter(property="plan", operator=FilterOperator.EQUALS, value="pro")
    group = FilterGroup(filters=[name], operator=LogicalOperator.AND)
    body = bytes(ListRequest(filter_groups=[group]))
    body += bytes([3 << 3, 9])  # filter_groups_operator = 9
    FakePug().handle_stream(LIST, body)
    group_bytes = bytes(group) + bytes([2 << 3, 9])  # FilterGroup.operator = 9
    FakePug().handle_stream(LIST, field(2, group_bytes))


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1", 1.0), ("-1.5e3", -1500.0), (".5", 0.5), ("5.", 5.0), ("1_000", 1000.0),
        ("0x1p4", 16.0), ("0x_1.8p1", 3.0), ("Inf", float("inf")), ("-infinity", -float("inf")),
        (" 1", None), ("1 ", None), ("١٢", None), ("1__0", None), ("_1", None), ("1_", None),
        ("0x1", None), ("1e", None), ("1e400", None), ("+nan", None), ("", None), (".", None),
        ("1e_1", None), ("0x.p1", None), ("١", None), ("٫5", None), ("infinit", None),
    ],
)  # fmt: skip
def test_numbers_are_read_as_go_reads_them(text: str, number: float | None) -> None:
    assert values.go_float(text) == number


@pytest.mark.parametrize("text", [" 1", "١٢", "1 "])
def test_a_comparison_needs_a_number_go_reads(text: str) -> None:
    bad = PropertyFilter(property="age", operator=FilterOperator.GT, value=text)
    with pytest.raises(PugError) as raised:
        list_profiles(ListRequest(filter_groups=[FilterGroup(filters=[bad])]))
    assert raised.value.code == "invalid_argument"
    assert [d["rule_id"] for d in raised.value.details] == [  # type: ignore[index]
        "property_filter.numeric_value_required"
    ]


def test_a_batch_rule_is_reported_once_at_the_request() -> None:
    cookieless = Event(event_id=str(uuid.uuid4()), kind="k", cookieless=True, distinct_id="d")
    request = BatchCreateRequest(events=[cookieless, cookieless])
    with pytest.raises(InvalidArgumentError) as raised:
        FakePug().handle(BATCH_CREATE, bytes(request))
    batch_rules = [d for d in raised.value.details if d["rule_id"].startswith("batch.")]  # type: ignore[index]
    assert batch_rules == [
        {
            "field": "",
            "rule_id": "batch.cookieless_identity_server_owned",
            "message": "cookieless events must not send distinct_id or session_id",
        }
    ]
