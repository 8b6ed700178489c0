"""The event catalog: YAML tracking plans parsed into typed, checked models.

A catalog is one or more YAML files (format: catalog/README.md). Every mistake is
raised as a `CatalogError` that names the file, the line where YAML gives one, the
event and the property, so a tracking plan is fixed from the message alone.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from pug_codegen.patterns import UnsupportedPattern, compile_pattern

# With `$` read as RE2 reads it (the end of the text, not also before a final newline), as
# every pattern here: a kind "purchase\n" is not a kind.
KIND_PATTERN = compile_pattern(r"^[a-zA-Z0-9_.-]+$")
PROPERTY_NAME = compile_pattern(r"^[a-z_][a-z0-9_]*$")
CLASS_NAME = compile_pattern(r"^[A-Z][A-Za-z0-9]*$")
PLATFORMS = ("web", "ios", "android", "desktop", "server")

PropertyType = Literal["string", "bool", "int32", "int64", "double", "duration", "timestamp"]
NUMERIC = {"int32", "int64", "double", "duration"}
# Which constraint keys fit which property types.
CONSTRAINTS: dict[str, set[str]] = {
    "pattern": {"string"},
    "min_len": {"string"},
    "max_len": {"string"},
    "gt": NUMERIC,
    "gte": NUMERIC,
    "lt": NUMERIC,
    "lte": NUMERIC,
    "in": {"string", "int32", "int64"},
}
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class CatalogError(Exception):
    """A catalog that cannot be turned into events; the message says where and why."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path,
        line: int | None = None,
        event: str | None = None,
        prop: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = str(file)
        self.line = line
        self.event = event
        self.prop = prop
        where = self.file + (f":{line}" if line is not None else "")
        what = "".join(
            [f" event '{event}'" if event else "", f" property '{prop}'" if prop else ""]
        )
        super().__init__(f"{where}:{what}{':' if what else ''} {problem}")


# The raw shapes, as msgspec decodes them from YAML. Unknown keys are errors.
class _RawProperty(msgspec.Struct, forbid_unknown_fields=True, rename={"in_": "in"}):
    type: str
    required: bool = False
    description: str = ""
    pii: bool = False
    wire_name: str | None = None
    pattern: str | None = None
    min_len: int | None = None
    max_len: int | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    in_: list[str | int] | None = None


class _RawEvent(msgspec.Struct, forbid_unknown_fields=True, rename={"class_": "class"}):
    description: str = ""
    class_: str | None = None
    domain: str | None = None
    platforms: list[str] = []
    properties: dict[str, Any] = {}


class _RawFile(msgspec.Struct, forbid_unknown_fields=True):
    events: dict[str, Any]
    domain: str | None = None
    wire_names: Literal["as_written", "camel"] = "as_written"
    description: str = ""


@dataclass(frozen=True)
class Property:
    """One typed property of an event."""

    name: str
    type: PropertyType
    wire_name: str
    required: bool = False
    description: str = ""
    pii: bool = False
    pattern: str | None = None
    min_len: int | None = None
    max_len: int | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    allowed: tuple[str | int, ...] | None = None

    @property
    def attr(self) -> str:
        """The Python attribute: the name, with `_` appended to a keyword (`class_`)."""
        return self.name + "_" if keyword.iskeyword(self.name) else self.name

    @property
    def constraints(self) -> dict[str, object]:
        """The constraints that are set, by catalog key, in catalog order."""
        found = {
            "pattern": self.pattern,
            "min_len": self.min_len,
            "max_len": self.max_len,
            "gt": self.gt,
            "gte": self.gte,
            "lt": self.lt,
            "lte": self.lte,
            "in": list(self.allowed) if self.allowed is not None else None,
        }
        return {k: v for k, v in found.items() if v is not None}


@dataclass(frozen=True)
class Event:
    """One event kind with its typed properties."""

    kind: str
    class_name: str
    domain: str
    description: str
    platforms: tuple[str, ...]
    properties: tuple[Property, ...]
    source: str

    def for_platform(self, platform: str) -> bool:
        """True when the event is sent from `platform` (no platforms listed = every one)."""
        return not self.platforms or platform in self.platforms


@dataclass
class Catalog:
    """The events of one or more catalog files, in file order then catalog order."""

    events: list[Event] = field(default_factory=list)

    def domains(self) -> dict[str, list[Event]]:
        """Events grouped by domain, domains sorted by name."""
        grouped: dict[str, list[Event]] = {}
        for event in self.events:
            grouped.setdefault(event.domain, []).append(event)
        return dict(sorted(grouped.items()))

    def filtered(self, platform: str) -> Catalog:
        """Only the events sent from `platform`."""
        return Catalog([e for e in self.events if e.for_platform(platform)])


def class_name_for(kind: str) -> str:
    """`order.completed` → `OrderCompleted`; `add_to_cart` → `AddToCart`."""
    words = [w for w in re.split(r"[._\-]+", kind) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words)
    return name if name[:1].isalpha() else "Event" + name


def camel(name: str) -> str:
    """snake_case → lowerCamelCase, the protobuf JSON name rule."""
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def load(paths: Iterable[str | Path]) -> Catalog:
    """Parse and check catalog files; raises CatalogError at the first mistake."""
    catalog = Catalog()
    kinds: dict[str, str] = {}
    classes: dict[str, str] = {}
    for path in sorted(Path(p) for p in paths):
        for event in _load_file(path):
            where = f"{event.source}"
            if event.kind in kinds:
                raise CatalogError(
                    f"duplicate kind (first defined at {kinds[event.kind]})",
                    file=path,
                    line=_line_from(where),
                    event=event.kind,
                )
            if event.class_name in classes:
                raise CatalogError(
                    f"duplicate class name '{event.class_name}' "
                    f"(also used at {classes[event.class_name]})",
                    file=path,
                    line=_line_from(where),
                    event=event.kind,
                )
            kinds[event.kind] = where
            classes[event.class_name] = where
            catalog.events.append(event)
    return catalog


def _line_from(source: str) -> int | None:
    _, _, line = source.rpartition(":")
    return int(line) if line.isdigit() else None


class _Node:
    """A YAML mapping node with the line of each key, for error messages."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.node = node

    @property
    def line(self) -> int | None:
        return self.node.start_mark.line + 1 if self.node is not None else None

    def child(self, key: str) -> _Node:
        if isinstance(self.node, yaml.MappingNode):
            for k, v in self.node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    return _Node(v)
        return _Node(None)

    def key_line(self, key: str) -> int | None:
        if isinstance(self.node, yaml.MappingNode):
            for k, _ in self.node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    return int(k.start_mark.line) + 1
        return self.line

    def duplicate_key(self) -> tuple[str, int] | None:
        """The first key that appears twice in this mapping (YAML loaders keep the last)."""
        seen: set[str] = set()
        if isinstance(self.node, yaml.MappingNode):
            for k, _ in self.node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in seen:
                        return str(k.value), int(k.start_mark.line) + 1
                    seen.add(k.value)
        return None


def _convert(raw: object, shape: type[Any], err: Any) -> Any:
    try:
        return msgspec.convert(raw, shape, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        unknown = re.match(r"Object contains unknown field `(.+)`", message)
        if unknown:
            raise err(f"unknown key '{unknown.group(1)}'", unknown.group(1)) from None
        missing = re.match(r"Object missing required field `(.+)`", message)
        if missing:
            raise err(f"missing key '{missing.group(1)}'", None) from None
        located = re.match(r"(.*) - at `\$\.(\w+)", message)
        if located:
            raise err(f"'{located.group(2)}': {located.group(1)}", located.group(2)) from None
        raise err(message, None) from None


def _load_file(path: Path) -> list[Event]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read the file: {exc.strerror}", file=path) from None
    try:
        root = _Node(yaml.compose(text, Loader=yaml.SafeLoader))
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or exc
        raise CatalogError(f"not valid YAML: {problem}", file=path, line=line) from None
    if not isinstance(data, dict):
        raise CatalogError("a catalog file is a mapping with an 'events' key", file=path, line=1)

    def file_error(problem: str, key: str | None) -> CatalogError:
        return CatalogError(problem, file=path, line=root.key_line(key) if key else 1)

    raw_file: _RawFile = _convert(data, _RawFile, file_error)
    events_node = root.child("events")
    dup = events_node.duplicate_key()
    if dup:
        raise CatalogError("duplicate kind in this file", file=path, line=dup[1], event=dup[0])
    domain_default = raw_file.domain or re.sub(r"\W", "_", path.stem)
    return [
        _event(
            path,
            kind,
            raw,
            events_node.child(kind),
            events_node.key_line(kind),
            raw_file,
            domain_default,
        )
        for kind, raw in raw_file.events.items()
    ]


def _event(
    path: Path,
    kind: object,
    raw: object,
    node: _Node,
    line: int | None,
    raw_file: _RawFile,
    domain_default: str,
) -> Event:
    kind = str(kind)

    def event_error(problem: str, key: str | None) -> CatalogError:
        return CatalogError(
            problem, file=path, line=node.key_line(key) if key else line, event=kind
        )

    if not KIND_PATTERN.match(kind):
        raise event_error("kind must match ^[a-zA-Z0-9_.-]+$", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise event_error("an event is a mapping (description, properties, ...)", None)
    ev: _RawEvent = _convert(raw, _RawEvent, event_error)
    class_name = ev.class_ or class_name_for(kind)
    if not CLASS_NAME.match(class_name) or class_name in {"PugEvent", "EVENTS"}:
        raise event_error(f"class name '{class_name}' is not a usable Python class name", "class")
    for platform in ev.platforms:
        if platform not in PLATFORMS:
            raise event_error(
                f"unknown platform '{platform}' (one of: {', '.join(PLATFORMS)})", "platforms"
            )
    props_node = node.child("properties")
    dup = props_node.duplicate_key()
    if dup:
        raise CatalogError(
            "duplicate property in this event", file=path, line=dup[1], event=kind, prop=dup[0]
        )
    properties = tuple(
        _property(path, kind, str(name), value, props_node.key_line(str(name)), raw_file)
        for name, value in ev.properties.items()
    )
    wire_names = [p.wire_name for p in properties]
    for p in properties:
        if wire_names.count(p.wire_name) > 1:
            raise CatalogError(
                f"wire name '{p.wire_name}' is used by more than one property",
                file=path,
                line=props_node.key_line(p.name),
                event=kind,
                prop=p.name,
            )
    return Event(
        kind=kind,
        class_name=class_name,
        domain=ev.domain or domain_default,
        description=" ".join(ev.description.split()),
        platforms=tuple(ev.platforms),
        properties=properties,
        source=f"{path}:{line}",
    )


def _property(
    path: Path, kind: str, name: str, raw: object, line: int | None, raw_file: _RawFile
) -> Property:
    def prop_error(problem: str, key: str | None = None) -> CatalogError:
        return CatalogError(problem, file=path, line=line, event=kind, prop=name)

    if name.startswith("$"):
        raise prop_error("property names must not start with '$' (reserved for auto-properties)")
    if not PROPERTY_NAME.match(name):
        raise prop_error("property names are snake_case identifiers (^[a-z_][a-z0-9_]*$)")
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise prop_error("a property is a mapping with at least a 'type'")
    rp: _RawProperty = _convert(raw, _RawProperty, prop_error)
    types: Sequence[str] = PropertyType.__args__  # type: ignore[attr-defined]
    if rp.type not in types:
        raise prop_error(f"unknown type '{rp.type}' (one of: {', '.join(types)})")
    for key, fits in CONSTRAINTS.items():
        value = getattr(rp, "in_" if key == "in" else key)
        if value is not None and rp.type not in fits:
            raise prop_error(f"constraint '{key}' does not fit type '{rp.type}'")
    _check_constraints(rp, prop_error)
    wire_name = rp.wire_name or (camel(name) if raw_file.wire_names == "camel" else name)
    if wire_name.startswith("$") or not wire_name:
        raise prop_error("wire names must be non-empty and must not start with '$'")
    ints = rp.type in INT_RANGES

    def num(v: float | None) -> float | None:
        return int(v) if (v is not None and ints) else v

    return Property(
        name=name,
        type=rp.type,  # type: ignore[arg-type]
        wire_name=wire_name,
        required=rp.required,
        description=" ".join(rp.description.split()),
        pii=rp.pii,
        pattern=rp.pattern,
        min_len=rp.min_len,
        max_len=rp.max_len,
        gt=num(rp.gt),
        gte=num(rp.gte),
        lt=num(rp.lt),
        lte=num(rp.lte),
        allowed=tuple(rp.in_) if rp.in_ is not None else None,
    )


def _check_constraints(rp: _RawProperty, prop_error: Any) -> None:
    if rp.pattern is not None:
        # RE2 syntax, as the server's rules: checked as the generated code will match it.
        try:
            compile_pattern(rp.pattern)
        except UnsupportedPattern as exc:
            raise prop_error(str(exc)) from None
        except re.error as exc:
            raise prop_error(f"pattern {rp.pattern!r} does not compile: {exc}") from None
    for key in ("min_len", "max_len"):
        value = getattr(rp, key)
        if value is not None and value < 0:
            raise prop_error(f"'{key}' must be 0 or more")
    if rp.min_len is not None and rp.max_len is not None and rp.min_len > rp.max_len:
        raise prop_error("'min_len' is greater than 'max_len'")
    bounds = {k: getattr(rp, k) for k in ("gt", "gte", "lt", "lte")}
    for key, value in bounds.items():
        if value is None:
            continue
        if not math.isfinite(value):
            raise prop_error(f"'{key}' must be a finite number")
        if rp.type in INT_RANGES and not float(value).is_integer():
            raise prop_error(f"'{key}' must be a whole number for type '{rp.type}'")
    if bounds["gt"] is not None and bounds["gte"] is not None:
        raise prop_error("give at most one of 'gt' and 'gte'")
    if bounds["lt"] is not None and bounds["lte"] is not None:
        raise prop_error("give at most one of 'lt' and 'lte'")
    if rp.in_ is not None:
        want = str if rp.type == "string" else int
        if not rp.in_ or any(type(v) is not want for v in rp.in_):
            raise prop_error(f"'in' must be a non-empty list of {rp.type} values")
