"""BatchCreate's fast path (`pug.testing.fake.ingest.Scanner`) accepts a batch only when
the exact path (`read_batch`, then every rule) finds no violation, and then gives the events
the exact path reads; the SDK's own batches take it."""

from __future__ import annotations

import datetime
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pug import BatchConfig, Pug, rules
from pug._wire.reader import Timestamp, Unreadable, WireEvent, event_spans, read_batch
from pug.testing import InMemoryTransport
from pug.testing.fake.ingest import _KEEP_NEW_VALUES, Arrival, Scanner, entry_of
from pug.testing.fake.server import _SCANNER, wire_batch_violations
from pug.transports.base import BATCH_CREATE

from tests.support.wire_batches import batches, ld, mutated

assert _SCANNER is not None  # the contract's rules are the ones it checks
SCANNER = _SCANNER


def _nan_free(event: WireEvent) -> object:
    def plain(props: dict[str, Any]) -> dict[str, object]:
        return {k: "nan" if isinstance(v, float) and math.isnan(v) else (type(v), v)
                for k, v in props.items()}  # fmt: skip

    return (*event[:6], plain(event.auto_properties), plain(event.custom_properties))


def _agrees_with_the_exact_path(body: bytes) -> bool:
    """True if the fast path accepted `body`; fails if it did what the exact path would not."""
    arrivals = SCANNER.scan(body)
    if arrivals is None:
        return False
    events = read_batch(body)  # accepted: readable
    assert wire_batch_violations(events) == []
    assert len(arrivals) == len(events)
    for arrival, event in zip(arrivals, events, strict=True):
        assert _nan_free(arrival.event()) == _nan_free(event)
        assert arrival[:5] == (
            event.event_id, event.kind, event.distinct_id or "", event.occur_time,
            bool(event.cookieless),
        )  # fmt: skip
    return True


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_what_the_fast_path_accepts_the_exact_path_accepts_as_the_same_events(
    body: bytes,
) -> None:
    _agrees_with_the_exact_path(body)


def _sdk_body(calls: list[tuple[str, str, dict[str, Any]]]) -> bytes:
    transport = InMemoryTransport()
    pug = Pug(api_key="prv_test", transport=transport, batch=BatchConfig(max_size=1000))
    for distinct_id, kind, properties in calls:
        pug.track(distinct_id, kind, properties)
    pug.close()
    (body,) = [b for method, b in transport.requests if method == BATCH_CREATE]
    return body


_VALUES: dict[str, Any] = {
    "text": "héllo", "empty": "", "longest": "é" * 1024, "int": -(2**63), "big": 2**63 - 1,
    "small": 3, "true": True, "false": False, "float": 0.1, "tiny": 5e-324,
    "when": datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC),
    "k" * 200: "a long key", "ctrl\x1b": "\x00\r\n",
}  # fmt: skip


def test_the_sdks_batches_take_the_fast_path() -> None:
    body = _sdk_body(
        [
            ("user_1", "order.completed", _VALUES),
            ("user_2", "order.completed", {"amount": 49.99}),
            ("user_1", "page.viewed", {}),
            ("u" * 300, "order.completed", {"order_id": "ord_1"}),
        ]
    )
    assert _agrees_with_the_exact_path(body)


_ONE = _sdk_body([("user_1234567", "order.completed", {"amount": 1.5, "n": 2})])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_damaged_sdk_batch_is_accepted_only_as_the_exact_path_accepts_it(
    data: st.DataObject,
) -> None:
    body = mutated(_ONE, data)
    try:
        _agrees_with_the_exact_path(body)
    except Unreadable:  # pragma: no cover - the assertion above would have said so
        raise AssertionError("the fast path accepted bytes the exact path cannot read") from None


def test_generated_batches_reach_the_fast_path() -> None:
    """The differential test above is not vacuous: some generated batches are accepted."""
    accepted = 0

    @settings(max_examples=500, deadline=None, database=None, derandomize=True)
    @given(batches)
    def count(body: bytes) -> None:
        nonlocal accepted
        accepted += _agrees_with_the_exact_path(body)

    count()
    assert accepted >= 20


def test_a_rule_broken_sends_the_batch_to_the_exact_path() -> None:
    """Each rule the fast path checks itself, broken in an SDK batch that passed."""
    assert SCANNER.scan(_ONE) is not None
    for old, new, rule in [  # the same lengths: only the rule changes
        (b"order.completed", b"order completed", "string.pattern"),
        (b"user_1234567", b"cookieless-1", "batch.distinct_id_reserved_prefix"),
        (b"amount", b"$mount", "event.custom_properties_no_dollar_prefix"),
        (b"$lib", b"lib_", "event.auto_properties_dollar_prefix"),
    ]:
        broken = _ONE.replace(old, new)
        assert SCANNER.scan(broken) is None
        assert [v.rule_id for v in wire_batch_violations(read_batch(broken))] == [rule]


def test_an_arrival_is_the_event_it_came_from() -> None:
    body = _sdk_body([("user_1", "order.completed", {"amount": 1.5})])
    (arrival,) = SCANNER.scan(body) or []
    assert isinstance(arrival, Arrival)
    assert isinstance(arrival.occur_time, Timestamp)
    assert arrival.event() == read_batch(body)[0]


# Events of one kind whose values are new event by event, as in real traffic: from the
# second event on, a new value of a key seen before is judged by its value alone.
_NEW_VALUES = _sdk_body(
    [
        (f"user_{i}", "order.completed", {"amount": 1.5 + i, "order_id": f"ord_{i}", "n": i})
        for i in range(3)
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_damaged_batch_of_new_values_is_accepted_only_as_the_exact_path_accepts_it(
    data: st.DataObject,
) -> None:
    assert _agrees_with_the_exact_path(_NEW_VALUES)
    _agrees_with_the_exact_path(mutated(_NEW_VALUES, data))


def _with_second_value(old: bytes, new: bytes) -> bytes:
    """Two events of the same keys, the second's `note` value replaced by `new` (the same
    length as `old`): its key is known by then, its value new."""
    body = _sdk_body([("user_1", "order.completed", {"note": "first", "amount": 1.5})] * 2)
    at = body.rindex(old)
    return body[:at] + new + body[at + len(old) :]


def test_a_new_value_of_a_known_key_breaking_a_rule_sends_the_batch_to_the_exact_path() -> None:
    assert _agrees_with_the_exact_path(_with_second_value(b"first", b"other"))
    for value in (math.inf, -math.inf, math.nan):
        broken = _with_second_value(struct.pack("<d", 1.5), struct.pack("<d", value))
        assert SCANNER.scan(broken) is None
        assert [v.rule_id for v in wire_batch_violations(read_batch(broken))] == ["double.finite"]
    broken = _with_second_value(b"first", b"fir\xffst")  # not UTF-8
    assert SCANNER.scan(broken) is None
    with pytest.raises(Unreadable):
        read_batch(broken)


def test_a_key_whose_values_keep_being_new_is_judged_value_by_value() -> None:
    """Past _KEEP_NEW_VALUES new values of a key its entries are no longer kept, and each
    is still judged."""
    count = _KEEP_NEW_VALUES + 10
    body = _sdk_body([("user_1", "page.viewed", {"churns": float(i)}) for i in range(count)])
    assert _agrees_with_the_exact_path(body)
    last = struct.pack("<d", float(count - 1))
    assert _agrees_with_the_exact_path(body.replace(last, struct.pack("<d", 0.5)))
    assert SCANNER.scan(body.replace(last, struct.pack("<d", math.nan))) is None


def test_entries_of_a_block_of_one_length_in_another_order_are_read_as_sent() -> None:
    """Two blocks of custom entries of the same length, their entries in another order."""
    body = _sdk_body(
        [("user_1", "order.completed", {"a": "xyz", "bb": 1}),
         ("user_1", "order.completed", {"bb": 1, "a": "xyz"})]
    )  # fmt: skip
    first, second = SCANNER.scan(body) or []
    assert [entry_of(e) for e in first.custom or ()] == [("a", "xyz"), ("bb", 1)]
    assert [entry_of(e) for e in second.custom or ()] == [("bb", 1), ("a", "xyz")]


def test_a_key_sent_twice_after_events_of_distinct_keys_is_read_whole() -> None:
    body = _sdk_body(
        [
            ("user_1", "order.completed", {"aa": 1, "bb": 2}),
            ("user_1", "order.completed", {"aa": 1, "cc": 2}),
        ]
    )
    body = body.replace(b"\n\x02cc", b"\n\x02aa")
    first, second = SCANNER.scan(body) or []
    assert first.custom is not None
    assert second.custom is None  # the dev server prints it from the event read whole
    assert second.event().custom_properties == {"aa": 2}
    assert _agrees_with_the_exact_path(body)


def _scanner_with(longest: float, finite: bool) -> Scanner:
    """A scanner of other value rules than the contract's (its own value test, by them)."""

    def value_ok(value: object) -> bool:
        if isinstance(value, str):
            return len(value) <= longest
        return not (finite and isinstance(value, float)) or math.isfinite(value)

    return Scanner(
        event_id_ok=rules.UUID_PATTERN.regex.search, kind_ok=bool, session_ok=bool,
        value_ok=value_ok, value_limits=(longest, finite), auto_prefix="$",
        reserved_prefix=rules.RESERVED_ID_PREFIX, max_events=1000,
    )  # fmt: skip


def test_a_string_head_longer_than_the_limit_has_each_value_judged() -> None:
    """Strings of 12 bytes may be 11 characters or 12: with at most 11 (the SDK's own
    auto-properties pass), each is judged."""
    calls = [("user_1", "k", {"note": text}) for text in ("é" + "a" * 10, "ñ" + "b" * 10)]
    too_long = [*calls, ("user_1", "k", {"note": "c" * 12})]
    assert _scanner_with(longest=11, finite=True).scan(_sdk_body(calls)) is not None
    assert _scanner_with(longest=11, finite=True).scan(_sdk_body(too_long)) is None
    assert _scanner_with(longest=12, finite=True).scan(_sdk_body(too_long)) is not None


def test_a_new_double_of_a_known_head_is_judged_by_the_finite_rule_given() -> None:
    body = _with_second_value(struct.pack("<d", 1.5), struct.pack("<d", math.inf))
    assert _scanner_with(longest=1024, finite=False).scan(body) is not None
    assert _scanner_with(longest=1024, finite=True).scan(body) is None


def test_an_event_that_ends_inside_what_follows_its_kind_is_not_accepted() -> None:
    """What follows a known kind is compared within the event, not past its end (the bytes
    after it here go on as the batch's unknown fields)."""
    body = _sdk_body([("user_1", "order.completed", {"amount": 1.5})])
    assert SCANNER.scan(body) is not None  # its kind and what follows it known
    ((start, end),) = event_spans(body)
    event = body[start:end]
    cut = event.index(b"\x12\x14\n\x04$lib") + 8  # inside an auto-property
    damaged = ld(1, event[:cut]) + event[cut:]
    with pytest.raises(Unreadable):
        read_batch(damaged)
    assert SCANNER.scan(damaged) is None


# ---- events of one shape (`_Shape`): judged by what changed ------------------------------


def _shaped(n: int, first: int = 0) -> bytes:
    """What the SDK sends for n events of one kind, as an app sends them: each with a new
    id, time, user, order id and amount, all of one length (so of one shape)."""
    at = datetime.datetime(2026, 1, 2, 3, 4, 5, 500_000, tzinfo=datetime.UTC)
    transport = InMemoryTransport()
    pug = Pug(api_key="prv_test", transport=transport, batch=BatchConfig(max_size=1000))
    for i in range(first, first + n):
        properties = {"order_id": f"ord_{i:04d}", "amount": 1.5 + i, "currency": "EUR"}
        pug.track(f"user_{i:010d}", "order.completed", properties,
                  timestamp=at + datetime.timedelta(microseconds=i))  # fmt: skip
    pug.close()
    (body,) = [b for method, b in transport.requests if method == BATCH_CREATE]
    return body


def _last_replaced(body: bytes, old: bytes, new: bytes) -> bytes:
    """`body` with `old` replaced by `new` (as long) in its last event."""
    start, end = event_spans(body)[-1]
    at = body.rindex(old, start, end)
    assert len(new) == len(old)
    return body[:at] + new + body[at + len(old) :]


def test_an_apps_events_are_judged_by_what_changed_as_the_exact_path_judges_them() -> None:
    scanner = _scanner_with(longest=1024, finite=True)
    body = _shaped(40)
    arrivals = scanner.scan(body)
    assert arrivals is not None
    assert list(scanner._shapes) == [end - start for start, end in event_spans(body)[:1]]
    events = read_batch(body)
    assert [a[:5] for a in arrivals] == [
        (e.event_id, e.kind, e.distinct_id, e.occur_time, False) for e in events
    ]
    assert [a.event() for a in arrivals] == events
    # Printed from its entries, as an event split into its fields is.
    assert [entry_of(e) for e in arrivals[-1].custom or ()] == [
        ("order_id", "ord_0039"), ("amount", 40.5), ("currency", "EUR")
    ]  # fmt: skip


def test_a_changed_value_breaking_a_rule_sends_the_batch_to_the_exact_path() -> None:
    body = _shaped(40)
    nan = _last_replaced(body, struct.pack("<d", 40.5), struct.pack("<d", math.nan))
    assert _scanner_with(longest=1024, finite=False).scan(nan) is not None
    assert _scanner_with(longest=1024, finite=True).scan(nan) is None
    assert wire_batch_violations(read_batch(nan)) != []
    not_utf8 = _last_replaced(body, b"ord_0039", b"ord_\xff039")
    assert _scanner_with(longest=1024, finite=True).scan(not_utf8) is None
    reserved = rules.RESERVED_ID_PREFIX.encode()
    user = _last_replaced(body, b"user_0000000039", reserved + b"0000000039"[len(reserved) - 5 :])
    assert _scanner_with(longest=1024, finite=True).scan(user) is None
    assert wire_batch_violations(read_batch(user)) != []


def test_an_event_of_a_known_length_but_other_bytes_is_split_into_its_fields() -> None:
    scanner = _scanner_with(longest=1024, finite=True)
    assert scanner.scan(_shaped(40)) is not None
    # The same length, another kind: not of the shape, judged (and kept) field by field.
    other = _last_replaced(_shaped(40, 40), b"order.completed", b"order.refunded!")
    arrivals = scanner.scan(other)
    assert arrivals is not None and arrivals[-1].kind == "order.refunded!"
    assert [a.event() for a in arrivals] == read_batch(other)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_damaged_event_of_a_known_shape_is_accepted_only_as_the_exact_path_accepts_it(
    data: st.DataObject,
) -> None:
    assert _agrees_with_the_exact_path(_SHAPED)  # its shape is known from here on
    start, end = event_spans(_SHAPED)[-1]
    damaged = bytearray(_SHAPED)
    for _ in range(data.draw(st.integers(1, 3))):  # bytes of the last event changed
        damaged[data.draw(st.integers(start, end - 1))] = data.draw(st.integers(0, 255))
    _agrees_with_the_exact_path(bytes(damaged))


_SHAPED = _shaped(40)


def test_a_shape_follows_what_the_app_sends_now() -> None:
    # A value that kept still (the currency), then changes event by event: the shape
    # learned first no longer fits, and one where the currency changes too is learned.
    scanner = _scanner_with(longest=1024, finite=True)
    assert scanner.scan(_shaped(40)) is not None
    (length,) = scanner._shapes
    first = scanner._shapes[length]
    currencies = _shaped(200, 40)
    for i in range(40, 240):
        currencies = currencies.replace(b"EUR", f"{i % 26 + 65:c}UR".encode(), 1)
    arrivals = scanner.scan(currencies)
    assert arrivals is not None and [a.event() for a in arrivals] == read_batch(currencies)
    assert scanner._shapes[length] is not first
    assert scanner._shapes[length].literals(arrivals[-1].raw) == scanner._shapes[length].expected
