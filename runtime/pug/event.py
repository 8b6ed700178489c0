"""Typed events: the `PugEvent` base of every generated event Struct, and how one is
checked against its catalog rules and turned into wire-ready properties.

The rules live in one place, the `msgspec.Meta` annotations the generator writes on
each field; this module reads them back through `msgspec.inspect` so the runtime and
the catalog can never disagree.
"""

from __future__ import annotations

import datetime
import importlib
import re
from enum import IntEnum
from types import ModuleType
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
    "load_well_known",
    "registered_events",
    "validate",
    "well_known_kinds",
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

# Kind → class of every registered typed event (read-only outside this module).
REGISTRY: dict[str, type[PugEvent]] = {}


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
            REGISTRY[kind] = cls


def event_class(kind: str) -> type[PugEvent] | None:
    """The typed event class registered for `kind`: Pug's well-known events (their
    module imported the first time one of its kinds is asked for), and those of any
    catalog module that has been imported."""
    cls = REGISTRY.get(kind)
    if cls is None:
        where = well_known_kinds().get(kind)
        if where is not None:
            module, name = where
            cls = getattr(_import_well_known(module), name)
            # Registered when its module was first imported; again if the registry was
            # put back since (tests do), as the import is not made twice.
            REGISTRY.setdefault(kind, cls)
    return cls


_WELL_KNOWN: dict[str, tuple[str, str]] | None = None


def well_known_kinds() -> dict[str, tuple[str, str]]:
    """Each well-known kind's module and class name (`pug.events.KINDS`), read without
    importing the modules; clients read it when they are made, so that the first track()
    of a custom kind imports nothing. A function-level import: `pug.events` builds on
    this module."""
    global _WELL_KNOWN
    if _WELL_KNOWN is None:
        try:
            _WELL_KNOWN = importlib.import_module("pug.events").KINDS
        except (ImportError, AttributeError):  # a broken install: custom events still work
            _WELL_KNOWN = {}
    return _WELL_KNOWN


def _import_well_known(module: str) -> ModuleType:
    """Import one domain of the well-known events, and read how each of its classes goes
    on the wire (~0.2 ms a class, from msgspec) now rather than at its first event."""
    imported = importlib.import_module(f"pug.events.{module}")
    for cls in list(REGISTRY.values()):
        if cls.__module__ == imported.__name__:
            _plan(cls)
    return imported


def load_well_known() -> None:
    """Import every well-known event now (clients no longer do: each domain is imported
    when one of its kinds is first tracked as a string)."""
    for kind in well_known_kinds():
        event_class(kind)


def registered_events() -> dict[str, type[PugEvent]]:
    """Every registered kind and its class (well-known events and imported catalogs)."""
    load_well_known()
    return dict(REGISTRY)


class _Field(msgspec.Struct, frozen=True):
    attr: str
    variant: Variant
    # How the builtin value from `msgspec.to_builtins` becomes the wire value.
    convert: int  # _AS_IS, _FLOAT, _DURATION or _DATETIME
    # Bounds of a duration in seconds (msgspec.Meta cannot constrain a timedelta).
    seconds_bounds: dict[str, float] | None = None


_AS_IS, _FLOAT, _DURATION, _DATETIME = range(4)
_KINDS: dict[type[mi.Type], tuple[Variant, int]] = {
    mi.StrType: (Variant.STRING, _AS_IS),
    mi.IntType: (Variant.INT, _AS_IS),
    mi.BoolType: (Variant.BOOL, _AS_IS),
    mi.FloatType: (Variant.DOUBLE, _FLOAT),
    mi.TimeDeltaType: (Variant.DOUBLE, _DURATION),
    mi.DateTimeType: (Variant.TIMESTAMP, _DATETIME),
}
_Plan: TypeAlias = dict[str, _Field]  # wire name → field
_PLANS: dict[type[PugEvent], _Plan] = {}


def _plan(cls: type[PugEvent]) -> _Plan:
    """How each field of `cls` goes on the wire, by wire name (built once per class)."""
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    plan = {}
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    for f in info.fields:
        t = f.type
        extra = None
        if isinstance(t, mi.Metadata):
            extra = t.extra
            t = t.type
        if isinstance(t, mi.LiteralType):
            kind = (Variant.STRING if isinstance(t.values[0], str) else Variant.INT, _AS_IS)
        else:
            kind = _KINDS[type(t)]
        bounds = (extra or {}).get("seconds") if kind[1] == _DURATION else None
        plan[f.encode_name] = _Field(f.name, kind[0], kind[1], bounds)
    _PLANS[cls] = plan
    return plan


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
        plan = _plan(cls)
        message = str(exc)
        missing = _MISSING.match(message)
        if missing:
            wire = missing.group(1)
            attr = plan[wire].attr if wire in plan else wire
            raise _invalid(cls, attr, "is required but missing") from None
        at = _AT.match(message)
        if at:
            wire, problem = at.group(2), at.group(1)
            attr = plan[wire].attr if wire in plan else wire
            raise _invalid(cls, attr, f"is invalid: {problem[:1].lower()}{problem[1:]}") from None
        raise _invalid(cls, None, message) from None


def _to_builtins(event: PugEvent) -> dict[str, Any]:
    try:
        builtins: dict[str, Any] = msgspec.to_builtins(event)
        return builtins
    except (TypeError, ValueError, OverflowError):
        for f in _plan(type(event)).values():
            try:
                msgspec.to_builtins(getattr(event, f.attr))
            except (TypeError, ValueError, OverflowError) as exc:
                problem = f"has a value that cannot be sent: {exc}"
                raise _invalid(type(event), f.attr, problem) from None
        raise


def event_properties(event: PugEvent) -> tuple[str, WireProperties]:
    """Check `event` against its rules and return (kind, properties keyed by wire name).

    Values follow the field's declared type, not the value given: a `double` field
    given `50` is sent as 50.0, a duration as float seconds. Unset fields are left out;
    set zero values are kept. Raises `PugValidationError` naming the field and rule.
    """
    cls = type(event)
    plan = _plan(cls)
    # to_builtins drops unset fields; convert checks types and every Meta rule.
    try:
        builtins: dict[str, Any] = msgspec.to_builtins(event)
        checked = msgspec.convert(builtins, cls)
    except Exception:
        checked = coerce(cls, _to_builtins(event))  # raises the readable error
        builtins = msgspec.to_builtins(event)
    props: WireProperties = {}
    for wire, value in builtins.items():
        f = plan[wire]
        props[wire] = (
            f.variant,
            value if f.convert == _AS_IS else _converted(cls, checked, f, value),
        )
    return cls.KIND, props


def _converted(cls: type[PugEvent], checked: PugEvent, f: _Field, value: Any) -> Any:
    """A builtin value as its declared wire type (for fields not sent as they are)."""
    if f.convert == _FLOAT:
        value = float(value)
        if value - value != 0.0:  # inf - inf and nan - nan are nan
            raise _invalid(cls, f.attr, "must be a finite number")
        return value
    if f.convert == _DURATION:
        seconds: float = getattr(checked, f.attr).total_seconds()
        if f.seconds_bounds:
            _check_bounds(cls, f.attr, seconds, f.seconds_bounds)
        return seconds
    return getattr(checked, f.attr)  # a datetime


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
