"""track()/identify() never raise on odd input, and nothing they send can break a server rule.

The server validates every request against the contract and rejects a whole batch for one
bad event (WIRE.md), so the SDK must check each event before batching. The hypothesis test
throws arbitrary ids, kinds and property values at a non-strict client and checks every
event that reaches a batch, decoded by Google's protobuf, against every rule of the
contract; events that were valid must all arrive. The other tests pin each rule's exact
log message (non-strict) and exception (strict), and identify's rules.

The rules are written here as the server reads them: its patterns are Go (RE2) regexps,
where `$` matches only at the very end, so the checks use `re.fullmatch`.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import enum
import json
import logging
import math
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protoc_helpers import GoogleMessages
from pug import AsyncPug, BatchConfig, Pug, PugValidationError
from pug.event import PugEvent, registered_events
from pug.events import FeatureUsed
from pug.proto.sdk.events.v1 import BatchCreateRequest
from pug.testing import FakePug, InMemoryTransport
from pug.transports.base import BATCH_CREATE, IDENTIFY
from test_wire_encoding import betterproto_view, google_view

KIND_RULE = re.compile(r"[a-zA-Z0-9_.-]+")
UUID_RULE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
MAX_STRING_BYTES = 1024
MAX_EVENTS_PER_REQUEST = 1000


# --- the contract, checked on what reached the wire ----------------------------------------


def raw_fields(data: bytes) -> list[tuple[int, bytes | int]]:
    """(field number, value) of each field of a protobuf message, in wire order.

    A few lines of our own rather than pug._wire.protobuf's reader: Google's parser lets the last
    member of a oneof win, so only the raw fields show whether a value has two variants.
    """
    out: list[tuple[int, bytes | int]] = []
    pos = 0

    def read_varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    while pos < len(data):
        key = read_varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            out.append((number, read_varint()))
        elif wire_type == 1:
            out.append((number, data[pos : pos + 8]))
            pos += 8
        elif wire_type == 2:
            length = read_varint()
            out.append((number, data[pos : pos + length]))
            pos += length
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
    return out


def assert_one_variant_per_value(batch_body: bytes) -> None:
    """Every PropertyValue in the batch carries exactly one oneof member on the wire."""
    for number, event in raw_fields(batch_body):
        assert number == 1 and isinstance(event, bytes)
        for field_number, entry in raw_fields(event):
            if field_number not in (2, 3):  # auto_properties, custom_properties
                continue
            assert isinstance(entry, bytes)
            [value] = [v for n, v in raw_fields(entry) if n == 2]
            assert isinstance(value, bytes)
            variants = [n for n, _ in raw_fields(value)]
            assert len(variants) == 1 and variants[0] in (1, 2, 3, 4, 5), variants


# google.protobuf.Timestamp's range, as the server checks it (0001-01-01 to 9999-12-31).
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799


def assert_event_follows_the_contract(event: Any) -> None:
    """The server's rules for one sdk.events.v1.Event, as decoded by Google."""
    assert str(uuid.UUID(event.event_id)) == event.event_id  # lowercase 8-4-4-4-12
    assert uuid.UUID(event.event_id).version == 7
    assert KIND_RULE.fullmatch(event.kind), event.kind
    assert event.distinct_id != ""
    assert not event.distinct_id.startswith("cookieless-")
    assert UUID_RULE.fullmatch(event.session_id), event.session_id
    assert event.HasField("occur_time")
    assert MIN_SECONDS <= event.occur_time.seconds <= MAX_SECONDS
    assert 0 <= event.occur_time.nanos < 1_000_000_000
    assert not event.HasField("cookieless")
    assert all(key.startswith("$") for key in event.auto_properties)
    assert set(event.auto_properties) == {"$lib", "$sdkVersion", "$platform"}
    assert not any(key.startswith("$") for key in event.custom_properties)
    for value in [*event.auto_properties.values(), *event.custom_properties.values()]:
        variant = value.WhichOneof("value")
        assert variant is not None
        if variant == "string_value":
            assert len(value.string_value) <= 1024  # the server's limit, in characters
            assert len(value.string_value.encode()) <= MAX_STRING_BYTES  # ours, in bytes
        elif variant == "double_value":
            assert math.isfinite(value.double_value)
        elif variant == "timestamp_value":
            assert 0 <= value.timestamp_value.nanos < 1_000_000_000
            assert MIN_SECONDS <= value.timestamp_value.seconds <= MAX_SECONDS
    occur_ms = event.occur_time.seconds * 1000 + event.occur_time.nanos // 1_000_000
    if occur_ms >= 0:  # UUIDv7 has no room for instants before the epoch
        assert uuid.UUID(event.event_id).int >> 80 == occur_ms


def delivered_events(transport: InMemoryTransport, google_pb2: GoogleMessages) -> list[Any]:
    """Every event of every BatchCreate request, checked against the contract on the way."""
    request_class = google_pb2["sdk.events.v1.BatchCreateRequest"]
    events = []
    for method, body in transport.requests:
        if method != BATCH_CREATE:
            continue
        assert_one_variant_per_value(body)
        # FromString also fails on invalid UTF-8 anywhere in the request.
        batch = request_class.FromString(body).events
        assert 1 <= len(batch) <= MAX_EVENTS_PER_REQUEST
        # The SDK's own encoder, checked against both decoders: they must read it alike.
        decoded = BatchCreateRequest.parse(body).events
        assert [betterproto_view(e) for e in decoded] == [google_view(e) for e in batch]
        for event in batch:
            assert_event_follows_the_contract(event)
        events.extend(batch)
    return events


def delivered_identifies(transport: InMemoryTransport, google_pb2: GoogleMessages) -> list[Any]:
    request_class = google_pb2["sdk.profiles.v1.IdentifyRequest"]
    return [
        request_class.FromString(body) for method, body in transport.requests if method == IDENTIFY
    ]


def assert_finite_struct(value: Any) -> None:
    """No NaN or infinity anywhere in a google.protobuf.Value (they are dropped)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        assert math.isfinite(value.number_value)
    elif kind == "struct_value":
        for item in value.struct_value.fields.values():
            assert_finite_struct(item)
    elif kind == "list_value":
        for item in value.list_value.values:
            assert_finite_struct(item)


# --- what a caller may pass, and whether the server would take it -------------------------


def on_the_wire(text: str) -> str:
    """How the SDK writes a str: lone surrogates replaced, so it is valid UTF-8."""
    return text.encode("utf-8", "replace").decode()


def valid_id(value: object) -> bool:
    return isinstance(value, str) and value != "" and not value.startswith("cookieless-")


def valid_event(call: dict[str, Any]) -> bool:
    properties = call["properties"] or {}
    return (
        valid_id(call["distinct_id"])
        and KIND_RULE.fullmatch(call["kind"]) is not None
        and not any(isinstance(key, str) and key.startswith("$") for key in properties)
        and (call["session_id"] is None or UUID_RULE.fullmatch(call["session_id"]) is not None)
        and (call["timestamp"] is None or storable_time(call["timestamp"]))
    )


def storable_time(value: object) -> bool:
    """A datetime inside google.protobuf.Timestamp's range (years 1 to 9999 in UTC)."""
    if not isinstance(value, datetime.datetime):
        return False
    aware = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
    try:
        aware.astimezone(datetime.UTC)
    except OverflowError:
        return False
    return True


def valid_anonymous_id(value: str | None) -> bool:
    return value is None or ((value == "" or value.startswith("anon-")) and len(value) <= 255)


def valid_identify(call: dict[str, Any]) -> bool:
    device_id = call["device_id"]
    return (
        valid_id(call["external_id"])
        and valid_anonymous_id(call["anonymous_id"])
        and (device_id is None or len(device_id) <= 36)
    )


timezones = st.builds(
    datetime.timezone,
    st.timedeltas(
        min_value=-datetime.timedelta(hours=23, minutes=59),
        max_value=datetime.timedelta(hours=23, minutes=59),
    ),
)
datetimes = st.datetimes(timezones=st.none() | st.just(datetime.UTC) | timezones) | st.sampled_from(
    [  # aware times that fall outside the years 1 to 9999 once in UTC
        datetime.datetime.min.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=14))),
        datetime.datetime.max.replace(tzinfo=datetime.timezone(-datetime.timedelta(hours=14))),
    ]
)


class Shade(str, enum.Enum):  # noqa: UP042 (what applications write)
    DARK = "dark"


class LoudStr(str):
    def __str__(self) -> str:
        raise RuntimeError("a __str__ that raises")


hostile_leaves = st.sampled_from([Shade.DARK, LoudStr("quiet"), Shade.DARK])
integers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**1100), max_value=2**1100),
    # float() raises OverflowError (not inf) from 2**1024 - 2**970 on: both sides of that edge.
    st.sampled_from(
        [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**1024 - 2**971, 2**1024 - 1, 2**1024]
    ),
    st.sampled_from([-(2**1024) + 1, -(2**1024), 10**400]),
)
# Long runs of 1- to 4-byte characters, to cross the 1024-byte cut.
long_text = st.builds(
    lambda char, n, tail: char * n + tail,
    st.sampled_from(["a", "é", "中", "😀", "\ud800"]),
    st.integers(min_value=250, max_value=1100),
    st.text(max_size=3),
)
# float() raises for a signaling NaN, and gives inf for 1E+400.
decimals = st.decimals(allow_nan=False) | st.sampled_from(
    [decimal.Decimal(d) for d in ("NaN", "sNaN", "Infinity", "-1E+400")]
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    integers,
    st.floats(),
    st.text(max_size=20),
    long_text,
    st.binary(max_size=8),
    datetimes,
    st.dates(),
    decimals,
    st.uuids(),
    st.builds(object),
    hostile_leaves,
)
keys = st.one_of(
    st.text(max_size=8),
    st.just(""),
    st.text(max_size=6).map(lambda s: "$" + s),
    st.integers(),
    st.none(),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=3),
    ),
    max_leaves=8,
)
property_dicts = st.none() | st.dictionaries(keys, values, max_size=6)

ids = st.one_of(
    st.text(max_size=12),
    st.just(""),
    st.text(max_size=6).map(lambda s: "cookieless-" + s),
    st.from_regex(r"user_[0-9]{1,4}", fullmatch=True),
    st.none(),
)
# Registered (well-known) kinds would go down the typed path, tested below.
kinds = st.one_of(
    st.from_regex(KIND_RULE, fullmatch=True),
    st.from_regex(KIND_RULE, fullmatch=True).map(lambda kind: kind + "\n"),
    st.text(max_size=10),
).filter(lambda kind: kind not in registered_events())
session_ids = st.one_of(
    st.none(),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: f"{u}\n"),
    st.text(max_size=40),
)
timestamps = st.one_of(st.none(), datetimes, st.just("yesterday"), st.integers())
track_calls = st.fixed_dictionaries(
    {
        "distinct_id": ids,
        "kind": kinds,
        "properties": property_dicts,
        "session_id": session_ids,
        "timestamp": timestamps,
    }
)
identify_calls = st.fixed_dictionaries(
    {
        "external_id": ids,
        "traits": property_dicts,
        "anonymous_id": st.one_of(
            st.none(),
            st.just(""),
            st.text(max_size=260).map(lambda s: "anon-" + s),
            st.text(max_size=10),
            st.just("\n"),
        ),
        "device_id": st.none() | st.text(max_size=40),
    }
)


# google_pb2 is session-scoped, so hypothesis's function-scoped-fixture check does not apply.
@settings(max_examples=200, deadline=None)
@given(
    tracks=st.lists(track_calls, min_size=1, max_size=5),
    identifies=st.lists(identify_calls, max_size=2),
)
def test_anything_tracked_is_sent_by_the_rules_or_dropped(
    google_pb2: GoogleMessages, tracks: list[dict[str, Any]], identifies: list[dict[str, Any]]
) -> None:
    # The fake server checks every batch by the server's rules (refusing it whole, as the
    # server does): whatever the SDK queued must pass them.
    transport = FakePug()
    client = Pug(api_key="prv_test", transport=transport)
    try:
        # A non-strict client must swallow everything: any exception fails the test.
        for call in tracks:
            client.track(
                call["distinct_id"],
                call["kind"],
                call["properties"],
                timestamp=call["timestamp"],
                session_id=call["session_id"],
            )
        for call in identifies:
            client.identify(
                call["external_id"],
                call["traits"],
                anonymous_id=call["anonymous_id"],
                device_id=call["device_id"],
            )
        assert client.flush(10)
        stats = client.stats()
    finally:
        client.close()

    valid_tracks = [call for call in tracks if valid_event(call)]
    valid_identifies = [call for call in identifies if valid_identify(call)]
    events = delivered_events(transport, google_pb2)
    # Valid events all arrive, in order; the invalid ones never do.
    assert [(e.distinct_id, e.kind) for e in events] == [
        (on_the_wire(call["distinct_id"]), call["kind"]) for call in valid_tracks
    ]
    requests = delivered_identifies(transport, google_pb2)
    assert [r.external_id for r in requests] == [
        on_the_wire(call["external_id"]) for call in valid_identifies
    ]
    for request in requests:
        for value in request.traits.fields.values():
            assert_finite_struct(value)
    assert stats.failed == 0  # nothing the SDK queued was refused by the server's rules
    assert stats.enqueued == len(events) + len(requests)
    assert stats.sent == len(events)
    assert stats.identifies_sent == len(requests)
    assert stats.dropped_invalid == len(tracks) + len(identifies) - stats.enqueued


def test_a_request_never_carries_more_than_1000_events(google_pb2: GoogleMessages) -> None:
    transport = InMemoryTransport()
    client = Pug(api_key="prv_test", transport=transport)
    try:
        for n in range(2500):
            client.track(f"user_{n}", "kind.x", {"n": n})
        assert client.flush(10)
    finally:
        client.close()
    # delivered_events checks every request's size against the limit.
    events = delivered_events(transport, google_pb2)
    assert sorted(e.custom_properties["n"].int_value for e in events) == list(range(2500))


# --- each Event rule, with its message --------------------------------------------------


@pytest.fixture
def strict_client(transport: InMemoryTransport) -> Iterator[Pug]:
    pug_client = Pug(api_key="prv_test", transport=transport, strict=True)
    yield pug_client
    pug_client.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "pug" and r.levelno >= logging.WARNING
    ]


def track(client: Pug, call: dict[str, Any]) -> None:
    client.track(
        call.get("distinct_id", "user_1"),
        call.get("kind", "kind.x"),
        call.get("properties"),
        timestamp=call.get("timestamp"),
        session_id=call.get("session_id"),
    )


INVALID_EVENTS = [
    pytest.param(
        {"distinct_id": ""}, "distinct_id must be a non-empty string", id="empty distinct_id"
    ),
    pytest.param(
        {"distinct_id": "cookieless-x"},
        "distinct_id must not start with the reserved 'cookieless-' prefix",
        id="cookieless distinct_id",
    ),
    pytest.param(
        {"kind": "bad kind!"}, "kind 'bad kind!' must match ^[a-zA-Z0-9_.-]+$", id="bad kind"
    ),
    pytest.param(
        {"session_id": "not-a-uuid"}, "session_id must be a UUID string", id="bad session_id"
    ),
    pytest.param(
        {"properties": {"ok": 1, "$x": 2}},
        "property key '$x' starts with '$', which is reserved for auto-properties",
        id="dollar key",
    ),
    pytest.param(
        {"timestamp": "yesterday"},
        "timestamp must be a datetime, not str",
        id="timestamp not a datetime",
    ),
]


@pytest.mark.parametrize(("call", "message"), INVALID_EVENTS)
def test_invalid_event_is_logged_and_dropped_alone(
    client: Pug,
    transport: InMemoryTransport,
    google_pb2: GoogleMessages,
    caplog: pytest.LogCaptureFixture,
    call: dict[str, Any],
    message: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        track(client, call)
        client.track("user_2", "kind.ok", {"n": 1})
        assert client.flush(5)

    assert warnings_of(caplog) == [f"invalid event dropped: {message}"]
    # The whole event is dropped (a '$' key is not just left out), and only that event.
    [event] = delivered_events(transport, google_pb2)
    assert (event.distinct_id, event.kind) == ("user_2", "kind.ok")
    assert client.stats().dropped_invalid == 1


@pytest.mark.parametrize(("call", "message"), INVALID_EVENTS)
def test_strict_client_raises_the_same_message(
    strict_client: Pug, transport: InMemoryTransport, call: dict[str, Any], message: str
) -> None:
    with pytest.raises(PugValidationError) as raised:
        track(strict_client, call)
    assert str(raised.value) == message
    assert raised.value.code == "invalid_argument"
    assert strict_client.flush(5)
    assert transport.requests == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            {"kind": "click\n"}, "kind 'click\\n' must match ^[a-zA-Z0-9_.-]+$", id="kind"
        ),
        pytest.param(
            {"session_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n"},
            "session_id must be a UUID string",
            id="session_id",
        ),
    ],
)
# Regression: with re.match, `$` also matches before a trailing newline, so these used to
# pass the SDK's checks and make the server reject the whole batch.
def test_trailing_newline_is_caught_before_batching(
    client: Pug,
    transport: InMemoryTransport,
    caplog: pytest.LogCaptureFixture,
    call: dict[str, Any],
    message: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        track(client, call)
        assert client.flush(5)
    assert warnings_of(caplog) == [f"invalid event dropped: {message}"]
    assert transport.requests == []


# --- typed events given as kind + dict ---------------------------------------------------
#
# A kind string that names a well-known event is checked by that event's rules. This module
# imports pug.events (as any test run that imports it does), so the last test checks, in a
# fresh interpreter, what a user who only wrote `from pug import Pug` gets.

FEATURE_ID_MISSING = (
    "invalid event dropped: FeatureUsed (kind 'feature_used'): "
    "field 'feature_id' is required but missing"
)


def test_feature_used_without_feature_id_is_dropped(
    client: Pug, transport: InMemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    # The official SDK's README example: a snake_case name and no featureId.
    with caplog.at_level(logging.WARNING, logger="pug"):
        client.track("u", "feature_used", {"feature_name": "export"})
        assert client.flush(5)
    assert warnings_of(caplog) == [FEATURE_ID_MISSING]
    assert transport.requests == []


def test_feature_used_as_dict_is_typed(
    client: Pug, transport: InMemoryTransport, google_pb2: GoogleMessages
) -> None:
    client.track("u", "feature_used", {"feature_id": "f1", "featureName": "x", "extra": 1})
    assert client.flush(5)

    [event] = delivered_events(transport, google_pb2)
    assert event.kind == FeatureUsed.KIND == "feature_used"
    custom = {
        key: (value.WhichOneof("value"), getattr(value, value.WhichOneof("value")))
        for key, value in event.custom_properties.items()
    }
    # Python and wire names both find the typed field; the rest is an extra property.
    assert custom == {
        "featureId": ("string_value", "f1"),
        "featureName": ("string_value", "x"),
        "extra": ("int_value", 1),
    }


def test_a_kind_sent_as_custom_is_checked_once_a_catalog_defines_it(
    client: Pug, transport: InMemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    client.track("u", "late.defined", {"note": "x"})
    assert client.flush(5)
    assert len(transport.requests) == 1

    class LateDefined(PugEvent, kw_only=True):
        KIND: ClassVar[str] = "late.defined"
        late_id: str

    # The same call now takes the typed way: its missing field drops it.
    with caplog.at_level(logging.WARNING, logger="pug"):
        client.track("u", "late.defined", {"note": "x"})
        assert client.flush(5)
    assert warnings_of(caplog) == [
        "invalid event dropped: LateDefined (kind 'late.defined'): "
        "field 'late_id' is required but missing"
    ]
    assert len(transport.requests) == 1


# Run in a fresh interpreter: nothing but `pug` imported, as in the README's quick start.
FRESH_INTERPRETER_TRACK = """
import json, logging
from pug import Pug
from pug.testing import InMemoryTransport

warnings = []
handler = logging.Handler(logging.WARNING)
handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("pug").addHandler(handler)
transport = InMemoryTransport()
client = Pug(api_key="prv_test", transport=transport)
client.track("u", "feature_used", {"feature_name": "export"})
client.flush(5)
client.close()
print(json.dumps({"requests": len(transport.requests), "warnings": warnings}))
"""


# Regression: well-known kinds used to be found only after `import pug.events`.
def test_well_known_kind_is_checked_without_importing_pug_events(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FRESH_INTERPRETER_TRACK],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    outcome = json.loads(result.stdout)
    assert outcome == {"requests": 0, "warnings": [FEATURE_ID_MISSING]}


# --- identify's rules --------------------------------------------------------------------

INVALID_IDENTIFIES = [
    pytest.param(
        {"external_id": ""}, "external_id must be a non-empty string", id="empty external_id"
    ),
    pytest.param(
        {"external_id": "cookieless-x"},
        "external_id must not start with the reserved 'cookieless-' prefix",
        id="cookieless external_id",
    ),
    pytest.param(
        {"anonymous_id": "x"},
        "anonymous_id must start with 'anon-' and be at most 255 characters",
        id="anonymous_id without anon-",
    ),
    pytest.param(
        {"anonymous_id": "anon-" + "a" * 300},
        "anonymous_id must start with 'anon-' and be at most 255 characters",
        id="anonymous_id too long",
    ),
    pytest.param(
        {"device_id": "d" * 37},
        "device_id must be a string of at most 36 characters",
        id="device_id too long",
    ),
]
VALID_IDENTIFIES = [
    pytest.param({}, id="plain"),
    pytest.param({"anonymous_id": "anon-" + "a" * 250, "device_id": "d" * 36}, id="at limits"),
    pytest.param({"anonymous_id": ""}, id="empty anonymous_id"),
]


def identify_args(call: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args = (call.get("external_id", "user_1"), {"plan": "pro"})
    kwargs = {"anonymous_id": call.get("anonymous_id"), "device_id": call.get("device_id")}
    return args, kwargs


@pytest.mark.parametrize(("call", "message"), INVALID_IDENTIFIES)
def test_invalid_identify_is_logged_and_not_sent(
    client: Pug,
    transport: InMemoryTransport,
    caplog: pytest.LogCaptureFixture,
    call: dict[str, Any],
    message: str,
) -> None:
    args, kwargs = identify_args(call)
    with caplog.at_level(logging.WARNING, logger="pug"):
        client.identify(*args, **kwargs)
        assert client.flush(5)
    assert warnings_of(caplog) == [f"invalid identify dropped: {message}"]
    assert transport.requests == []


# Default batching: an identify is sent at once, whatever max_wait says.
QUICK_BATCHES = BatchConfig()


def identify_async(
    call: dict[str, Any], batch: BatchConfig = QUICK_BATCHES, timeout: float | None = None
) -> tuple[bool, InMemoryTransport]:
    """AsyncPug.identify's answer for one call, and the transport it went to."""
    transport = InMemoryTransport()

    async def run() -> bool:
        async with AsyncPug(api_key="prv_test", transport=transport, batch=batch) as client:
            args, kwargs = identify_args(call)
            return await asyncio.wait_for(client.identify(*args, **kwargs), timeout)

    return asyncio.run(run()), transport


@pytest.mark.parametrize(("call", "message"), INVALID_IDENTIFIES)
def test_async_identify_returns_false_when_invalid(call: dict[str, Any], message: str) -> None:
    delivered, transport = identify_async(call)
    assert delivered is False
    assert transport.requests == []


@pytest.mark.parametrize("call", VALID_IDENTIFIES)
def test_async_identify_returns_true_when_delivered(
    google_pb2: GoogleMessages, call: dict[str, Any]
) -> None:
    delivered, transport = identify_async(call)
    assert delivered is True
    [request] = delivered_identifies(transport, google_pb2)
    assert request.external_id == "user_1"


def test_async_identify_does_not_wait_for_the_batch_timer() -> None:
    # One identify is one request: nothing is gained by holding it back for max_wait.
    delivered, _ = identify_async({}, batch=BatchConfig(), timeout=1.0)
    assert delivered is True


# Regression: re.match(r"^$|^anon-") accepted a lone newline, which the server rejects.
def test_anonymous_id_newline_is_invalid(
    client: Pug, transport: InMemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        client.identify("user_1", anonymous_id="\n")
        assert client.flush(5)
    assert warnings_of(caplog) == [
        "invalid identify dropped: "
        "anonymous_id must start with 'anon-' and be at most 255 characters"
    ]
    assert transport.requests == []
