"""`pug._wire.reader.read_batch` reads every BatchCreateRequest as FakePug's betterproto2
path did (wire.canonical, then betterproto2: the oracle here), and refuses exactly the
bytes that path refused; `wire_batch_violations` on what it reads gives the violations
the old path gave, in its order."""

from __future__ import annotations

import datetime
import math
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pug._wire import protobuf
from pug._wire.reader import Timestamp, Unreadable, Value, WireEvent, read_batch
from pug.errors import PugError
from pug.event import Variant
from pug.testing import FakePug
from pug.testing.fake import wire
from pug.testing.fake.server import wire_batch_violations
from pug.transports.base import BATCH_CREATE

from tests.support.wire_batches import (
    batches,
    key,
    ld,
    mutated,
    oracle_batch,
    oracle_events,
    oracle_violations,
    varint,
    vi,
)


def _comparable(value: Value | datetime.datetime) -> object:
    """Property timestamps as the datetimes betterproto2 holds; NaN equal to itself."""
    if isinstance(value, Timestamp):
        return value.to_datetime()
    if isinstance(value, datetime.datetime):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return (type(value), value)


def _normal(events: list[WireEvent]) -> list[object]:
    return [
        e._replace(
            auto_properties={k: _comparable(v) for k, v in e.auto_properties.items()},
            custom_properties={k: _comparable(v) for k, v in e.custom_properties.items()},
        )
        for e in events
    ]


def _same_as_oracle(body: bytes) -> None:
    try:
        expected = oracle_events(body)
    except wire.Unreadable:
        with pytest.raises(Unreadable):
            read_batch(body)
        return
    got = read_batch(body)
    assert _normal(got) == _normal(expected)
    # Key order too (a duplicate key keeps its first place).
    assert [list(e.custom_properties) for e in got] == [list(e.custom_properties) for e in expected]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_every_wire_form_reads_as_betterproto_read_it(body: bytes) -> None:
    _same_as_oracle(body)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches, st.data())
def test_damaged_bytes_are_refused_exactly_when_the_old_path_refused_them(
    body: bytes, data: st.DataObject
) -> None:
    _same_as_oracle(mutated(body, data))


def test_the_sdks_own_encoding_reads_back_exactly() -> None:
    """Every property type, a timestamp with nanos, as the SDK writes them."""
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
    auto = protobuf.auto_properties({"$os": "linux"})
    head = protobuf.head("u1", "purchase", str(uuid.UUID(int=2)), auto)
    custom = protobuf.custom_field(
        {
            "s": (Variant.STRING, "é"),
            "i": (Variant.INT, -5),
            "d": (Variant.DOUBLE, 0.25),
            "b": (Variant.BOOL, False),
            "t": (Variant.TIMESTAMP, when),
        }
    )
    event_id = str(uuid.UUID(int=1))
    body = protobuf.frame(protobuf.event(event_id, 1_714_979_289, 123_456_789, head, custom))
    (event,) = read_batch(body)
    assert event == WireEvent(
        event_id=event_id,
        kind="purchase",
        distinct_id="u1",
        occur_time=Timestamp(1_714_979_289, 123_456_789),
        session_id=str(uuid.UUID(int=2)),
        cookieless=None,
        auto_properties={"$os": "linux"},
        custom_properties={
            "s": "é",
            "i": -5,
            "d": 0.25,
            "b": False,
            "t": Timestamp(1_714_979_289, 123_456_000),
        },
    )
    _same_as_oracle(body * 3)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x0a\x05abc", "length-delimited field runs past the end"),
        (ld(1, ld(1, b"\xff")), "string field contains invalid UTF-8"),
        (ld(1, ld(3, ld(1, b"\xed\xa0\x80"))), "string field contains invalid UTF-8"),
        (ld(1, b"\x40") + ld(1, b""), "unexpected end of data"),  # cookieless cut
        (ld(1, key(8, 0) + b"\xff" * 10), "variable length integer overflow"),
        (b"\x0e", "invalid wire type 6"),
        (b"\x02\x00", "invalid field number 0"),
        (ld(1, key(9, 4)), "unmatched end group"),
        (ld(1, key(9, 3) + vi(1, 1) + key(10, 4)), "mismatched end group"),
        (ld(1, key(9, 1) + b"\x00"), "unexpected end of data in a fixed-size field"),
    ],
)
def test_unreadable_bytes_say_why(body: bytes, message: str) -> None:
    with pytest.raises(wire.Unreadable):
        oracle_events(body)
    with pytest.raises(Unreadable, match=message):
        read_batch(body)


def test_only_the_kept_string_must_be_utf8_as_before() -> None:
    """A string sent twice keeps the last; the first is never checked (nor was it)."""
    body = ld(
        1, ld(5, b"\xff") + ld(5, b"ok") + ld(3, ld(1, b"k") + ld(2, ld(1, b"\xff") + vi(2, 1)))
    )
    (event,) = read_batch(body)
    assert event.kind == "ok" and event.custom_properties == {"k": 1}
    _same_as_oracle(body)


def test_map_entries_default_and_duplicate_keys_keep_the_last_value() -> None:
    body = ld(1, ld(3, ld(1, b"a") + ld(2, vi(2, 1))) + ld(3, ld(2, vi(2, 7)))
              + ld(3, ld(1, b"b")) + ld(3, ld(1, b"a") + ld(2, vi(2, 2))))  # fmt: skip
    (event,) = read_batch(body)
    assert list(event.custom_properties.items()) == [("a", 2), ("", 7), ("b", None)]
    _same_as_oracle(body)


def test_a_timestamp_sent_twice_is_merged_and_kept_exact() -> None:
    seconds = 2**40  # beyond datetime's years: kept exactly, clamped only as a datetime
    body = ld(
        1,
        ld(6, vi(1, seconds))
        + ld(6, vi(2, -1))
        + ld(3, ld(1, b"t") + ld(2, ld(5, vi(1, 5)) + ld(5, vi(2, 9)))),
    )
    (event,) = read_batch(body)
    assert event.occur_time == Timestamp(seconds, -1)
    assert event.occur_time.to_datetime() == datetime.datetime.max.replace(tzinfo=datetime.UTC)
    assert event.custom_properties == {"t": Timestamp(5, 9)}
    _same_as_oracle(body)


def test_non_minimal_varints_are_read() -> None:
    event = key(8, 0) + varint(1, pad=8)
    body = key(1, 2) + varint(len(event), pad=3) + event
    (got,) = read_batch(body)
    assert got.cookieless is True
    _same_as_oracle(body)


def _old_answer(body: bytes) -> object:
    """What FakePug answered a BatchCreate before: betterproto2 objects, checked."""
    try:
        request, _ = oracle_batch(body)
    except wire.Unreadable:
        return "unreadable"
    return [(v.field, v.rule_id, v.message) for v in oracle_violations(request)]


def _new_answer(body: bytes) -> object:
    try:
        events = read_batch(body)
    except Unreadable:
        return "unreadable"
    return [(v.field, v.rule_id, v.message) for v in wire_batch_violations(events)]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_violations_are_the_old_paths_in_its_order(body: bytes) -> None:
    assert _new_answer(body) == _old_answer(body)


def test_generated_batches_break_every_event_rule() -> None:
    """The strategy reaches the rules (the test above would pass on valid batches only)."""
    seen: set[str] = set()

    @settings(max_examples=600, deadline=None, database=None, derandomize=True)
    @given(batches)
    def collect(body: bytes) -> None:
        answer = _old_answer(body)
        if isinstance(answer, list):
            seen.update(rule_id for _, rule_id, _ in answer)

    collect()
    expected = {
        "required", "string.uuid", "string.uuid_empty", "string.pattern", "string.max_len",
        "double.finite", "event.auto_properties_dollar_prefix",
        "event.custom_properties_no_dollar_prefix", "event.identity_required_unless_cookieless",
        "batch.cookieless_identity_server_owned", "batch.distinct_id_reserved_prefix",
    }  # fmt: skip
    assert expected <= seen


def test_fakepug_answers_a_batch_as_before() -> None:
    """The same PugError (code, message, details) through FakePug.handle."""
    fake = FakePug()
    event = ld(1, ld(1, b"x") + ld(5, b"Bad Kind") + ld(3, ld(1, b"$k") + ld(2, b"")))
    with pytest.raises(PugError) as caught:
        fake.handle(BATCH_CREATE, event)
    assert caught.value.code == "invalid_argument"
    request, _ = oracle_batch(event)
    assert caught.value.details == [
        {"field": v.field, "rule_id": v.rule_id, "message": v.message}
        for v in oracle_violations(request)
    ]
    with pytest.raises(PugError, match="unreadable BatchCreateRequest: length-delimited"):
        fake.handle(BATCH_CREATE, b"\x0a\x05")


def test_a_member_replaced_is_not_read_as_before() -> None:
    """A Timestamp member followed by another member is never parsed (nor was it): its
    malformed bytes are accepted; parts of a Timestamp sent twice are read joined."""
    replaced = ld(1, ld(3, ld(1, b"k") + ld(2, ld(5, b"\x00\x80") + vi(2, 4))))
    (event,) = read_batch(replaced)
    assert event.custom_properties == {"k": 4}
    _same_as_oracle(replaced)
    joined = ld(1, ld(6, b"\x08") + ld(6, b"\x07"))  # a key, then its value in the next part
    (event,) = read_batch(joined)
    assert event.occur_time == Timestamp(7, 0)
    _same_as_oracle(joined)


def test_the_same_body_read_again_gives_the_same_events_in_a_new_list() -> None:
    """The dev server's fake and its page's feed both read each request's body."""
    body = ld(1, ld(5, b"a")) + ld(1, ld(5, b"b"))
    first, again = read_batch(body), read_batch(body)
    assert again == first and again is not first
    assert read_batch(bytes(bytearray(body))) == first  # equal bytes, another object: read
    with pytest.raises(Unreadable):
        read_batch(body[:-1])
