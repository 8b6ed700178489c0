"""Pug's well-known typed events: the catalog matches the contract, rules hold, wire form."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pug.events
import pytest
from contract_file import load_contract
from pug.errors import PugValidationError
from pug.event import Variant, event_class, event_properties, validate
from pug.events import Purchase
from pug_codegen.patterns import python_pattern

EVENT_TYPES = {
    "string": mi.StrType,
    "bool": mi.BoolType,
    "int32": mi.IntType,
    "int64": mi.IntType,
    "double": mi.FloatType,
    "google.protobuf.Duration": mi.TimeDeltaType,
}


def contract_events() -> dict[str, dict[str, Any]]:
    """Every message of the contract that carries an event kind, by kind."""
    files = load_contract()["files"]
    return {
        message["event_kind"]: {"name": name, **message}
        for path, f in files.items()
        if path.startswith("common/events/v1/")
        for name, message in f["messages"].items()
        if "event_kind" in message
    }


def is_server(message: dict[str, Any]) -> bool:
    return not message["platforms"] or "PLATFORM_SERVER" in message["platforms"]


def unwrap(t: mi.Type) -> tuple[mi.Type, dict[str, Any]]:
    if isinstance(t, mi.Metadata):
        return t.type, t.extra or {}
    return t, {}


def test_contract_has_the_documented_event_counts() -> None:
    events = contract_events()
    assert len(events) == 127
    assert sum(is_server(m) for m in events.values()) == 114


def test_every_server_kind_has_exactly_one_class_and_others_none() -> None:
    events = contract_events()
    server = {k for k, m in events.items() if is_server(m)}
    assert set(pug.events.EVENTS) == server
    exported = [getattr(pug.events, n) for n in pug.events.__all__]
    classes = [c for c in exported if isinstance(c, type) and hasattr(c, "KIND")]
    assert sorted(c.KIND for c in classes) == sorted(server)
    for kind, message in events.items():
        class_name = message["name"].removesuffix("Properties")
        if kind in server:
            assert pug.events.EVENTS[kind].__name__ == class_name
        else:
            assert not hasattr(pug.events, class_name), f"{kind} is not a server event"


@pytest.mark.parametrize("kind", sorted(pug.events.EVENTS))
def test_event_class_matches_contract_fields(kind: str) -> None:
    message = contract_events()[kind]
    cls = pug.events.EVENTS[kind]
    assert kind == cls.KIND
    assert event_class(kind) is cls
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    fields = {f.encode_name: f for f in info.fields}
    assert list(fields) == [f["json_name"] for f in message["fields"]]
    for spec in message["fields"]:
        field = fields[spec["json_name"]]
        assert field.name.rstrip("_") == spec["name"]
        t, extra = unwrap(field.type)
        assert isinstance(t, EVENT_TYPES[spec["type"]]), (kind, spec["name"], t)
        rules = spec.get("rules", {})
        assert field.required == bool(rules.get("required")), (kind, spec["name"])
        assert extra.get("pii", False) == spec.get("pii", False)
        expected = _expected_constraints(spec["type"], rules)
        assert _constraints(t, extra) == expected, (kind, spec["name"])


def _expected_constraints(wire_type: str, rules: dict[str, Any]) -> dict[str, Any]:
    """The msgspec constraints a contract field's rules should become."""
    int_range = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
    out: dict[str, Any] = {}
    if wire_type in int_range:
        r = rules.get(wire_type, {})
        low, high = int_range[wire_type]
        out = {"ge": max(low, int(r.get("gte", low))), "le": min(high, int(r.get("lte", high)))}
    elif wire_type == "double":
        out = {k.replace("gte", "ge"): float(v) for k, v in rules.get("double", {}).items()}
    elif wire_type == "string":
        out = dict(rules.get("string", {}))
        if "pattern" in out:  # RE2's pattern as Python must read it (`$` → `\Z`)
            out["pattern"] = python_pattern(out["pattern"])
    elif wire_type == "google.protobuf.Duration":
        out = {
            f"seconds_{k}": float(str(v).removesuffix("s"))
            for k, v in rules.get("duration", {}).items()
        }
    return out


def _constraints(t: mi.Type, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("gt", "ge", "lt", "le", "pattern", "min_length", "max_length"):
        value = getattr(t, key, None)
        if value is not None:
            out[key] = value
    for key, value in extra.get("seconds", {}).items():
        out[f"seconds_{key}"] = value
    return out


def test_wire_form_follows_declared_types() -> None:
    kind, props = event_properties(Purchase(product_id="p", amount=50, quantity=0))
    assert kind == "purchase"
    assert props == {
        "productId": (Variant.STRING, "p"),
        "amount": (Variant.DOUBLE, 50.0),
        "quantity": (Variant.INT, 0),
    }
    assert type(props["amount"][1]) is float
    assert type(props["quantity"][1]) is int


def test_set_zero_values_are_sent_and_unset_are_not() -> None:
    event = pug.events.ChatMessageSent(conversation_id="c", message_id="")
    _, props = event_properties(event)
    assert props == {
        "conversationId": (Variant.STRING, "c"),
        "messageId": (Variant.STRING, ""),
    }


def test_duration_is_sent_as_double_seconds() -> None:
    cls = next(c for c in pug.events.EVENTS.values() if "duration" in c.__struct_fields__)
    required = {
        f.name: "x"
        for f in mi.type_info(cls).fields
        if f.required  # type: ignore[attr-defined]
    }
    event = cls(**required, duration=datetime.timedelta(minutes=1, milliseconds=500))
    _, props = event_properties(event)
    assert props["duration"] == (Variant.DOUBLE, 60.5)


# One breaking and one boundary instance per rule kind present in the catalog.
RULE_CASES = [
    # (rule, event, breaking kwargs, boundary kwargs, field named in the message)
    ("required", "checkout_step_completed", {"checkout_id": "c"}, None, "step"),
    (
        "pattern",
        "purchase",
        {"product_id": "p", "currency": "usd"},
        {"product_id": "p", "currency": "USD"},
        "currency",
    ),
    (
        "gt",
        "purchase",
        {"product_id": "p", "amount": 0.0},
        {"product_id": "p", "amount": 5e-324},
        "amount",
    ),
    (
        "gte",
        "purchase",
        {"product_id": "p", "quantity": -1},
        {"product_id": "p", "quantity": 0},
        "quantity",
    ),
    (
        "int32 range",
        "purchase",
        {"product_id": "p", "quantity": 2**31},
        {"product_id": "p", "quantity": 2**31 - 1},
        "quantity",
    ),
]


@pytest.mark.parametrize(("rule", "kind", "bad", "good", "field"), RULE_CASES)
def test_rule_rejects_and_boundary_passes(
    rule: str, kind: str, bad: dict[str, Any], good: dict[str, Any] | None, field: str
) -> None:
    cls = pug.events.EVENTS[kind]
    if rule == "required":
        # A missing required field cannot be constructed, and fails when decoded.
        with pytest.raises(TypeError, match=f"Missing required argument '{field}'"):
            cls(**bad)
        with pytest.raises(PugValidationError) as info:
            pug.event.coerce(cls, {"checkoutId": "c"})
        assert str(info.value) == (
            "CheckoutStepCompleted (kind 'checkout_step_completed'): "
            "field 'step' is required but missing"
        )
        validate(cls(**bad, step=""))
        return
    with pytest.raises(PugValidationError) as info:
        validate(cls(**bad))
    assert info.value.field == field
    assert f"field '{field}' is invalid" in str(info.value)
    assert good is not None
    validate(cls(**good))


def _event_with(rule_key: str, wire_type: str) -> tuple[type[Any], str]:
    """The first catalog event with a field of `wire_type` whose rule has `rule_key`."""
    for kind, message in contract_events().items():
        if not is_server(message):
            continue
        for spec in message["fields"]:
            if spec["type"] == wire_type and rule_key in spec.get("rules", {}).get(
                wire_type.split(".")[-1].lower(), {}
            ):
                return pug.events.EVENTS[kind], spec["name"]
    raise AssertionError(f"no event has a {wire_type} field with {rule_key}")


def _required_args(cls: type[Any]) -> dict[str, Any]:
    return {f.name: "x" for f in mi.type_info(cls).fields if f.required}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("wire_type", "rule", "bad", "good"),
    [
        ("int32", "lte", 101, 100),
        ("int64", "gte", -1, 0),
        (
            "google.protobuf.Duration",
            "gte",
            datetime.timedelta(microseconds=-1),
            datetime.timedelta(0),
        ),
    ],
)
def test_rules_found_by_contract(wire_type: str, rule: str, bad: Any, good: Any) -> None:
    cls, field = _event_with(rule, wire_type)
    limit_rules = contract_events()[cls.KIND]["fields"]
    spec = next(f for f in limit_rules if f["name"] == field)
    if wire_type == "int32":
        # Use the field's own bound: the boundary is the limit, one past it breaks.
        limit = int(spec["rules"]["int32"]["lte"])
        bad, good = limit + 1, limit
    with pytest.raises(PugValidationError) as info:
        validate(cls(**_required_args(cls), **{field: bad}))
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith(f"{cls.__name__} (kind '{cls.KIND}'): field '{field}' is invalid")
    validate(cls(**_required_args(cls), **{field: good}))


def test_wrong_python_type_is_rejected_with_the_field() -> None:
    with pytest.raises(PugValidationError) as info:
        validate(Purchase(product_id="p", amount="49"))  # type: ignore[arg-type]
    assert str(info.value) == (
        "Purchase (kind 'purchase'): field 'amount' is invalid: expected `float`, got `str`"
    )


def test_unsendable_value_is_rejected_with_the_field() -> None:
    with pytest.raises(PugValidationError) as info:
        validate(Purchase(product_id=object()))  # type: ignore[arg-type]
    assert info.value.field == "product_id"
    assert "cannot be sent" in str(info.value)


def test_non_finite_double_is_rejected() -> None:
    with pytest.raises(PugValidationError, match="field 'amount' is invalid"):
        validate(Purchase(product_id="p", amount=float("nan")))
    # inf passes `gt 0`, but the server rejects non-finite doubles.
    with pytest.raises(PugValidationError, match="field 'amount' must be a finite number"):
        validate(Purchase(product_id="p", amount=float("inf")))


def test_validation_message_has_no_value() -> None:
    """Values may be personal data (pii fields): messages name fields and rules only."""
    with pytest.raises(PugValidationError) as info:
        validate(Purchase(product_id="p", currency="secret-value"))
    assert "secret-value" not in str(info.value)


def test_structs_are_keyword_only_and_typed() -> None:
    with pytest.raises(TypeError):
        Purchase("p")  # type: ignore[misc]
    assert re.match(r"Purchase\(product_id='p'\)", repr(Purchase(product_id="p")))
    assert msgspec.json.encode(Purchase(product_id="p", amount=1.5)) == (
        b'{"productId":"p","amount":1.5}'
    )


CATALOG_TYPES = {
    "string": "string",
    "bool": "bool",
    "int32": "int32",
    "int64": "int64",
    "double": "double",
    "google.protobuf.Duration": "duration",
}


def test_catalog_yaml_matches_contract_for_all_127_events() -> None:
    """The YAML catalog itself (server and client events alike) says what the contract says."""
    from pug_codegen import catalog

    root = Path(__file__).resolve().parents[2] / "catalog" / "events"
    loaded = {e.kind: e for e in catalog.load(root.glob("*.yaml")).events}
    events = contract_events()
    assert set(loaded) == set(events)
    for kind, message in events.items():
        event = loaded[kind]
        assert event.class_name + "Properties" == message["name"]
        platforms = [p.removeprefix("PLATFORM_").lower() for p in message["platforms"]]
        assert list(event.platforms) == platforms, kind
        assert [p.name for p in event.properties] == [f["name"] for f in message["fields"]]
        for prop, spec in zip(event.properties, message["fields"], strict=True):
            where = f"{kind}.{prop.name}"
            assert prop.type == CATALOG_TYPES[spec["type"]], where
            assert prop.wire_name == spec["json_name"], where
            assert prop.pii == spec.get("pii", False), where
            rules = dict(spec.get("rules", {}))
            assert prop.required == rules.pop("required", False), where
            typed_rules = {
                k: float(str(v).removesuffix("s")) if k != "pattern" else v
                for group in rules.values()
                for k, v in group.items()
            }
            assert prop.constraints == typed_rules, where
