"""The Pug server's validation rules, read from the wire contract for `generated/pug/rules.py`.

The contract (`catalog/contract/pug-wire-contract.json`) carries every field's protovalidate
rules and every message's CEL rules. This module gathers them for the messages the SDK's
API takes as input (each service method's request and every message it holds), turns each
rule into the Python literal the template writes, and names the few the runtime uses
(`KIND_PATTERN`, `MAX_BATCH_EVENTS`, `RESERVED_ID_PREFIX`, ...). A rule it does not know
stops the generator: a new kind of rule must be modelled, not dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pug_codegen.catalog import CatalogError
from pug_codegen.patterns import python_pattern

CONTRACT = "catalog/contract/pug-wire-contract.json"
# protovalidate's definition of `string.uuid` (the contract names the rule, not its regex).
UUID_SOURCE = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

# The rules the runtime uses by name. Each names the field (or CEL rule ids) it comes from,
# so a contract that drops or renames one fails generation instead of a check vanishing.
PATTERNS = {  # constant → a field whose `string.pattern` it is
    "KIND_PATTERN": "sdk.events.v1.Event.kind",
    "KIND_OR_EMPTY_PATTERN": "common.v1.EventFilter.kind",
    "PROPERTY_PATH_PATTERN": "common.v1.PropertyFilter.property",
    "PROPERTY_KEY_PATTERN": "shared.insights.v1.Breakdown.property",
    "PROPERTY_KEY_OR_EMPTY_PATTERN": "shared.insights.v1.EventQuery.aggregation_property",
    "ANONYMOUS_ID_PATTERN": "sdk.profiles.v1.IdentifyRequest.anonymous_id",
    "TIMEZONE_PATTERN": "shared.insights.v1.QueryRequest.timezone",
}
LIMITS = {  # constant → (field, rule)
    "MAX_BATCH_EVENTS": ("sdk.events.v1.BatchCreateRequest.events", "max_items"),
    "MAX_STRING_CHARS": ("common.v1.PropertyValue.string_value", "max_len"),
    "MAX_ANONYMOUS_ID_CHARS": ("sdk.profiles.v1.IdentifyRequest.anonymous_id", "max_len"),
    "MAX_DEVICE_ID_CHARS": ("sdk.profiles.v1.IdentifyRequest.device_id", "max_len"),
    "MAX_PAGE_SIZE": ("shared.activity.v1.GetActivityFeedRequest.page_size", "lte"),
}
PREFIXES = {  # constant → the CEL rules (by id) whose one `startsWith('…')` literal it is
    "AUTO_PROPERTY_PREFIX": (
        "event.auto_properties_dollar_prefix",
        "event.custom_properties_no_dollar_prefix",
    ),
    "RESERVED_ID_PREFIX": ("batch.distinct_id_reserved_prefix", "external_id.reserved_prefix"),
}
# The prefix an anonymous id must carry, read from ANONYMOUS_ID_PATTERN (`^$|^anon-`).
_ANONYMOUS_FORM = re.compile(r"\^\$\|\^([A-Za-z0-9_-]+)")
# QueryRequest's CEL rules that bound the time range of one granularity.
_MAX_RANGE = re.compile(
    r"this\.granularity != (?P<enum>[\w.]+)\.(?P<value>\w+)\s*\|\|\s*"
    r"this\.time_range\.to - this\.time_range\.from <= duration\('(?P<hours>[0-9]+)h'\)"
)
_STARTS_WITH = re.compile(r"startsWith\('([^']*)'\)")
_DURATION = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?)s")

# Rule keys the model knows, per protovalidate rule group; anything else is refused.
_KNOWN = {
    "string": {"pattern", "uuid", "min_len", "max_len"},
    "repeated": {"min_items", "max_items", "items"},
    "enum": {"defined_only", "not_in"},
    "double": {"finite", "gt", "gte", "lt", "lte"},
    "int32": {"gt", "gte", "lt", "lte"},
    "int64": {"gt", "gte", "lt", "lte"},
    "duration": {"gt", "gte", "lt", "lte"},
}


class ContractError(CatalogError):
    """A rule of the wire contract the generator cannot model, or a named rule gone."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem, file=CONTRACT)


@dataclass(frozen=True)
class Pattern:
    name: str  # the module constant, or "" when written inline
    source: str  # RE2, as the contract writes it
    python: str  # as Python's re must read it (pug_codegen.patterns)


@dataclass(frozen=True)
class Cel:
    id: str
    message: str
    expression: str


@dataclass
class FieldRules:
    """One field's rules as `keyword=literal` arguments of the generated `Field(...)`."""

    name: str
    args: list[str] = field(default_factory=list)


@dataclass
class MessageRules:
    name: str
    fields: list[FieldRules]
    cel: list[str]  # rule ids, in contract order
    required_oneofs: str  # a tuple literal, "" for none


@dataclass
class Rules:
    patterns: list[Pattern]
    cel: dict[str, Cel]
    messages: list[MessageRules]
    limits: dict[str, int]
    prefixes: dict[str, str]
    anonymous_id_prefix: str
    max_ranges: list[tuple[int, str, int, str]]  # (enum number, value name, hours, rule id)


def load_contract(path: Path) -> dict[str, Any]:
    contract: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return contract


def _index(contract: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(full name → message, full name → enum) of every file of the contract."""
    messages: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    for f in contract["files"].values():
        for name, message in f["messages"].items():
            messages[f"{f['package']}.{name}"] = message
            for nested, values in message.get("nested_enums", {}).items():
                enums[f"{f['package']}.{name}.{nested}"] = values
        for name, values in f["enums"].items():
            enums[f"{f['package']}.{name}"] = values
    return messages, enums


def request_messages(contract: Mapping[str, Any]) -> list[str]:
    """Every message a service method takes, and every message those hold, sorted."""
    messages, _ = _index(contract)
    todo = [
        method["input"]
        for f in contract["files"].values()
        for service in f["services"].values()
        for method in service["methods"]
    ]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in messages:  # google.protobuf.*: no rules
            continue
        seen.add(name)
        for fl in messages[name]["fields"]:
            todo.append(fl.get("map", {}).get("value") or fl.get("type", ""))
    return sorted(seen)


def _number(group: str, value: object) -> str:
    if group == "duration":
        match = _DURATION.fullmatch(str(value))
        if match is None:
            raise ContractError(f"a duration rule of {value!r} is not in seconds")
        return repr(float(match.group(1)))
    if group == "double":
        return repr(float(str(value)))
    return repr(int(str(value)))


def _cel_id(rule: Mapping[str, str], cel: dict[str, Cel]) -> str:
    found = Cel(rule["id"], rule["message"], rule["expression"])
    if cel.setdefault(found.id, found) != found:
        raise ContractError(f"two CEL rules share the id {found.id!r} with different text")
    return found.id


def _field_args(
    where: str, rules: Mapping[str, Any], patterns: dict[str, Pattern], cel: dict[str, Cel]
) -> list[str]:
    """The `Field(...)` arguments (`keyword=literal`) of one field's rules."""
    args: list[str] = []
    groups = [key for key in rules if key in _KNOWN]
    unknown = set(rules) - set(_KNOWN) - {"required", "cel"}
    if unknown or len(groups) > 1:
        raise ContractError(f"{where}: rules the generator does not model: {sorted(rules)}")
    if groups:
        group = groups[0]
        args.append(f"type={json.dumps(group)}")
        body = rules[group]
        if set(body) - _KNOWN[group]:
            raise ContractError(f"{where}: {group} rules not modelled: {sorted(body)}")
        for key, value in body.items():
            if key == "pattern":
                pattern = patterns.setdefault(value, Pattern("", value, python_pattern(value)))
                args.append(f"pattern={pattern.name or pattern_literal(pattern)}")
            elif key == "uuid":
                args.append("uuid=True")
            elif key in ("finite", "defined_only"):
                args.append(f"{key}=True")
            elif key == "not_in":
                args.append(f"not_in={tuple_literal([str(int(v)) for v in value])}")
            elif key == "items":
                inner = _field_args(f"{where}[]", value, patterns, cel)
                args.append(f"items=Field({', '.join(inner)})")
            elif key in ("min_len", "max_len", "min_items", "max_items"):
                args.append(f"{key}={int(value)}")
            else:
                args.append(f"{key}={_number(group, value)}")
    if rules.get("required"):
        args.insert(0, "required=True")
    if rules.get("cel"):
        ids = [_cel_id(rule, cel) for rule in rules["cel"]]
        args.append(f"cel={tuple_literal([f'CEL[{json.dumps(i)}]' for i in ids])}")
    return args


def tuple_literal(items: list[str]) -> str:
    """A tuple of Python expressions, as ruff would format it."""
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def pattern_literal(p: Pattern) -> str:
    """The Python expression that builds a pattern: its source and its compiled regex."""
    return f"Pattern({json.dumps(p.source)}, re.compile({json.dumps(p.python)}))"


def _field_rules(messages: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    message, _, name = path.rpartition(".")
    for fl in messages.get(message, {}).get("fields", []):
        if fl["name"] == name and "rules" in fl:
            rules: Mapping[str, Any] = fl["rules"]
            return rules
    raise ContractError(f"the contract has no rules on {path}")


def collect(contract: Mapping[str, Any]) -> Rules:
    """The rules of every request message, with the runtime's named rules."""
    messages, enums = _index(contract)
    # Named patterns first, so fields that use them refer to the constant.
    patterns: dict[str, Pattern] = {}
    for name, path in PATTERNS.items():
        source = _field_rules(messages, path).get("string", {}).get("pattern")
        if source is None or source in patterns:
            raise ContractError(f"{name}: {path} has no string.pattern of its own")
        patterns[source] = Pattern(name, source, python_pattern(source))
    patterns[UUID_SOURCE] = Pattern("UUID_PATTERN", UUID_SOURCE, python_pattern(UUID_SOURCE))
    cel: dict[str, Cel] = {}
    out: list[MessageRules] = []
    for full in request_messages(contract):
        message = messages[full]
        fields = []
        for fl in message["fields"]:
            if "rules" in fl:
                args = _field_args(f"{full}.{fl['name']}", fl["rules"], patterns, cel)
                fields.append(FieldRules(fl["name"], args))
        message_cel = [_cel_id(rule, cel) for rule in message.get("rules", {}).get("cel", [])]
        required = sorted(k for k, v in message.get("oneof_rules", {}).items() if v.get("required"))
        oneofs = tuple_literal([json.dumps(name) for name in required]) if required else ""
        if set(message.get("rules", {})) - {"cel"}:
            raise ContractError(f"{full}: message rules not modelled: {message['rules']}")
        if fields or message_cel or oneofs:
            out.append(MessageRules(full, fields, message_cel, oneofs))
    limits = {}
    for name, (path, key) in LIMITS.items():
        group = _field_rules(messages, path)
        values = [v[key] for v in group.values() if isinstance(v, dict) and key in v]
        if len(values) != 1:
            raise ContractError(f"{name}: {path} has no {key} rule")
        limits[name] = int(values[0])
    prefixes = {}
    for name, ids in PREFIXES.items():
        found_prefixes = set()
        for rule_id in ids:
            if rule_id not in cel:
                raise ContractError(f"{name}: no CEL rule {rule_id!r} in the request messages")
            literals = _STARTS_WITH.findall(cel[rule_id].expression)
            if len(literals) != 1:
                raise ContractError(f"{name}: {rule_id!r} does not test one prefix")
            found_prefixes.update(literals)
        if len(found_prefixes) != 1:
            raise ContractError(f"{name}: the rules {ids} test different prefixes")
        prefixes[name] = found_prefixes.pop()
    anonymous = _ANONYMOUS_FORM.fullmatch(
        _field_rules(messages, PATTERNS["ANONYMOUS_ID_PATTERN"])["string"]["pattern"]
    )
    if anonymous is None:
        raise ContractError("ANONYMOUS_ID_PATTERN is no longer `^$|^<prefix>`")
    max_ranges = []
    for rule in cel.values():
        match = _MAX_RANGE.fullmatch(rule.expression)
        if match is not None:
            number = dict(enums[match["enum"]])[match["value"]]
            max_ranges.append((number, match["value"], int(match["hours"]), rule.id))
    if not max_ranges:
        raise ContractError("no granularity range rules found on QueryRequest")
    return Rules(
        patterns=sorted(patterns.values(), key=lambda p: (not p.name, p.name, p.source)),
        cel=dict(sorted(cel.items())),
        messages=out,
        limits=limits,
        prefixes=prefixes,
        anonymous_id_prefix=anonymous.group(1),
        max_ranges=sorted(max_ranges),
    )
