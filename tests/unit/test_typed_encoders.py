"""The generated typed-event encoders against the checked path they shortcut.

Each generated encoder must, for any instance, either give up (None) or write exactly
the bytes of the checked path (msgspec validation, then the generic encoder); it must
never accept what the checked path rejects. Hypothesis builds instances of every
well-known event and of a user catalog's events, valid and invalid, field by field from
the class's own types and rules.
"""

from __future__ import annotations

import datetime
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pug.events  # noqa: F401  (registers the well-known events and their encoders)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protoc_helpers import GoogleMessages
from pug._ingest import encode
from pug._wire.codegen_support import ENCODERS
from pug.errors import PugValidationError
from pug.event import PugEvent, Variant, event_properties, registered_events
from pug_codegen.cli import main
from test_codegen import PLAN, load_module, write
from test_wire_encoding import expected_truncation, google_map

WELL_KNOWN = sorted(
    (cls for cls in registered_events().values() if cls.__module__.startswith("pug.events.")),
    key=lambda cls: cls.__name__,
)


class Text(str):
    """A str subclass: valid for msgspec, left to the checked path by the fast one."""


_ODD: list[object] = [None, True, False, 0, -1, 2**53 + 1, 2**63, -(2**70), 0.0, -0.0, 1.5,
                      math.nan, math.inf, -math.inf, "", "x", Text("USD"), b"b", [1], {"a": 1},
                      datetime.timedelta(seconds=-1), datetime.datetime(2026, 1, 1)]  # fmt: skip

_NAIVE = st.datetimes(min_value=datetime.datetime(1971, 1, 1))
_AWARE = st.datetimes(
    min_value=datetime.datetime(1971, 1, 1),
    timezones=st.sampled_from([datetime.UTC, datetime.timezone(datetime.timedelta(hours=2))]),
)

# Strings past the 1024-byte cut: a short random run repeated to a random 1000-1100 characters,
# so the cut falls in a character of any width. (Drawing 1000 characters one by one took
# most of this module's time.)
_LONG = st.tuples(st.text(min_size=1, max_size=8), st.integers(1000, 1100)).map(
    lambda run_and_size: (run_and_size[0] * 1100)[: run_and_size[1]]
)


def _number(info: Any) -> st.SearchStrategy[Any]:
    limits = [getattr(info, k) for k in ("gt", "ge", "lt", "le") if getattr(info, k) is not None]
    near = [x + d for x in limits for d in (-1, 0, 1)]
    return st.sampled_from(near or [0]) | st.integers(-(2**64), 2**64)


def _values(t: Any) -> st.SearchStrategy[Any]:
    """Values for a field of msgspec type `t`: mostly fitting, sometimes at or past a
    rule's edge, sometimes of another type altogether."""
    if isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.StrType):
        fitting = st.text(max_size=80) | st.text(alphabet="ABCDEFGHXYZ", max_size=5)
        if t.max_length is not None:
            fitting |= st.text(min_size=t.max_length, max_size=t.max_length + 1)
        fitting |= _LONG
    elif isinstance(t, mi.LiteralType):
        fitting = st.sampled_from(t.values)
    elif isinstance(t, mi.IntType):
        fitting = _number(t)
    elif isinstance(t, mi.FloatType):
        fitting = st.floats() | _number(t).map(float) | _number(t)
    elif isinstance(t, mi.BoolType):
        fitting = st.booleans()
    elif isinstance(t, mi.DateTimeType):
        fitting = _NAIVE | _AWARE
    elif isinstance(t, mi.TimeDeltaType):
        fitting = st.timedeltas(
            min_value=datetime.timedelta(days=-1000), max_value=datetime.timedelta(days=1000)
        ) | st.sampled_from([datetime.timedelta(0), datetime.timedelta(microseconds=1)])
    else:  # a new kind of field: this test must learn it
        raise AssertionError(f"no strategy for {t!r}")
    return st.one_of(fitting, fitting, fitting, st.sampled_from(_ODD))


# One strategy per class, made once: hypothesis validates and labels a new strategy on each
# draw, which took most of the user catalog test's time.
@functools.cache
def _instances(cls: type[PugEvent]) -> st.SearchStrategy[PugEvent]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    fields = {}
    for f in info.fields:
        values = _values(f.type)
        fields[f.name] = values if f.required else st.one_of(st.just(msgspec.UNSET), values)
    # msgspec Structs do not check types at construction: any value can be set.
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


def _checked(event: PugEvent) -> bytes | None:
    try:
        return encode.encode_typed_checked(event)[1]
    except PugValidationError:
        return None


def assert_agrees(event: PugEvent) -> bool:
    """The generated encoder gives up or writes what the checked path writes; returns
    whether it answered."""
    fast = ENCODERS[type(event)](event)
    if fast is not None:
        assert _checked(event) == fast, repr(event)
    return fast is not None


_ONEOF = {
    Variant.STRING: "string_value",
    Variant.INT: "int_value",
    Variant.DOUBLE: "double_value",
    Variant.BOOL: "bool_value",
    Variant.TIMESTAMP: "timestamp_value",
}


def _expected_on_wire(event: PugEvent) -> dict[str, tuple[str, Any]]:
    """What Google's protobuf should read back: event_properties' values, strings cut to
    the 1024-byte limit, datetimes in UTC (naive ones are UTC)."""
    out = {}
    for key, (variant, value) in event_properties(event)[1].items():
        if variant is Variant.STRING:
            value = expected_truncation(value)  # type: ignore[arg-type]
        elif variant is Variant.TIMESTAMP:
            value = value.replace(tzinfo=datetime.UTC)  # type: ignore[union-attr]
        out[key] = (_ONEOF[variant], value)
    return out


def test_every_well_known_event_has_a_generated_encoder() -> None:
    assert len(WELL_KNOWN) == 114
    assert [c for c in WELL_KNOWN if c not in ENCODERS] == []


# google_pb2 is session-scoped, so hypothesis's function-scoped-fixture check does not apply.
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(WELL_KNOWN).flatmap(_instances))
def test_generated_encoders_agree_with_the_checked_path(
    google_pb2: GoogleMessages, event: PugEvent
) -> None:
    if assert_agrees(event):
        # And independently: Google's protobuf reads back every value as declared.
        fast = ENCODERS[type(event)](event)
        decoded = google_pb2["sdk.events.v1.Event"].FromString(fast).custom_properties
        assert google_map(decoded) == _expected_on_wire(event)


@pytest.fixture(scope="module")
def user_events(tmp_path_factory: pytest.TempPathFactory) -> list[type[PugEvent]]:
    tmp = tmp_path_factory.mktemp("catalog")
    out = tmp / "encoded_events.py"
    assert main(["events", "--catalog", str(write(tmp, PLAN)), "--out", str(out)]) == 0
    module = load_module(out, "encoded_events")
    return list(module.EVENTS.values())


def test_user_catalog_encoders_agree_with_the_checked_path(
    user_events: list[type[PugEvent]],
) -> None:
    # Timestamps, durations with bounds and enums: kinds the well-known events barely use.
    @settings(max_examples=1500, deadline=None)
    @given(st.sampled_from(user_events).flatmap(_instances))
    def check(event: PugEvent) -> None:
        assert_agrees(event)

    check()


def test_user_catalog_classes_have_generated_encoders(user_events: list[type[PugEvent]]) -> None:
    assert all(cls in ENCODERS for cls in user_events)


def _purchase() -> PugEvent:
    from pug.events import Purchase

    return Purchase(product_id="p1", amount=49.0, currency="USD", quantity=3)


@pytest.mark.parametrize(
    ("change", "answered"),
    [
        (lambda e: e, True),
        (lambda e: msgspec.structs.replace(e, amount=49), True),  # an int for a double
        (lambda e: msgspec.structs.replace(e, amount=-1.0), False),  # gt 0
        (lambda e: msgspec.structs.replace(e, amount=math.nan), False),
        (lambda e: msgspec.structs.replace(e, currency="usd"), False),  # pattern
        (lambda e: msgspec.structs.replace(e, currency=Text("USD")), False),  # a subclass
        (lambda e: msgspec.structs.replace(e, quantity=True), False),  # bool is not an int
        (lambda e: msgspec.structs.replace(e, quantity=2**31), False),  # le 2147483647
        (lambda e: msgspec.structs.replace(e, product_id=None), False),
    ],
)
def test_the_fast_path_answers_valid_events_and_leaves_the_rest(
    change: Callable[[PugEvent], PugEvent], answered: bool
) -> None:
    event = change(_purchase())
    assert assert_agrees(event) is answered
    # Whatever the path, encode_typed gives the checked path's answer.
    expected = _checked(event)
    if expected is None:
        with pytest.raises(PugValidationError):
            encode.encode_typed(event)
    else:
        assert encode.encode_typed(event) == ("purchase", expected)


def test_a_cached_value_is_not_taken_for_an_equal_one_of_another_type() -> None:
    from pug.events import Purchase

    ok = Purchase(quantity=1)
    assert assert_agrees(ok)
    # True == 1 and hashes alike: it must not hit the entry cached for 1.
    assert ENCODERS[Purchase](Purchase(quantity=True)) is None


def test_the_fast_path_caches_are_the_clients_and_bounded() -> None:
    from pug.events import commerce

    encoder = encode.EventEncoder("0190a9d2-7a00-7cc1-8a5b-2f0e6c1d9e01", {})
    other = encode.EventEncoder("0190a9d2-7a00-7cc1-8a5b-2f0e6c1d9e02", {})
    for i in range(1000):
        event = commerce.Purchase(order_id=f"o{i}", currency="USD")
        assert encoder.encode_now("user_1", event, None) is not None
    # The generated module keeps nothing: every entry is in the client's encoder, each
    # field's cache within 256 entries, and another client's caches are its own.
    assert not [name for name, value in vars(commerce).items() if isinstance(value, dict)
                and value and name.startswith("_Purchase")]  # fmt: skip
    _, caches = encoder._typed[commerce.Purchase]
    assert [len(cache) for cache in caches] == [0, 1, 1000 % 256 or 256, 0, 0, 0, 0]
    assert other.cached_entries() == 0
    # Field caches of at most FIELD_CACHES_HELD fields in all: classes past it start again.
    classes = [c for c in registered_events().values() if encode.CACHES_NEEDED.get(c)]
    for cls in classes:
        encoder._typed_encoder(cls)
    assert encoder._field_caches <= encode.FIELD_CACHES_HELD
    assert sum(len(caches) for _, caches in encoder._typed.values()) == encoder._field_caches


# What pug-codegen 0.1.0 wrote for a one-field event (module-level cache, one-argument
# encoder, `register` without caches): such modules keep working.
OLD_MODULE = """
from typing import Any, ClassVar
from pug import encoders as _support
from pug.event import PugEvent


class OldThing(PugEvent, kw_only=True):
    KIND: ClassVar[str] = "old.thing"
    n: int


_OldThing_n: dict[int, bytes] = {}


def _encode_OldThing(e: OldThing) -> bytes | None:
    out: list[bytes] = []
    v: Any
    v = e.n
    if type(v) is not int:
        return None
    try:
        out.append(_OldThing_n[v])
    except KeyError:
        if not (-2147483648 <= v <= 2147483647):
            return None
        out.append(_support.integer(_OldThing_n, "n", v))
    return b"".join(out)


_support.register({OldThing: _encode_OldThing})
"""


def test_a_module_generated_by_0_1_0_still_encodes_through_a_client(tmp_path: Path) -> None:
    from pug import Pug
    from pug.testing import FakePug

    out = tmp_path / "old_010.py"
    out.write_text(OLD_MODULE)
    module = load_module(out, "old_010_events")
    fake = FakePug()
    client = Pug(api_key="prv_test", transport=fake)
    for n in (5, 5, 6):
        client.track("user_1", module.OldThing(n=n))
    assert client.flush(10)
    client.close()
    assert [(e.kind, e.properties) for e in fake.events()] == [
        ("old.thing", {"n": 5}), ("old.thing", {"n": 5}), ("old.thing", {"n": 6})
    ]  # fmt: skip
    assert module._OldThing_n.keys() == {5, 6}  # its own cache, as in 0.1.0


def test_generated_module_source_is_importable_alone(tmp_path: Path) -> None:
    # The encoders need only pug._wire.codegen_support and msgspec at import: no generator.
    out = tmp_path / "alone.py"
    plan = write(tmp_path, "events:\n  solo.thing:\n    properties:\n      n: int32\n")
    assert main(["events", "--catalog", str(plan), "--out", str(out)]) == 0
    text = out.read_text()
    assert "pug_codegen" not in text.split('"""', 2)[2]
    module = load_module(out, "alone_events")
    assert ENCODERS[module.SoloThing](module.SoloThing(n=5)) is not None


def test_a_module_generated_before_the_move_still_registers(tmp_path: Path) -> None:
    # Modules users generated earlier import `pug.encoders` (now a deprecated re-export).
    out = tmp_path / "old.py"
    plan = write(tmp_path, "events:\n  old.thing:\n    properties:\n      n: int32\n")
    assert main(["events", "--catalog", str(plan), "--out", str(out)]) == 0
    new_import = "from pug._wire import codegen_support as _support\n"
    text = out.read_text()
    assert new_import in text
    out.write_text(text.replace(new_import, "from pug import encoders as _support\n"))
    module = load_module(out, "old_events")
    assert ENCODERS[module.OldThing](module.OldThing(n=5)) is not None
