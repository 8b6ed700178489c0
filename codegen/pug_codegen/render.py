"""Render a checked catalog into Python modules and a Markdown reference (Jinja)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2

from pug_codegen.catalog import INT_RANGES, Catalog, Event, Property, camel
from pug_codegen.patterns import python_pattern
from pug_codegen.rules import LIMITS, PREFIXES, Rules, pattern_literal

PY_TYPES = {
    "string": "str",
    "bool": "bool",
    "int32": "int",
    "int64": "int",
    "double": "float",
    "duration": "datetime.timedelta",
    "timestamp": "datetime.datetime",
}


def templates_dir() -> Path:
    """The templates: shipped inside the wheel, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("pug-codegen cannot find its templates folder")


# One environment per process: it compiles each template once (a new one per render compiled
# them all again, most of a generation's time).
@functools.cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["annotation"] = annotation
    env.filters["rename"] = rename_argument
    env.filters["pyrepr"] = pyrepr
    env.filters["rules"] = rules_text
    env.filters["attribute_doc"] = attribute_doc
    env.filters["mdcell"] = lambda s: str(s).replace("|", "\\|")
    env.filters["encoder_fields"] = encoder_fields
    env.filters["pattern_literal"] = pattern_literal
    return env


def pyrepr(value: object) -> str:
    """A Python literal, strings in double quotes (the style of the rest of the code)."""
    if isinstance(value, bytes):
        return 'b"' + "".join(f"\\x{b:02x}" for b in value) + '"'
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{pyrepr(k)}: {pyrepr(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _meta_args(p: Property) -> list[str]:
    args: list[str] = []
    if p.type == "string":
        if p.pattern is not None:
            # msgspec matches with Python's re.search: the pattern as Python must read it
            # to match what RE2 (the server's engine) does, e.g. `$` written as `\Z`.
            args.append(f"pattern={pyrepr(python_pattern(p.pattern))}")
        for key, meta in (("min_len", "min_length"), ("max_len", "max_length")):
            value = getattr(p, key)
            if value is not None:
                args.append(f"{meta}={pyrepr(value)}")
    elif p.type in INT_RANGES and p.allowed is None:
        low, high = int_bounds(p)
        args += [f"ge={low}", f"le={high}"]
    elif p.type == "double":
        for key, meta in (("gt", "gt"), ("gte", "ge"), ("lt", "lt"), ("lte", "le")):
            value = getattr(p, key)
            if value is not None:
                args.append(f"{meta}={float(value)!r}")
    extra: dict[str, object] = {}
    if p.type == "duration":
        seconds = {
            k: float(getattr(p, k)) for k in ("gt", "gte", "lt", "lte") if getattr(p, k) is not None
        }
        if seconds:
            extra["seconds"] = seconds
    if p.pii:
        extra["pii"] = True
    if p.description:
        args.append(f"description={pyrepr(p.description)}")
    if extra:
        args.append(f"extra={pyrepr(extra)}")
    return args


def int_bounds(p: Property) -> tuple[int, int]:
    """The inclusive range an int property accepts: its type's, narrowed by its rules."""
    low, high = INT_RANGES[p.type]
    if p.gte is not None:
        low = max(low, int(p.gte))
    if p.gt is not None:
        low = max(low, int(p.gt) + 1)
    if p.lte is not None:
        high = min(high, int(p.lte))
    if p.lt is not None:
        high = min(high, int(p.lt) - 1)
    return low, high


def annotation(p: Property) -> str:
    """The field's annotation: type, `msgspec.Meta` constraints, `| UnsetType` if optional."""
    if p.allowed is not None:
        base = "Literal[" + ", ".join(pyrepr(v) for v in p.allowed) + "]"
    else:
        base = PY_TYPES[p.type]
    args = _meta_args(p)
    typed = f"Annotated[{base}, Meta({', '.join(args)})]" if args else base
    return typed if p.required else f"{typed} | UnsetType"


def rename_argument(e: Event) -> str:
    """The class keyword that maps field names to wire names ('' when they are the same)."""
    renamed = {p.attr: p.wire_name for p in e.properties if p.wire_name != p.attr}
    if not renamed:
        return ""
    if all(p.wire_name == camel(p.attr) for p in e.properties):
        return ', rename="camel"'
    return f", rename={pyrepr(renamed)}"


_COMPARE = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def encoder_fields(e: Event) -> list[dict[str, object]]:
    """What the generated encoder of `e` needs per property: its kind on the wire, the
    module constant(s) it uses, the name of its entry cache (string and int fields; the
    caches are the client's, handed to the encoder), and its catalog rules as one Python
    expression (over `v`, or `s` for a duration's seconds) true when the value may be sent."""
    fields: list[dict[str, object]] = []
    for p in e.properties:
        const = f"_{e.class_name}_{p.attr}"
        rules: list[str] = []
        consts: list[str] = []
        if p.type == "string":
            kind = "string"
            if p.allowed is not None:
                rules.append(f"v in ({''.join(pyrepr(a) + ', ' for a in p.allowed)})")
            if p.min_len is not None:
                rules.append(f"len(v) >= {p.min_len}")
            if p.max_len is not None:
                rules.append(f"len(v) <= {p.max_len}")
            if p.pattern is not None:
                python = pyrepr(python_pattern(p.pattern))  # as in its Meta (see _meta_args)
                consts.append(f"{const}_re = re.compile({python})")
                rules.append(f"{const}_re.search(v)")
        elif p.type in INT_RANGES:
            kind = "int"
            if p.allowed is not None:
                rules.append(f"v in ({''.join(pyrepr(a) + ', ' for a in p.allowed)})")
            else:
                low, high = int_bounds(p)
                rules.append(f"{low} <= v <= {high}")
        elif p.type in ("double", "duration"):
            kind = p.type
            consts.append(f"{const} = _support.double_prefix({pyrepr(p.wire_name)})")
            var = "v" if p.type == "double" else "s"
            if p.type == "double":
                rules.append("v - v == 0.0")  # finite: inf - inf and nan - nan are nan
            for key, op in _COMPARE.items():
                limit = getattr(p, key)
                if limit is not None:
                    rules.append(f"{var} {op} {float(limit)!r}")
        elif p.type == "bool":
            kind = "bool"
            consts.append(f"{const} = _support.bool_entries({pyrepr(p.wire_name)})")
        else:
            kind = "timestamp"
        fields.append(
            {
                "attr": p.attr,
                "wire": p.wire_name,
                "kind": kind,
                "const": const,
                "cache": f"_{p.attr}" if kind in ("string", "int") else "",
                "consts": consts,
                "rule": " and ".join(rules),
                "optional": not p.required,
            }
        )
    return fields


def attribute_doc(p: Property) -> str:
    """One line of a class docstring's `Attributes:` section (what the API reference and
    editors show): the description, the wire name, whether required, the rules, pii. Safe
    inside a triple-quoted string (backslashes of patterns doubled)."""
    parts = [p.description.rstrip(".")] if p.description else []
    parts.append(f"sent as `{p.wire_name}`")
    if p.required:
        parts.append("required")
    if rules := rules_text(p):
        parts.append(rules)
    if p.pii:
        parts.append("personal data (pii)")
    line = "; ".join(parts) + "."
    return line.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def rules_text(p: Property) -> str:
    """The property's rules in a few words, for docs."""
    parts = []
    for key, value in p.constraints.items():
        if key == "pattern":
            parts.append(f"matches `{value}`")
        elif key == "in":
            parts.append("one of " + ", ".join(f"`{v}`" for v in value))  # type: ignore[attr-defined]
        else:
            unit = "s" if p.type == "duration" else ""
            symbol = {
                "gt": ">",
                "gte": "≥",
                "lt": "<",
                "lte": "≤",
                "min_len": "length ≥",
                "max_len": "length ≤",
            }[key]
            shown = int(value) if isinstance(value, float) and value.is_integer() else value
            parts.append(f"{symbol} {shown}{unit}")
    return ", ".join(parts)


def _imports(events: list[Event]) -> dict[str, object]:
    """What a module of these events must import, and nothing more."""
    annotations = [annotation(p) for e in events for p in e.properties]
    typing = ["Annotated", "Any", "ClassVar", "Literal"]
    used_typing = [
        name
        for name in typing
        if name in ("Any", "ClassVar") or any(name + "[" in a for a in annotations)
    ]
    optional = any(not p.required for e in events for p in e.properties)
    used_msgspec = [
        name
        for name, used in (
            ("UNSET", optional),
            ("Meta", any("Meta(" in a for a in annotations)),
            ("UnsetType", optional),
        )
        if used
    ]
    return {
        "datetime": any("datetime." in a for a in annotations),
        "re": any(p.pattern is not None for e in events for p in e.properties),
        "typing": used_typing,
        "msgspec": used_msgspec,
    }


def render(template: str, **context: object) -> str:
    """Render one template with the generator's filters."""
    return _env().get_template(template).render(**context)


def events_module(events: list[Event], *, title: str, header: list[str], registry: bool) -> str:
    """A module of event Structs: a domain of Pug's catalog, or a user's whole catalog
    (then with its own `EVENTS` registry)."""
    return render(
        "events_module.py.j2",
        events=events,
        title=title,
        header=header,
        registry=registry,
        imports=_imports(events),
    )


def events_package(catalog: Catalog, *, others: list[Event], header: list[str]) -> dict[str, str]:
    """Pug's well-known events: `events/<domain>.py`, `events/__init__.py` and the
    Markdown reference, as relative path → text."""
    domains = catalog.domains()
    files = {
        f"events/{domain}.py": events_module(
            events, title=f"Pug's well-known {domain} events.", header=header, registry=False
        )
        for domain, events in domains.items()
    }
    files["events/__init__.py"] = render(
        "events_init.py.j2", domains=domains, all_events=catalog.events, header=header
    )
    files["events/README.md"] = render(
        "events_reference.md.j2",
        domains=domains,
        all_events=catalog.events,
        other_events=others,
        header=header,
    )
    return files


def resources_module(
    resources: list[Any], imports: list[tuple[str, str, str]], *, header: list[str]
) -> str:
    """The read API facade: a sync and an async class per resource."""
    uses_datetime = any(
        "datetime." in (p.annotation or "") for r in resources for m in r.methods for p in m.params
    ) or any(
        "datetime." in (m.unwrap_type or m.item_type or "") for r in resources for m in r.methods
    )
    return render(
        "resources.py.j2",
        resources=resources,
        imports=imports,
        header=header,
        uses_datetime=uses_datetime,
    )


def wire_tags_module(tags: list[Any], *, header: list[str]) -> str:
    """The field tags of the hand-written encoder's messages."""
    return render("wire_tags.py.j2", tags=tags, header=header)


def rules_module(rules: Rules, *, header: list[str]) -> str:
    """The server's validation rules (`pug.rules`)."""
    return render(
        "rules.py.j2",
        rules=rules,
        limit_sources=LIMITS,
        prefix_sources=PREFIXES,
        header=header,
    )
