"""Turning what callers pass into wire values (WIRE.md's property value table).

- `custom_properties`: a caller's property dict → `WireProperties` (PropertyValue variants).
- `typed_from_dict`: a kind that names a typed event, given as a dict → that event's
  properties, checked by its catalog rules, plus the rest as custom properties.
- `traits`: identify traits → a JSON-like dict for google.protobuf.Struct.

Values that cannot be sent are left out with a warning naming the key, so one odd value
never costs the whole event. A key starting with `$` fails the event (the server would
reject the whole batch for it).
"""

from __future__ import annotations

import datetime
import decimal
import logging
import math
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from pug._wire.protobuf import datetime_parts, utf8
from pug.errors import PugValidationError, echo
from pug.event import (
    PugEvent,
    Variant,
    WireProperties,
    coerce,
    event_class,
    event_properties,
)
from pug.rules import AUTO_PROPERTY_PREFIX

logger = logging.getLogger("pug")

# Enum attribute lookups cost ~0.2 µs each; the hot paths use these module constants.
_STRING, _INT, _DOUBLE, _BOOL, _TIMESTAMP = (
    Variant.STRING, Variant.INT, Variant.DOUBLE, Variant.BOOL, Variant.TIMESTAMP
)  # fmt: skip


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_encode_json = msgspec.json.Encoder(decimal_format="number").encode


def _omit(key: object, why: str) -> None:
    logger.warning("property %s left out: %s", echo(key), why)


def omit_failed(key: object, exc: BaseException) -> None:
    """A value whose conversion raised (a broken `__str__`, a `tzinfo` that raises, a
    self-referencing dict): it alone is left out."""
    _omit(key, f"converting it raised {type(exc).__name__}: {echo(str(exc))[1:-1]}")


def check_key(key: object) -> str | None:
    """The key if it can be sent; raises for `$` keys, returns None (with a warning) else."""
    if not isinstance(key, str):
        _omit(key, f"keys must be strings, not {type(key).__name__}")
        return None
    if key.startswith(AUTO_PROPERTY_PREFIX):
        raise PugValidationError(
            f"property key {echo(key)} starts with {AUTO_PROPERTY_PREFIX!r}, which is reserved "
            "for auto-properties",
            field=key,
        )
    return key


def wire_value(key: str, value: object) -> tuple[Variant, Any] | None:
    """One custom property value on the wire, or None when it is left out."""
    # Exact-type checks first: they are the common case and the cheapest.
    t = type(value)
    if t is str:
        return (_STRING, value)
    if t is bool:
        return (_BOOL, value)
    if t is int:
        if INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
            return (_INT, value)
        return _big_int(key, value)  # type: ignore[arg-type]
    if t is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return (_DOUBLE, value)
        _omit(key, f"{value} is not a finite number")
        return None
    if value is None:
        return None
    return _other(key, value)


def _as_float(value: int | float | decimal.Decimal) -> float | None:
    """The finite float of a number, or None (too large, NaN, infinite, signaling NaN)."""
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _big_int(key: str, value: int) -> tuple[Variant, Any] | None:
    as_float = _as_float(value)
    if as_float is None:
        _omit(key, "the integer is too large even for a double")
        return None
    logger.warning("property %r: integer outside int64 sent as a double", key)
    return (_DOUBLE, as_float)


def _other(key: str, value: object) -> tuple[Variant, Any] | None:
    """Subclasses of the simple types, dates, containers and the rest."""
    # Subclasses (enums among them) are sent as the value they hold, as they are when
    # nested in JSON: not what an overridden __str__ or __int__ says.
    if isinstance(value, bool):
        return (_BOOL, bool(value))
    if isinstance(value, int):
        return wire_value(key, int.__index__(value))
    if isinstance(value, float):
        return wire_value(key, float.__float__(value))
    if isinstance(value, str):
        return (_STRING, str.__str__(value))
    if isinstance(value, datetime.datetime):
        datetime_parts(value)  # raises for a time the server cannot store
        return (_TIMESTAMP, value)
    if isinstance(value, datetime.date):
        midnight = datetime.datetime.combine(value, datetime.time(), datetime.UTC)
        return (_TIMESTAMP, midnight)
    if isinstance(value, decimal.Decimal):
        number = _as_float(value)
        if number is not None:
            return (_DOUBLE, number)
        _omit(key, f"{value} is not a finite number")
        return None
    if isinstance(value, uuid.UUID):
        return (_STRING, str(value))
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        try:
            try:
                text = _encode_json(value)
            except ValueError:
                # A lone surrogate somewhere inside (UnicodeEncodeError), or a Decimal NaN
                # or Infinity, which recent msgspec (0.23) refuses to write as a number.
                text = _encode_json(_json_safe(value))
            else:
                # Older msgspec (0.19) writes a Decimal NaN or Infinity as a bare NaN or
                # Infinity, which is not JSON. Either way such values become null, as a
                # float NaN does. (A string that merely contains the word costs one more
                # encoding and gives the same text.)
                if b"NaN" in text or b"Infinity" in text:
                    text = _encode_json(_json_safe(value))
            return (_STRING, text.decode())
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            _omit(key, f"cannot be written as JSON: {echo(str(exc))[1:-1]}")
            return None
    _omit(key, f"values of type {type(value).__name__} cannot be sent")
    return None


def _json_safe(value: object) -> object:
    """`value` with what JSON cannot hold made safe: lone surrogates replaced (as in
    top-level strings), Decimals as floats or null when not finite."""
    if isinstance(value, str):
        return utf8(value).decode()
    if isinstance(value, decimal.Decimal):
        return _as_float(value)
    if isinstance(value, Mapping):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    return value


def check_mapping(props: object) -> None:
    """Properties must be a mapping (a list or a str is a caller's slip, said plainly)."""
    if not isinstance(props, Mapping):
        raise PugValidationError(
            f"properties must be a mapping (a dict), not {type(props).__name__}",
            field="properties",
        )


def custom_properties(props: Mapping[Any, Any] | None) -> WireProperties:
    """A caller's property dict on the wire; raises PugValidationError for a `$` key."""
    out: WireProperties = {}
    if not props:
        return out
    check_mapping(props)
    for key, value in props.items():
        try:
            k = key if type(key) is str and key[:1] != AUTO_PROPERTY_PREFIX else check_key(key)
            if k is None:
                continue
            mapped = wire_value(k, value)
        except PugValidationError:
            raise
        except Exception as exc:
            omit_failed(key, exc)
            continue
        if mapped is not None:
            out[k] = mapped
    return out


def typed_from_dict(cls: type[PugEvent], props: Mapping[Any, Any] | None) -> WireProperties:
    """A typed event given as kind + dict: fields (by Python or wire name) are checked by
    the event's rules and mapped by declared type; the other keys are custom properties."""
    fields: dict[str, Any] = {}
    extra: dict[Any, Any] = {}
    names = _field_names(cls)
    if props is not None:
        check_mapping(props)
    for key, value in (props or {}).items():
        wire = names.get(key) if isinstance(key, str) else None
        if wire is None:
            extra[key] = value
        elif value is not None:
            fields[wire] = value
    _, typed = event_properties(coerce(cls, fields))
    out = custom_properties(extra)
    out.update(typed)
    return out


_NAMES: dict[type[PugEvent], dict[str, str]] = {}


def _field_names(cls: type[PugEvent]) -> dict[str, str]:
    """Python name and wire name → wire name, for each field of `cls`."""
    names = _NAMES.get(cls)
    if names is None:
        names = {}
        for attr, wire in zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True):
            names[attr] = wire
            names[wire] = wire
        _NAMES[cls] = names
    return names


def event_wire(
    event: PugEvent | str, props: Mapping[Any, Any] | None
) -> tuple[str, WireProperties]:
    """(kind, properties) of what `track()` was given: a typed event, or a kind string
    (typed too when it names a registered event) with a dict. Raises PugValidationError."""
    if isinstance(event, PugEvent):
        kind, typed = event_properties(event)
        if not props:
            return kind, typed
        out = custom_properties(props)
        out.update(typed)
        return kind, out
    if type(event) is not str:
        raise PugValidationError(
            f"event must be a PugEvent or a kind string, not {type(event).__name__}"
        )
    cls = event_class(event)
    if cls is not None:
        return event, typed_from_dict(cls, props)
    return event, custom_properties(props)


# Identify traits: a google.protobuf.Struct (numbers are doubles, nesting is kept).
def traits(values: Mapping[Any, Any], path: str = "") -> dict[str, object]:
    """Traits as JSON-like values for a Struct; unsendable ones left out with a warning."""
    out: dict[str, object] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            _omit(f"{path}{echo(key)}", "trait keys must be strings")
            continue
        try:
            cleaned = _trait(f"{path}{key}", value)
        except Exception as exc:  # RecursionError for a self-referencing dict, ...
            omit_failed(f"{path}{key}", exc)
            continue
        if cleaned is not _DROP:
            out[key] = cleaned
    return out


_DROP = object()


def _trait(path: str, value: object) -> object:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int | float | decimal.Decimal):
        number = _as_float(value)
        if number is not None:
            return number
        _omit(path, f"{value} is not a finite number")
        return _DROP
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return traits(value, f"{path}.")
    if isinstance(value, list | tuple):
        items = [_trait(f"{path}[{i}]", v) for i, v in enumerate(value)]
        return [v for v in items if v is not _DROP]
    _omit(path, f"values of type {type(value).__name__} cannot be sent")
    return _DROP
