"""Hypothesis strategies for BatchCreateRequest bodies, written field by field so they
reach every wire form a reader must handle: fields in any order, sent twice, missing,
unknown, with another wire type, non-minimal varints; and the betterproto2 path the
fake took before `pug._wire.reader` (its test oracle)."""

from __future__ import annotations

import math
import struct
import uuid

import betterproto2
from hypothesis import strategies as st
from pug._wire.reader import Timestamp, Value, WireEvent
from pug.proto.common.v1 import PropertyValue
from pug.proto.sdk.events.v1 import BatchCreateRequest, Event
from pug.rules import RESERVED_ID_PREFIX as RESERVED
from pug.testing.fake import wire
from pug.testing.fake.server import _cel, _check, _check_fields, _go_quote, _rules
from pug.testing.fake.server import _Violation as Violation


def varint(n: int, pad: int = 0) -> bytes:
    """A varint of n (negative as 64-bit two's complement), `pad` extra bytes long
    (non-minimal, as Go reads too)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    for _ in range(pad):
        if len(out) >= 10:
            break
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def ld(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def vi(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# Fields no reader knows, in every legal wire type (a group included).
unknown_field = st.sampled_from(
    [
        vi(99, 7),
        key(99, 1) + bytes(8),
        key(99, 5) + bytes(4),
        ld(99, b"\xff\xfe"),
        key(99, 3) + vi(1, 1) + key(99, 4),
    ]
)

texts = st.text(max_size=12) | st.sampled_from(["", "USD", "$os", "a" * 1030])
timestamps = st.builds(
    lambda s, n, order: b"".join([vi(1, s), vi(2, n)][::order] if n or s else []),
    st.integers(-62_135_596_800, 253_402_300_799) | st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 999_999_999) | st.integers(-(2**31), 2**31 - 1),
    st.sampled_from([1, -1]),
)


def _doubles(x: float) -> bytes:
    return struct.pack("<d", x)


member = st.one_of(
    st.builds(lambda t: ld(1, utf8(t)), texts),
    st.just(ld(1, b"a" * 1025)),  # one character past string_value's max_len
    st.builds(lambda i: vi(2, i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(
        lambda x: key(3, 1) + _doubles(x), st.floats() | st.sampled_from([math.nan, math.inf, -0.0])
    ),
    st.builds(lambda b: vi(4, b), st.sampled_from([0, 1, 2])),
    st.builds(lambda t: ld(5, t), timestamps),
    unknown_field,
    st.just(key(1, 0) + varint(3)),  # string_value with the varint wire type: unknown
)
property_value = st.lists(member, max_size=3).map(b"".join)
map_key = st.sampled_from(["amount", "$os", "currency", "", 'é\n"x', "\x00"]) | texts
map_entry = st.one_of(
    st.builds(lambda k, v: ld(1, utf8(k)) + ld(2, v), map_key, property_value),
    st.builds(lambda k, v: ld(2, v) + ld(1, utf8(k)), map_key, property_value),
    st.builds(lambda k: ld(1, utf8(k)), map_key),  # no value
    st.builds(lambda v: ld(2, v), property_value),  # no key
    st.builds(
        lambda k, v, u: ld(1, utf8(k)) + u + ld(2, v), map_key, property_value, unknown_field
    ),
)
uuids = st.builds(lambda: str(uuid.uuid4())) | st.sampled_from(["", "not-a-uuid"])
kinds = st.sampled_from(["purchase", "$pageview", "Bad Kind", ""]) | texts
event_field = st.one_of(
    st.builds(lambda t: ld(1, utf8(t)), uuids),
    st.builds(lambda e: ld(2, e), map_entry),
    st.builds(lambda e: ld(3, e), map_entry),
    st.builds(lambda t: ld(4, utf8(t)), st.sampled_from(["u1", RESERVED + "x", ""]) | texts),
    st.builds(lambda t: ld(5, utf8(t)), kinds),
    st.builds(lambda t: ld(6, t), timestamps),
    st.builds(lambda t: ld(7, utf8(t)), uuids),
    st.builds(
        lambda b, pad: key(8, 0) + varint(b, pad), st.sampled_from([0, 1, 5]), st.integers(0, 2)
    ),
    unknown_field,
    st.just(vi(5, 1)),  # kind with the varint wire type: unknown
)


def _typical(event_id: str, kind: str, seconds: int, nanos: int, session: str) -> bytes:
    props = b"".join(
        ld(3, ld(1, k.encode()) + ld(2, v))
        for k, v in [
            ("amount", key(3, 1) + _doubles(49.99)),
            ("currency", ld(1, b"USD")),
            ("items", vi(2, 3)),
            ("gift", vi(4, 1)),
        ]
    )
    auto = ld(2, ld(1, b"$os") + ld(2, ld(1, b"linux")))
    return (
        ld(1, event_id.encode()) + ld(6, vi(1, seconds) + vi(2, nanos)) + ld(4, b"u1")
        + ld(5, kind.encode()) + ld(7, session.encode()) + auto + props
    )  # fmt: skip


typical_event = st.builds(
    _typical, uuids, kinds, st.integers(0, 2**33), st.integers(0, 999_999_999), uuids
)
event = typical_event | st.lists(event_field, max_size=12).map(b"".join)
batches = st.lists(st.one_of(st.builds(lambda e: ld(1, e), event), unknown_field), max_size=6).map(
    b"".join
)


def mutated(body: bytes, data: st.DataObject) -> bytes:
    """`body` with a few bytes changed, cut or inserted (mostly unreadable bytes)."""
    out = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, len(out)))
        if how == "cut":
            del out[at:]
        elif how == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif at < len(out):
            out[at] = data.draw(st.integers(0, 255))
    return bytes(out)


# ---- the oracle: what FakePug read before, through betterproto2 ----------------------------


def oracle_batch(body: bytes) -> tuple[BatchCreateRequest, wire.Times]:
    """The request as FakePug read it with betterproto2 (raises wire.Unreadable)."""
    readable, times = wire.canonical(BatchCreateRequest, body)
    return BatchCreateRequest.parse(readable), times


def _value(v: PropertyValue) -> Value:
    for name in ("string_value", "int_value", "double_value", "bool_value"):
        found = getattr(v, name)
        if found is not None:
            return found  # type: ignore[no-any-return]
    if v.timestamp_value is not None:
        return v.timestamp_value  # type: ignore[no-any-return]
    return None


def oracle_events(body: bytes) -> list[WireEvent]:
    """`read_batch`'s answer through betterproto2; property timestamps are the datetimes
    betterproto2 holds (compare them with `Timestamp.to_datetime`), occur_time exact."""
    request, times = oracle_batch(body)
    out = []
    for i, e in enumerate(request.events):
        exact = times.exact.get(f"events[{i}].occur_time")
        out.append(
            WireEvent(
                event_id=e.event_id,
                kind=e.kind,
                distinct_id=e.distinct_id,
                occur_time=None if exact is None else Timestamp(*exact),
                session_id=e.session_id,
                cookieless=e.cookieless,
                auto_properties={k: _value(v) for k, v in e.auto_properties.items()},
                custom_properties={k: _value(v) for k, v in e.custom_properties.items()},
            )
        )
    return out


# The rules FakePug checked on betterproto2 objects before `wire_batch_violations`.
def _event_violations(index: int, event: Event) -> list[Violation]:
    out: list[Violation] = []
    at = f"events[{index}]"
    fields = _rules(Event).fields
    _check(out, f"{at}.event_id", event.event_id, fields["event_id"])
    for name, props in (("auto_properties", event.auto_properties),
                        ("custom_properties", event.custom_properties)):  # fmt: skip
        for key, value in props.items():
            out.extend(_property_value_violations(f"{at}.{name}[{_go_quote(key)}]", value))
    for name in ("kind", "occur_time", "session_id"):
        _check(out, f"{at}.{name}", getattr(event, name), fields[name])
    _cel(out, at, _rules(Event).cel, event)
    return out


def _property_value_violations(path: str, value: PropertyValue) -> list[Violation]:
    out: list[Violation] = []
    for oneof in _rules(PropertyValue).required_oneofs:
        if not betterproto2.which_one_of(value, oneof)[0]:
            message = "exactly one field is required in oneof"
            out.append(Violation(f"{path}.{oneof}", "required", message))
    _check_fields(out, f"{path}.", value)
    return out


def oracle_violations(request: BatchCreateRequest) -> list[Violation]:
    out: list[Violation] = []
    _check(out, "events", request.events, _rules(BatchCreateRequest).fields["events"])
    for index, event in enumerate(request.events):
        out.extend(_event_violations(index, event))
    _cel(out, "", _rules(BatchCreateRequest).cel, request)
    return out
