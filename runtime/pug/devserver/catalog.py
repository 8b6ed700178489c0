"""The well-known events as the dev server's page describes them: for each kind of the
catalog (`pug.events.KINDS`), its class, its description and each field's wire name, type,
whether it is required, and its rules."""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

import msgspec.inspect as mi

# msgspec's constraint attributes (and a duration's, in its Metadata's `seconds`), as the
# page writes them.
_RULES = {
    "gt": ">", "ge": "≥", "gte": "≥", "lt": "<", "le": "≤", "lte": "≤",
    "multiple_of": "multiple of", "min_length": "min length", "max_length": "max length",
    "pattern": "pattern",
}  # fmt: skip


@functools.cache
def catalog() -> dict[str, dict[str, Any]]:
    """Kind → {class, description, fields: [{name, wire, type, required, rules}]}."""
    import pug.events

    out: dict[str, dict[str, Any]] = {}
    for kind, (module, name) in pug.events.KINDS.items():
        cls = getattr(importlib.import_module(f"pug.events.{module}"), name)
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType)
        out[kind] = {
            "class": f"pug.events.{name}",
            "description": (inspect.getdoc(cls) or "").split("\n\n")[0],
            "fields": [
                {
                    "name": f.name,
                    "wire": f.encode_name,
                    "type": _type_name(f.type),
                    "required": f.required,
                    "rules": _rules(f.type),
                }
                for f in info.fields
            ],
        }
    return out


def _type_name(info: mi.Type) -> str:
    if isinstance(info, mi.Metadata):  # a duration: sent as a number of seconds
        return (
            "duration (seconds)"
            if isinstance(info.type, mi.TimeDeltaType)
            else _type_name(info.type)
        )
    if isinstance(info, mi.UnionType):
        return " | ".join(_type_name(t) for t in info.types)
    return type(info).__name__.removesuffix("Type").lower()


def _rules(info: mi.Type) -> str:
    if isinstance(info, mi.Metadata):
        seconds = (info.extra or {}).get("seconds", {})
        own = [f"{_RULES[k]} {v} s" for k, v in seconds.items() if k in _RULES]
        return ", ".join(filter(None, [_rules(info.type), *own]))
    found = {label: getattr(info, attribute, None) for attribute, label in _RULES.items()}
    return ", ".join(f"{label} {value}" for label, value in found.items() if value is not None)
