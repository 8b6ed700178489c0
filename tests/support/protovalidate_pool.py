"""The server's validation, for tests: catalog/proto compiled by protoc, with the contract's
rules added as `buf.validate` options, validated by `protovalidate` (the engine the Pug
server runs, here its Python package).

Our .proto files carry no `buf.validate` annotations (the contract JSON holds the rules), so
`annotated_pool` adds them to the descriptors of a test-only pool: each field's `rules`
become `(buf.validate.field)`, a message's `rules` `(buf.validate.message)`, its
`oneof_rules` `(buf.validate.oneof)`. The contract writes rules in protobuf's JSON form of
`buf.validate.FieldRules` (etc.), so they are read with protovalidate's own message classes
and put into the options as the extension's bytes (field 1159 of each options message).

One adjustment: protovalidate-py's CEL engine (cel-rust) does not resolve enum constants
by name (`shared.insights.v1.InsightType.INSIGHT_TYPE_FUNNEL` fails with "No value with
name \"shared\" found in Activation"), so each such name is replaced by its number, which
is what it means in CEL (protovalidate compares enum fields as integers).

`violations(message)` returns what the server reports: (field path, rule id, message), the
path written as protovalidate-go's `FieldPathString` (`events[0].custom_properties["k"]`).
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import protovalidate
from contract_file import load_contract
from google.protobuf import descriptor_pb2, message
from protoc_helpers import GoogleMessages, build_pool, compile_descriptor_set
from protovalidate._gen.buf.validate import validate_pb

VALIDATE_EXTENSION = 1159  # (buf.validate.field), .message and .oneof all use this number


class Found(NamedTuple):
    """One violation as the server reports it in an error's details."""

    field: str
    rule_id: str
    message: str


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _extension(payload: bytes) -> bytes:
    """The options' bytes for extension 1159 holding `payload` (length-delimited)."""
    return _varint(VALIDATE_EXTENSION << 3 | 2) + _varint(len(payload)) + payload


def _enum_numbers(contract: dict[str, Any]) -> dict[str, int]:
    """Every enum value's full name (`pkg.Enum.VALUE`, `pkg.Msg.Enum.VALUE`) → number."""
    numbers: dict[str, int] = {}
    for file in contract["files"].values():
        package = file["package"]
        scopes = [(f"{package}.{name}", values) for name, values in file["enums"].items()]
        for message_name, spec in file["messages"].items():
            for name, values in spec.get("nested_enums", {}).items():
                scopes.append((f"{package}.{message_name}.{name}", values))
        for scope, values in scopes:
            numbers.update({f"{scope}.{value}": number for value, number in values})
    return numbers


def _numbered(rules: Any, numbers: dict[str, int], pattern: re.Pattern[str]) -> Any:
    """`rules` with every CEL expression's enum constants replaced by their numbers."""
    if isinstance(rules, dict):
        return {
            key: (
                pattern.sub(lambda m: str(numbers[m.group(0)]), value)
                if key == "expression"
                else _numbered(value, numbers, pattern)
            )
            for key, value in rules.items()
        }
    if isinstance(rules, list):
        return [_numbered(item, numbers, pattern) for item in rules]
    return rules


def annotate(fds: descriptor_pb2.FileDescriptorSet, contract: dict[str, Any]) -> None:
    """Add the contract's rules to the descriptors of `fds` as buf.validate options."""
    numbers = _enum_numbers(contract)
    # Longest names first, so that no name is replaced by a shorter one's prefix.
    names = sorted(numbers, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(name) for name in names) + r"(?![A-Za-z0-9_])")

    def rules_bytes(cls: Any, rules: Any) -> bytes:
        rules_json = json.dumps(_numbered(rules, numbers, pattern))
        return _extension(cls.from_json(rules_json).to_binary())

    for file in fds.file:
        spec = contract["files"].get(file.name)
        if spec is None:
            continue
        # Top-level messages only: the contract gives no nested message rules (a map's
        # entry message is nested and has none).
        for message_proto in file.message_type:
            message_spec = spec["messages"][message_proto.name]
            if "rules" in message_spec:
                extension = rules_bytes(validate_pb.MessageRules, message_spec["rules"])
                message_proto.options.MergeFromString(extension)
            fields = {f["name"]: f for f in message_spec["fields"]}
            for field_proto in message_proto.field:
                rules = fields[field_proto.name].get("rules")
                if rules:
                    extension = rules_bytes(validate_pb.FieldRules, rules)
                    field_proto.options.MergeFromString(extension)
            for oneof_proto in message_proto.oneof_decl:
                rules = message_spec.get("oneof_rules", {}).get(oneof_proto.name)
                if rules:
                    extension = rules_bytes(validate_pb.OneofRules, rules)
                    oneof_proto.options.MergeFromString(extension)


@functools.cache
def annotated_messages() -> GoogleMessages:
    """Google protobuf classes of catalog/proto, carrying the contract's rules."""
    with tempfile.TemporaryDirectory() as directory:
        fds = compile_descriptor_set(Path(directory) / "catalog.pb")
    annotate(fds, load_contract())
    return GoogleMessages(build_pool(fds))


@functools.cache
def _validator() -> protovalidate.Validator:
    return protovalidate.Validator()


def go_quote(text: str) -> str:
    """Go's strconv.Quote: how protovalidate-go writes a string map key in a field path
    (printable characters kept, others escaped)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(char)])
        elif char.isprintable() and not (0xD800 <= code <= 0xDFFF):
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def field_path(path: validate_pb.FieldPath) -> str:
    """protovalidate-go's FieldPathString: `events[0].custom_properties["k"].string_value`."""
    parts: list[str] = []
    for element in path.elements:
        text = element.field_name
        subscript = element.subscript
        if subscript is not None:
            kind, value = subscript.field, subscript.value
            if kind == "string_key":
                text += f"[{go_quote(value)}]"
            elif kind == "bool_key":
                text += f"[{'true' if value else 'false'}]"
            else:  # index, int_key, uint_key
                text += f"[{value}]"
        parts.append(text)
    return ".".join(parts)


def violations(request: message.Message) -> list[Found]:
    """What protovalidate reports for `request`, in its order."""
    found = _validator().collect_violations(request)
    out: list[Found] = []
    for violation in found:
        proto = violation.proto
        path = field_path(proto.field) if proto.field is not None else ""
        out.append(Found(path, proto.rule_id, proto.message))
    return out
