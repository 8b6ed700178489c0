"""Golden encodings: what `Pug.track`/`Pug.identify` put on the wire, decoded by Google's protobuf.

The SDK writes protobuf by hand (pug/_wire/protobuf.py, framed by pug/_ingest/encode.py).
Google's runtime, built by protoc from
catalog/proto (see conftest.py), is an independent decoder of the same bytes, so every test
here drives the public client through the in-memory transport, decodes the recorded request
body with Google's classes and compares with literal expected values taken from WIRE.md
(the property value mapping table, the Event the SDK must send, the identify traits rules).
The betterproto2 stubs decode the same bytes once more, and must agree with Google.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import math
import os
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import betterproto2
import pug
import pytest
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as GoogleMessage
from hypothesis import example, given, settings
from hypothesis import strategies as st
from protoc_helpers import GoogleMessages
from pug import Pug, ids
from pug._ingest import encode
from pug._ingest.encode import EventEncoder
from pug._wire import protobuf as pb
from pug.event import Variant
from pug.events import Purchase
from pug.proto.sdk.events.v1 import BatchCreateRequest
from pug.testing import InMemoryTransport
from pug.transports.base import BATCH_CREATE, IDENTIFY

UTC = datetime.UTC
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
MAX_STRING_BYTES = 1024
AUTO_PROPERTIES = {"$lib": "pug-python", "$sdkVersion": pug.__version__, "$platform": "server"}


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def pug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of the `pug` logger, DEBUG and up (so "silently" can be checked)."""
    with caplog.at_level(logging.DEBUG, logger="pug"):
        yield caplog


def pug_messages(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pug" and r.levelno >= level]


def bodies(transport: InMemoryTransport, method: str) -> list[bytes]:
    return [body for m, body in transport.requests if m == method]


def google_events(transport: InMemoryTransport, google_pb2: GoogleMessages) -> list[Any]:
    """Every delivered Event, decoded by Google's protobuf, in order."""
    request_class = google_pb2["sdk.events.v1.BatchCreateRequest"]
    return [
        event
        for body in bodies(transport, BATCH_CREATE)
        for event in request_class.FromString(body).events
    ]


def track_one(
    client: Pug,
    transport: InMemoryTransport,
    google_pb2: GoogleMessages,
    properties: dict[Any, Any] | None,
    **kwargs: Any,
) -> Any:
    """Track one event, deliver it and return it as Google decoded it."""
    client.track("user_1", "kind.x", properties, **kwargs)
    assert client.flush(5)
    [event] = google_events(transport, google_pb2)
    return event


def timestamp_parts(ts: GoogleMessage) -> tuple[int, int]:
    return ts.seconds, ts.nanos  # type: ignore[attr-defined]


def datetime_of(ts: GoogleMessage) -> datetime.datetime:
    seconds, nanos = timestamp_parts(ts)
    return EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)


def google_value(value: GoogleMessage) -> tuple[str, Any]:
    """(variant name, Python value) of a Google PropertyValue; timestamps as UTC datetimes."""
    variant = value.WhichOneof("value")
    assert variant is not None, "a PropertyValue must have one variant set"
    if variant == "timestamp_value":
        return variant, datetime_of(value.timestamp_value)  # type: ignore[attr-defined]
    return variant, getattr(value, variant)


def google_map(properties: Any) -> dict[str, tuple[str, Any]]:
    return {key: google_value(value) for key, value in properties.items()}


def expected_truncation(text: str, limit: int = MAX_STRING_BYTES) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `limit` bytes.

    Written as a plain character loop, independent of the encoder's slice-and-decode.
    """
    size = 0
    for index, char in enumerate(text):
        size += len(char.encode())
        if size > limit:
            return text[:index]
    return text


# --- the property value table --------------------------------------------------------------

ABOVE_INT64_WARNING = "property 'p': integer outside int64 sent as a double"

# (value, expected (variant, value) or None when the property is left out, expected logs)
PROPERTY_ROWS = [
    pytest.param("hello", ("string_value", "hello"), [], id="str"),
    pytest.param("", ("string_value", ""), [], id="empty str is set"),
    pytest.param(True, ("bool_value", True), [], id="True is a bool"),
    pytest.param(False, ("bool_value", False), [], id="False is a bool, set"),
    pytest.param(1, ("int_value", 1), [], id="1 is an int"),
    pytest.param(0, ("int_value", 0), [], id="0 is an int, set"),
    pytest.param(-42, ("int_value", -42), [], id="negative int"),
    pytest.param(2**63 - 1, ("int_value", 2**63 - 1), [], id="int64 max"),
    pytest.param(-(2**63), ("int_value", -(2**63)), [], id="int64 min"),
    pytest.param(2**63, ("double_value", 2.0**63), [ABOVE_INT64_WARNING], id="int64 max + 1"),
    pytest.param(
        -(2**63) - 1, ("double_value", -(2.0**63)), [ABOVE_INT64_WARNING], id="int64 min - 1"
    ),
    pytest.param(1.5, ("double_value", 1.5), [], id="float"),
    pytest.param(49.0, ("double_value", 49.0), [], id="whole float stays a double"),
    pytest.param(0.0, ("double_value", 0.0), [], id="0.0 is set"),
    pytest.param(
        float("nan"), None, ["property 'p' left out: nan is not a finite number"], id="nan"
    ),
    pytest.param(
        float("inf"), None, ["property 'p' left out: inf is not a finite number"], id="inf"
    ),
    pytest.param(
        float("-inf"), None, ["property 'p' left out: -inf is not a finite number"], id="-inf"
    ),
    pytest.param({"a": 1}, ("string_value", '{"a":1}'), [], id="dict as compact JSON"),
    pytest.param([1, "a", None], ("string_value", '[1,"a",null]'), [], id="list as JSON"),
    pytest.param(
        {"a": {"b": [1, 2.5, True]}},
        ("string_value", '{"a":{"b":[1,2.5,true]}}'),
        [],
        id="nested containers as JSON",
    ),
    pytest.param(
        {"a": decimal.Decimal("NaN"), "b": [decimal.Decimal("-Infinity"), decimal.Decimal("2.5")]},
        ("string_value", '{"a":null,"b":[null,2.5]}'),
        [],
        id="nested Decimal NaN and Infinity as null",
    ),
    pytest.param(
        {"k\ud800": ["x\udfffy", "NaN"]},
        ("string_value", '{"k?":["x?y","NaN"]}'),
        [],
        id="nested lone surrogates replaced",
    ),
    pytest.param(
        datetime.date(2024, 5, 17),
        ("timestamp_value", datetime.datetime(2024, 5, 17, tzinfo=UTC)),
        [],
        id="date is midnight UTC",
    ),
    pytest.param(None, None, [], id="None left out silently"),
    pytest.param(
        object(),
        None,
        ["property 'p' left out: values of type object cannot be sent"],
        id="object left out",
    ),
    pytest.param(
        b"raw",
        None,
        ["property 'p' left out: values of type bytes cannot be sent"],
        id="bytes left out",
    ),
    pytest.param(
        2**1024,
        None,
        ["property 'p' left out: the integer is too large even for a double"],
        id="int beyond double",
    ),
]


@pytest.mark.parametrize(("value", "expected", "logs"), PROPERTY_ROWS)
def test_property_value_mapping(
    client: Pug,
    transport: InMemoryTransport,
    google_pb2: GoogleMessages,
    pug_logs: pytest.LogCaptureFixture,
    value: object,
    expected: tuple[str, Any] | None,
    logs: list[str],
) -> None:
    # A neighbour property shows that a left-out value costs only its own key.
    event = track_one(client, transport, google_pb2, {"p": value, "other": "kept"})

    custom = google_map(event.custom_properties)
    assert custom.pop("other") == ("string_value", "kept")
    if expected is None:
        assert custom == {}
    else:
        variant, wanted = expected
        assert custom == {"p": expected}
        # == would let True pass for 1 and 1 for 1.0: the Python type must match too.
        assert type(custom["p"][1]) is type(wanted)
        assert event.custom_properties["p"].WhichOneof("value") == variant
    assert pug_messages(pug_logs) == logs


# Regression: float() of an int in [2**1024 - 2**970, 2**1024) raises OverflowError rather
# than giving inf, which used to drop the whole event instead of one property.
def test_int_just_below_2_to_1024_is_left_out_not_the_event(
    client: Pug,
    transport: InMemoryTransport,
    google_pb2: GoogleMessages,
    pug_logs: pytest.LogCaptureFixture,
) -> None:
    client.track("user_1", "kind.x", {"p": 2**1024 - 1, "other": "kept"})
    assert client.flush(5)

    [event] = google_events(transport, google_pb2)
    assert google_map(event.custom_properties) == {"other": ("string_value", "kept")}
    assert pug_messages(pug_logs) == [
        "property 'p' left out: the integer is too large even for a double"
    ]


def test_event_without_properties_has_empty_map(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    event = track_one(client, transport, google_pb2, None)
    assert dict(event.custom_properties) == {}


def test_empty_string_key_is_sent_as_is(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    event = track_one(client, transport, google_pb2, {"": "empty key"})
    assert google_map(event.custom_properties) == {"": ("string_value", "empty key")}


# --- datetimes -----------------------------------------------------------------------------

PLUS_2 = datetime.timezone(datetime.timedelta(hours=2))
# 2024-05-17T12:30:45.123456Z, in seconds since the epoch.
NOON_SECONDS = 1715949045


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(datetime.datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC), id="UTC"),
        pytest.param(datetime.datetime(2024, 5, 17, 14, 30, 45, 123456, tzinfo=PLUS_2), id="+02"),
        pytest.param(datetime.datetime(2024, 5, 17, 12, 30, 45, 123456), id="naive is UTC"),
    ],
)
def test_datetime_property_is_a_timestamp_with_microseconds(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages, value: datetime.datetime
) -> None:
    event = track_one(client, transport, google_pb2, {"at": value})

    pv = event.custom_properties["at"]
    assert pv.WhichOneof("value") == "timestamp_value"
    assert timestamp_parts(pv.timestamp_value) == (NOON_SECONDS, 123_456_000)


def test_datetime_before_the_epoch(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    # Half a second before the epoch: protobuf wants seconds -1 and a positive nanos.
    value = datetime.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    event = track_one(client, transport, google_pb2, {"at": value})
    assert timestamp_parts(event.custom_properties["at"].timestamp_value) == (-1, 500_000_000)


# --- strings: the 1024-byte cut at a character boundary ------------------------------------

WIDE_CHARS = [
    pytest.param("a", id="ascii"),
    pytest.param("é", id="2-byte"),
    pytest.param("中", id="3-byte"),
    pytest.param("😀", id="4-byte"),
]


@pytest.mark.parametrize("char", WIDE_CHARS)
@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_long_string_is_cut_to_1024_bytes_at_a_character_boundary(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages, char: str, offset: int
) -> None:
    # ASCII bytes in front move the 1024-byte boundary to every position inside `char`.
    text = "x" * offset + char * 1100
    event = track_one(client, transport, google_pb2, {"s": text})

    sent = event.custom_properties["s"].string_value
    assert sent == expected_truncation(text)
    assert len(sent.encode()) <= MAX_STRING_BYTES
    # The cut keeps as much as fits: one more character would not.
    assert len(text[: len(sent) + 1].encode()) > MAX_STRING_BYTES


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a" * 1024, id="ascii"),
        pytest.param("é" * 512, id="2-byte"),
        pytest.param("中" * 341 + "a", id="3-byte"),
        pytest.param("😀" * 256, id="4-byte"),
    ],
)
def test_string_of_exactly_1024_bytes_is_kept_whole(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages, text: str
) -> None:
    assert len(text.encode()) == MAX_STRING_BYTES
    event = track_one(client, transport, google_pb2, {"s": text})
    assert event.custom_properties["s"].string_value == text


def test_nested_value_json_is_cut_like_any_string(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    value = {"items": ["中文" * 10] * 50}
    event = track_one(client, transport, google_pb2, {"v": value})

    full_json = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert event.custom_properties["v"].string_value == expected_truncation(full_json)


def test_google_rejects_invalid_utf8_in_strings(google_pb2: GoogleMessages) -> None:
    # Why the surrogate test below matters: a lone surrogate sent as raw bytes would make
    # the whole request undecodable. PropertyValue{string_value: b"\xed\xa0\x80"}.
    with pytest.raises(DecodeError):
        google_pb2["common.v1.PropertyValue"].FromString(b"\x0a\x03\xed\xa0\x80")


def test_lone_surrogates_still_produce_valid_utf8(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    client.track("user\udfff", "kind.x", {"s": "ok\ud800ok", "key\ud800": 1})
    assert client.flush(5)

    # FromString raises DecodeError if any string on the wire is not valid UTF-8.
    [event] = google_events(transport, google_pb2)
    # One replacement character per surrogate ('?' or U+FFFD); the rest is intact.
    replaced = {"?", "\ufffd"}
    assert event.distinct_id[:4] == "user" and event.distinct_id[4:] in replaced
    value = event.custom_properties["s"].string_value
    assert value[:2] == value[3:] == "ok" and value[2] in replaced
    [key] = [k for k in event.custom_properties if k != "s"]
    assert key[:3] == "key" and key[3:] in replaced


# --- the Event itself ----------------------------------------------------------------------


def uuid7_millis(value: str) -> int:
    """The 48-bit Unix-millisecond timestamp at the front of a UUIDv7."""
    return uuid.UUID(value).int >> 80


def millis(ts: GoogleMessage) -> int:
    seconds, nanos = timestamp_parts(ts)
    return seconds * 1000 + nanos // 1_000_000


def test_event_fields(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    before = time.time_ns()
    client.track("user_1", "kind.x", {"a": 1, "b": "two"})
    after = time.time_ns()
    assert client.flush(5)

    [event] = google_events(transport, google_pb2)
    assert event.event_id == event.event_id.lower()
    assert uuid.UUID(event.event_id).version == 7
    assert uuid7_millis(event.event_id) == millis(event.occur_time)
    assert event.distinct_id == "user_1"
    assert event.kind == "kind.x"
    occur_ns = event.occur_time.seconds * 1_000_000_000 + event.occur_time.nanos
    # "Now" is stamped to the millisecond, like the official SDKs (WIRE.md).
    assert event.occur_time.nanos % 1_000_000 == 0
    assert before // 1_000_000 * 1_000_000 <= occur_ns <= after
    assert event.session_id == client.session_id
    assert uuid.UUID(client.session_id).version == 7
    assert google_map(event.auto_properties) == {
        key: ("string_value", value) for key, value in AUTO_PROPERTIES.items()
    }
    assert google_map(event.custom_properties) == {
        "a": ("int_value", 1),
        "b": ("string_value", "two"),
    }
    assert not event.HasField("cookieless")


def test_each_event_gets_its_own_id(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    for _ in range(50):
        client.track("user_1", "kind.x")
    assert client.flush(5)
    events = google_events(transport, google_pb2)
    assert len({event.event_id for event in events}) == 50


MINUS_5 = datetime.timezone(datetime.timedelta(hours=-5))


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(datetime.datetime(2024, 5, 17, 7, 30, 45, 123456, tzinfo=MINUS_5), id="aware"),
        pytest.param(datetime.datetime(2024, 5, 17, 12, 30, 45, 123456), id="naive is UTC"),
    ],
)
def test_given_timestamp_is_the_occur_time(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages, given: datetime.datetime
) -> None:
    event = track_one(client, transport, google_pb2, None, timestamp=given)

    assert timestamp_parts(event.occur_time) == (NOON_SECONDS, 123_456_000)
    # The event id carries the same instant, to the millisecond.
    assert uuid7_millis(event.event_id) == NOON_SECONDS * 1000 + 123


def test_epoch_timestamp_is_honoured_and_set(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    event = track_one(client, transport, google_pb2, None, timestamp=EPOCH)
    # An all-zero Timestamp must still be present: the server requires occur_time.
    assert event.HasField("occur_time")
    assert timestamp_parts(event.occur_time) == (0, 0)


@pytest.mark.parametrize("make", [str, lambda u: str(u).upper()], ids=["lower", "upper"])
def test_given_session_id_replaces_the_clients(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages, make: Any
) -> None:
    session_id = make(uuid.uuid4())
    event = track_one(client, transport, google_pb2, None, session_id=session_id)
    assert event.session_id == session_id


def test_typed_event_uses_wire_names_and_declared_types(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    client.track("u", Purchase(product_id="p", amount=50, quantity=0))
    assert client.flush(5)

    [event] = google_events(transport, google_pb2)
    assert event.kind == "purchase"
    custom = google_map(event.custom_properties)
    # amount is a double field given an int: 50.0 as a double; quantity 0 is set, so sent.
    assert custom == {
        "productId": ("string_value", "p"),
        "amount": ("double_value", 50.0),
        "quantity": ("int_value", 0),
    }
    assert type(custom["amount"][1]) is float


def test_typed_event_with_extra_properties(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    client.track("u", Purchase(product_id="p", amount=9.5), {"coupon": "SPRING", "n": 2})
    assert client.flush(5)

    [event] = google_events(transport, google_pb2)
    assert google_map(event.custom_properties) == {
        "productId": ("string_value", "p"),
        "amount": ("double_value", 9.5),
        "coupon": ("string_value", "SPRING"),
        "n": ("int_value", 2),
    }


# --- Google and betterproto2 read the same bytes the same way -------------------------------


def betterproto_value(value: Any) -> tuple[str, Any]:
    variant, inner = betterproto2.which_one_of(value, "value")
    if isinstance(inner, datetime.datetime) and inner.tzinfo is None:
        inner = inner.replace(tzinfo=UTC)
    return variant, inner


def betterproto_view(event: Any) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "distinct_id": event.distinct_id,
        "kind": event.kind,
        "session_id": event.session_id,
        "occur_time": event.occur_time,
        "cookieless": event.cookieless,
        "auto": {k: betterproto_value(v) for k, v in event.auto_properties.items()},
        "custom": {k: betterproto_value(v) for k, v in event.custom_properties.items()},
    }


def google_view(event: Any) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "distinct_id": event.distinct_id,
        "kind": event.kind,
        "session_id": event.session_id,
        "occur_time": datetime_of(event.occur_time),
        "cookieless": event.cookieless if event.HasField("cookieless") else None,
        "auto": google_map(event.auto_properties),
        "custom": google_map(event.custom_properties),
    }


def test_google_and_betterproto2_decode_batches_alike(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    at = datetime.datetime(2023, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    client.track("u1", "signup", {"plan": "pro", "seats": 3, "ok": True})
    client.track("u2", "kind.y", {"price": 9.99, "big": -(2**63), "when": at}, timestamp=at)
    client.track("u3", Purchase(product_id="p", amount=1, quantity=0), {"extra": [1, 2]})
    client.track(
        "u4",
        "kind.z",
        {"long": "é" * 900, "before": datetime.datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC)},
        session_id=str(uuid.uuid4()),
    )
    assert client.flush(5)

    request_class = google_pb2["sdk.events.v1.BatchCreateRequest"]
    seen = 0
    for body in bodies(transport, BATCH_CREATE):
        from_google = [google_view(e) for e in request_class.FromString(body).events]
        from_betterproto = [betterproto_view(e) for e in BatchCreateRequest.parse(body).events]
        assert from_google == from_betterproto
        seen += len(from_google)
    assert seen == 4


# --- identify ------------------------------------------------------------------------------


def struct_view(struct: Any) -> dict[str, Any]:
    return {key: struct_value_view(value) for key, value in struct.fields.items()}


def struct_value_view(value: Any) -> Any:
    """A google.protobuf.Value as plain JSON-like data, keeping the kind apart."""
    kind = value.WhichOneof("kind")
    if kind == "null_value":
        return None
    if kind == "struct_value":
        return struct_view(value.struct_value)
    if kind == "list_value":
        return [struct_value_view(item) for item in value.list_value.values]
    assert kind in ("number_value", "string_value", "bool_value"), kind
    return getattr(value, kind)


def test_identify_traits_are_a_struct(
    client: Pug,
    transport: InMemoryTransport,
    google_pb2: GoogleMessages,
    pug_logs: pytest.LogCaptureFixture,
) -> None:
    when = datetime.datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)
    traits = {
        "age": 36,
        "name": "Ada",
        "vip": True,
        "none": None,
        "nested": {"x": [1, "a", None]},
        "when": when,
        "nan": float("nan"),
        "obj": object(),
    }
    client.identify("user_1", traits, anonymous_id="anon-1", device_id="dev-1")
    assert client.flush(5)

    [body] = bodies(transport, IDENTIFY)
    request = google_pb2["sdk.profiles.v1.IdentifyRequest"].FromString(body)
    assert request.external_id == "user_1"
    assert request.anonymous_id == "anon-1"
    assert request.device_id == "dev-1"
    view = struct_view(request.traits)
    # JSON keeps 36.0 apart from 36 and true apart from 1, which == would not.
    assert json.dumps(view, sort_keys=True) == json.dumps(
        {
            "age": 36.0,
            "name": "Ada",
            "vip": True,
            "none": None,
            "nested": {"x": [1.0, "a", None]},
            "when": "2024-05-17T12:30:45.123456+00:00",
        },
        sort_keys=True,
    )
    fields = request.traits.fields
    assert fields["age"].WhichOneof("kind") == "number_value"
    assert fields["none"].WhichOneof("kind") == "null_value"
    assert fields["nested"].WhichOneof("kind") == "struct_value"
    assert fields["nested"].struct_value.fields["x"].WhichOneof("kind") == "list_value"
    assert pug_messages(pug_logs) == [
        "property 'nan' left out: nan is not a finite number",
        "property 'obj' left out: values of type object cannot be sent",
    ]


def test_identify_without_optional_fields(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    client.identify("user_1")
    assert client.flush(5)

    [body] = bodies(transport, IDENTIFY)
    request = google_pb2["sdk.profiles.v1.IdentifyRequest"].FromString(body)
    assert request.external_id == "user_1"
    assert not request.HasField("traits")
    assert not request.HasField("anonymous_id")
    assert not request.HasField("device_id")


# Regression: the same OverflowError used to drop the whole identify.
def test_trait_int_just_below_2_to_1024_is_left_out_not_the_identify(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    client.identify("user_1", {"big": 2**1024 - 1, "name": "Ada"})
    assert client.flush(5)

    [body] = bodies(transport, IDENTIFY)
    request = google_pb2["sdk.profiles.v1.IdentifyRequest"].FromString(body)
    assert struct_view(request.traits) == {"name": "Ada"}


# Regression: float(Decimal('sNaN')) raises ValueError, which used to drop the whole identify.
def test_trait_signaling_nan_decimal_is_left_out_not_the_identify(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    client.identify("user_1", {"d": decimal.Decimal("sNaN"), "name": "Ada"})
    assert client.flush(5)

    [body] = bodies(transport, IDENTIFY)
    request = google_pb2["sdk.profiles.v1.IdentifyRequest"].FromString(body)
    assert struct_view(request.traits) == {"name": "Ada"}


# --- BatchCreateResponse -------------------------------------------------------------------


def batch_response(google_pb2: GoogleMessages, **fields: Any) -> bytes:
    return google_pb2["sdk.events.v1.BatchCreateResponse"](**fields).SerializeToString()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"accepted": 3, "dropped": 2, "dropped_by_reason": {"invalid": 2}},
            (3, 2, {"invalid": 2}),
            id="with drops",
        ),
        pytest.param(
            {"accepted": 0, "dropped": 5, "dropped_by_reason": {"a": 1, "b": 4}},
            (0, 5, {"a": 1, "b": 4}),
            id="several reasons, accepted 0 set",
        ),
        pytest.param({"accepted": 1000}, (1000, 0, {}), id="all accepted"),
        pytest.param({}, (0, 0, {}), id="empty"),
    ],
)
def test_parse_batch_response(
    google_pb2: GoogleMessages, fields: dict[str, Any], expected: tuple[int, int, dict[str, int]]
) -> None:
    assert pb.parse_batch_response(batch_response(google_pb2, **fields)) == expected


@pytest.mark.parametrize("count", [0, 1, 127, 128, 1000, 2**32 - 1])
def test_accepted_is_the_batch_create_response_protobuf_writes(
    google_pb2: GoogleMessages, count: int
) -> None:
    assert pb.accepted(count) == batch_response(google_pb2, accepted=count, dropped=0)


def test_server_drops_are_logged_and_counted(
    google_pb2: GoogleMessages, caplog: pytest.LogCaptureFixture
) -> None:
    response = batch_response(google_pb2, accepted=3, dropped=2, dropped_by_reason={"invalid": 2})

    def handler(method: str, body: bytes) -> bytes:
        return response if method == BATCH_CREATE else b""

    client = Pug(api_key="prv_test", transport=InMemoryTransport(handler=handler))
    try:
        with caplog.at_level(logging.WARNING, logger="pug"):
            for n in range(5):
                client.track("u", "kind.x", {"n": n})
            assert client.flush(5)
        assert client.stats().dropped_by_server == {"invalid": 2}
    finally:
        client.close()
    assert pug_messages(caplog, logging.WARNING) == [
        "the server dropped 2 of 5 events: {'invalid': 2}"
    ]


def test_no_warning_when_the_server_drops_nothing(
    client: Pug, transport: InMemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        client.track("u", "kind.x", {"n": 1})
        assert client.flush(5)
    assert pug_messages(caplog, logging.WARNING) == []
    assert client.stats().dropped_by_server == {}


def test_property_doubles_are_finite_on_the_wire(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    # Every non-finite input in one event: none may reach the wire as a double.
    values = {"a": math.nan, "b": math.inf, "c": -math.inf, "d": 1e308, "e": -0.0}
    event = track_one(client, transport, google_pb2, values)
    custom = google_map(event.custom_properties)
    assert custom == {"d": ("double_value", 1e308), "e": ("double_value", -0.0)}
    assert math.copysign(1.0, custom["e"][1]) == -1.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_does_not_continue_the_parents_run_of_ids(
    monkeypatch: pytest.MonkeyPatch, google_pb2: GoogleMessages
) -> None:
    # Ids of one millisecond come from a counter (RFC 9562's monotonic random): a child
    # that kept the parent's counter would make the parent's next ids. The clock is
    # pinned so parent and child are in the same millisecond.
    monkeypatch.setattr(encode, "_time_ns", lambda: 1_790_000_000_123_456_789)
    client = Pug(api_key="prv_test", transport=InMemoryTransport())  # reset at fork
    encoder = client._core.encoder
    event_now(encoder)  # the parent starts a run for this millisecond
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.write(write_fd, event_now(client._core.encoder))
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        child_entry = pipe.read()
    os.waitpid(pid, 0)
    parent_entry = event_now(encoder)
    client.close()

    batch = google_pb2["sdk.events.v1.BatchCreateRequest"]
    (child,) = batch.FromString(child_entry).events
    (parent,) = batch.FromString(parent_entry).events
    assert child.occur_time == parent.occur_time  # the same millisecond
    assert child.event_id != parent.event_id
    assert {uuid.UUID(e.event_id).version for e in (child, parent)} == {7}


# --- event ids: RFC 9562 UUIDv7, random bits the application cannot seed ------------------

# The 74 random bits of a UUIDv7 as an int: rand_a (12 bits) and rand_b (62 bits).
RANDOM_BITS = (0xFFF << 64) | ((1 << 62) - 1)
PINNED_MS = 1_790_000_000_123


def new_encoder() -> EventEncoder:
    """An encoder of its own: its own caches and run of ids."""
    return EventEncoder("0190a9d2-7a00-7cc1-8a5b-2f0e6c1d9e01", {})


def event_now(encoder: EventEncoder) -> bytes:
    """One framed event of `encoder`, happening now (the clock as the test pins it)."""
    entry = encoder.encode_now("user_1", "kind.x", None)
    assert entry is not None
    return entry


@pytest.fixture
def global_random_restored() -> Iterator[None]:
    """Tests here seed the application's `random`: give the next test its state back."""
    state = random.getstate()
    yield
    random.setstate(state)


def assert_uuid7(value: str, unix_ms: int) -> uuid.UUID:
    """`value` is a lowercase canonical RFC 9562 UUIDv7 of `unix_ms`, per Python's uuid."""
    parsed = uuid.UUID(value)
    assert str(parsed) == value  # lowercase, 8-4-4-4-12
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122  # the 0b10 variant of RFC 9562
    assert parsed.int >> 80 == unix_ms  # unix_ts_ms: the first 48 bits
    return parsed


def run_ids(unix_ms: int, n: int) -> list[str]:
    """`n` ids of one millisecond from a new counter run, as `EventEncoder` makes them."""
    head, counter = ids.uuid7_run(unix_ms)
    return [(head + b"%012x" % next(counter)).decode() for _ in range(n)]


@pytest.mark.parametrize("unix_ms", [0, 1, 0xFFFF, 0x10000, PINNED_MS, 2**48 - 1])
def test_uuid7_layout_is_rfc_9562_version_7(unix_ms: int) -> None:
    made = [ids.uuid7(unix_ms) for _ in range(500)] + run_ids(unix_ms, 5)
    parsed = [assert_uuid7(value, unix_ms) for value in made]
    assert len(set(made)) == len(made)
    # Every one of the 74 random bits varies (none stuck at 0 or 1 by a wrong mask).
    ones, zeros = 0, RANDOM_BITS
    for u in parsed[:500]:
        ones |= u.int & RANDOM_BITS
        zeros &= u.int & RANDOM_BITS
    assert (ones, zeros) == (RANDOM_BITS, 0)


def test_uuid7_before_1970_has_a_zero_timestamp() -> None:
    assert_uuid7(ids.uuid7(-5), 0)
    assert_uuid7(run_ids(-5, 1)[0], 0)


def test_uuid7_runs_count_up_from_a_random_start() -> None:
    # RFC 9562 section 6.2, method 1: the counter is rand_b's low 48 bits, seeded at random
    # below 2**47 so it cannot overflow into the variant digit.
    starts = set()
    for _ in range(200):
        values = [assert_uuid7(v, PINNED_MS).int for v in run_ids(PINNED_MS, 3)]
        assert values == sorted(values) and values[2] - values[0] == 2
        starts.add(values[0] & ((1 << 48) - 1))
        assert values[0] & ((1 << 48) - 1) < 2**47
    assert len(starts) == 200


@pytest.mark.usefixtures("global_random_restored")
def test_event_ids_do_not_follow_the_applications_random_seed(
    google_pb2: GoogleMessages,
) -> None:
    # Two clients, each made after the same random.seed(), tracking at the same instant:
    # ids from the global `random` would be the same twice, and storage would keep one.
    given_time = datetime.datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    events = []
    sessions = []
    for _ in range(2):
        random.seed(0)
        transport = InMemoryTransport()
        with Pug(api_key="prv_test", transport=transport) as client:
            random.seed(0)
            client.track("user_1", "kind.x", timestamp=given_time)
            assert client.flush(5)
            sessions.append(client.session_id)
        events += google_events(transport, google_pb2)
    first, second = events
    assert first.event_id != second.event_id
    assert sessions[0] != sessions[1]
    for event in events:
        assert_uuid7(event.event_id, int(given_time.timestamp() * 1000))
    # The same for the ids' building blocks, one millisecond at a time.
    random.seed(0)
    one = [ids.uuid7(PINNED_MS), *run_ids(PINNED_MS, 1)]
    random.seed(0)
    two = [ids.uuid7(PINNED_MS), *run_ids(PINNED_MS, 1)]
    assert not set(one) & set(two)


@pytest.mark.usefixtures("global_random_restored")
def test_event_now_ids_do_not_follow_the_applications_random_seed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fast path's run of one millisecond, started twice after the same seed.
    monkeypatch.setattr(encode, "_time_ns", lambda: PINNED_MS * 1_000_000 + 456_789)
    made = []
    for _ in range(2):
        encoder = new_encoder()  # a new run of this millisecond
        random.seed(0)
        made.append(event_now(encoder))
    (first,), (second,) = (BatchCreateRequest.parse(entry).events for entry in made)
    assert first.event_id != second.event_id
    for event in (first, second):
        assert_uuid7(event.event_id, PINNED_MS)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
@pytest.mark.usefixtures("global_random_restored")
def test_ids_of_one_millisecond_are_unique_across_a_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    # Parent and child make ids for the same millisecond after a real os.fork(), each
    # seeding `random` alike after it (as a worker that wants reproducible randomness
    # does): every id of the two processes must differ.
    monkeypatch.setattr(encode, "_time_ns", lambda: PINNED_MS * 1_000_000 + 456_789)
    client = Pug(api_key="prv_test", transport=InMemoryTransport())  # reset at fork
    event_now(client._core.encoder)  # the parent's run of this millisecond, before the fork

    def make() -> list[str]:
        random.seed(0)
        entries = [event_now(client._core.encoder) for _ in range(50)]
        made = [e.event_id for entry in entries for e in BatchCreateRequest.parse(entry).events]
        return made + [ids.uuid7(PINNED_MS) for _ in range(50)] + run_ids(PINNED_MS, 50)

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_fd)
            os.write(write_fd, "\n".join(make()).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        child = pipe.read().decode().split("\n")
    _, status = os.waitpid(pid, 0)
    assert status == 0
    parent = make()
    client.close()

    assert len(child) == len(parent) == 150
    assert len(set(child) | set(parent)) == 300
    for value in child + parent:
        assert_uuid7(value, PINNED_MS)


@settings(max_examples=300, deadline=None)
@given(
    key=st.text(min_size=1, max_size=90),
    value=st.one_of(
        st.text(max_size=300),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
)
# Around where the one-byte lengths stop (the map entry's at 127 bytes, the value's at 125).
@example(key="a", value="x" * 120)
@example(key="a", value="x" * 121)
@example(key="a", value="x" * 125)
@example(key="a", value="x" * 126)
@example(key="k" * 60, value="x" * 60)
@example(key="k" * 60, value="x" * 61)
@example(key="a", value=-0.0)
def test_a_first_seen_value_encodes_as_the_generic_entry(
    google_pb2: GoogleMessages, key: str, value: str | float
) -> None:
    # A value the entry cache has not seen takes the short path (what its key decides,
    # reused); it must write the generic encoder's bytes exactly, for any length.
    variant = Variant.STRING if isinstance(value, str) else Variant.DOUBLE
    encoded = new_encoder().new_entry(key, variant, value)
    assert encoded == pb.entry(pb.CUSTOM, key, variant, value)
    event = google_pb2["sdk.events.v1.Event"].FromString(encoded)
    (decoded_key,) = event.custom_properties
    assert decoded_key == pb.utf8(key).decode()
    decoded = event.custom_properties[decoded_key]
    if isinstance(value, str):
        assert decoded.string_value == pb.utf8(value, pb.MAX_STRING_BYTES).decode()
    else:
        assert decoded.double_value == value
        assert math.copysign(1, decoded.double_value) == math.copysign(1, value)
