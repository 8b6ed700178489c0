"""Typed events: the `PugEvent` base of every generated event Struct, and how one is
checked against its catalog rules and turned into wire-ready properties.

The rules live in one place, the `msgspec.Meta` annotations the generator writes on
each field; this module reads them back through `msgspec.inspect` so the runtime and
the catalog can never disagree.
"""

from __future__ import annotations

import datetime
import math
import re
from enum import IntEnum
from typing import Any, ClassVar, TypeAlias

import msgspec
import msgspec.inspect as mi

from pug.errors import PugValidationError

__all__ = [
    "PugEvent",
    "Variant",
    "WireProperties",
    "WireValue",
    "coerce",
    "event_class",
    "event_properties",
    "registered_events",
    "validate",
]


class Variant(IntEnum):
    """Which member of PropertyValue's oneof carries a value; the values are field numbers."""

    STRING = 1
    INT = 2
    DOUBLE = 3
    BOOL = 4
    TIMESTAMP = 5


WireValue: TypeAlias = tuple[Variant, str | int | float | bool | datetime.datetime]
WireProperties: TypeAlias = dict[str, WireValue]

_REGISTRY: dict[str, type[PugEvent]] = {}


class PugEvent(msgspec.Struct, kw_only=True, omit_defaults=True, repr_omit_defaults=True):
    """Base class of typed events. Subclasses set `KIND`, the `Event.kind` on the wire.

    Defining a subclass registers its kind, so `track(id, "order.completed", {...})`
    finds the class of a catalog module that has been imported.
    """

    KIND: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("KIND")
        if isinstance(kind, str):
            _REGISTRY[kind] = cls


def event_class(kind: str) -> type[PugEvent] | None:
    """The typed event class registered for `kind`, if a loaded module defines one."""
    return _REGISTRY.get(kind)


def registered_events() -> dict[str, type[PugEvent]]:
    """Every registered kind and its class (well-known events and imported catalogs)."""
    return dict(_REGISTRY)


class _Field(msgspec.Struct, frozen=True):
    attr: str
    wire: str
    variant: Variant
    # Bounds of a duration in seconds (msgspec.Meta cannot constrain a timedelta).
    seconds_bounds: dict[str, float] | None = None


_VARIANTS: dict[type[mi.Type], Variant] = {
    mi.StrType: Variant.STRING,
    mi.IntType: Variant.INT,
    mi.FloatType: Variant.DOUBLE,
    mi.BoolType: Variant.BOOL,
    mi.TimeDeltaType: Variant.DOUBLE,
    mi.DateTimeType: Variant.TIMESTAMP,
}


def _plan(cls: type[PugEvent]) -> tuple[tuple[_Field, ...], dict[str, str]]:
    """The fields of `cls` in wire form, and wire name → attribute name (for messages)."""
    cached = _PLANS.get(cls)
    if cached is not None:
        return cached
    fields = []
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    for f in info.fields:
        t = f.type
        extra = None
        if isinstance(t, mi.Metadata):
            extra = t.extra
            t = t.type
        if isinstance(t, mi.LiteralType):
            variant = Variant.STRING if isinstance(t.values[0], str) else Variant.INT
        else:
            variant = _VARIANTS[type(t)]
        bounds = (extra or {}).get("seconds") if isinstance(t, mi.TimeDeltaType) else None
        fields.append(_Field(f.name, f.encode_name, variant, bounds))
    plan = (tuple(fields), {f.wire: f.attr for f in fields})
    _PLANS[cls] = plan
    return plan


_PLANS: dict[type[PugEvent], tuple[tuple[_Field, ...], dict[str, str]]] = {}
_AT = re.compile(r"^(.*) - at `\$\.([^`\[]+)")
_MISSING = re.compile(r"^Object missing required field `(.+)`")
_OPS = {
    "gt": (float.__gt__, ">"),
    "gte": (float.__ge__, ">="),
    "lt": (float.__lt__, "<"),
    "lte": (float.__le__, "<="),
}


def _invalid(cls: type[PugEvent], attr: str | None, problem: str) -> PugValidationError:
    where = f"{cls.__name__} (kind '{cls.KIND}')"
    if attr is None:
        return PugValidationError(f"{where}: {problem}", kind=cls.KIND)
    return PugValidationError(f"{where}: field '{attr}' {problem}", kind=cls.KIND, field=attr)


def coerce(cls: type[PugEvent], data: object) -> PugEvent:
    """Build a `cls` from wire-named builtins, checking every type and catalog rule."""
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        wire_to_attr = _plan(cls)[1]
        message = str(exc)
        missing = _MISSING.match(message)
        if missing:
            attr = wire_to_attr.get(missing.group(1), missing.group(1))
            raise _invalid(cls, attr, "is required but missing") from None
        at = _AT.match(message)
        if at:
            attr = wire_to_attr.get(at.group(2), at.group(2))
            problem = at.group(1)
            raise _invalid(cls, attr, f"is invalid: {problem[:1].lower()}{problem[1:]}") from None
        raise _invalid(cls, None, message) from None


def _checked(event: PugEvent) -> PugEvent:
    cls = type(event)
    try:
        builtins = msgspec.to_builtins(event)
    except (TypeError, ValueError, OverflowError):
        for f in _plan(cls)[0]:
            try:
                msgspec.to_builtins(getattr(event, f.attr))
            except (TypeError, ValueError, OverflowError) as exc:
                raise _invalid(cls, f.attr, f"has a value that cannot be sent: {exc}") from None
        raise
    return coerce(cls, builtins)


def event_properties(event: PugEvent) -> tuple[str, WireProperties]:
    """Check `event` against its rules and return (kind, properties keyed by wire name).

    Values follow the field's declared type, not the value given: a `double` field
    given `50` is sent as 50.0, a duration as float seconds. Unset fields are left out;
    set zero values are kept. Raises `PugValidationError` naming the field and rule.
    """
    cls = type(event)
    checked = _checked(event)
    props: WireProperties = {}
    for f in _plan(cls)[0]:
        value = getattr(checked, f.attr)
        if value is msgspec.UNSET:
            continue
        if f.variant is Variant.DOUBLE:
            if isinstance(value, datetime.timedelta):
                value = value.total_seconds()
                if f.seconds_bounds:
                    _check_bounds(cls, f.attr, value, f.seconds_bounds)
            if not math.isfinite(value):
                raise _invalid(cls, f.attr, "must be a finite number")
        props[f.wire] = (f.variant, value)
    return cls.KIND, props


def _check_bounds(cls: type[PugEvent], attr: str, seconds: float, bounds: dict[str, float]) -> None:
    for key, limit in bounds.items():
        test, symbol = _OPS[key]
        if not test(seconds, float(limit)):
            raise _invalid(cls, attr, f"is invalid: expected a duration {symbol} {limit:g}s")


def validate(event: PugEvent) -> None:
    """Raise `PugValidationError` if `event` breaks a type or catalog rule of its class."""
    if not isinstance(event, PugEvent):
        raise PugValidationError(f"expected a PugEvent, got {type(event).__name__}")
    event_properties(event)
