"""catalog/proto must match the Pug wire contract exactly.

The contract (catalog/contract/pug-wire-contract.json, a copy of the shared
../shared/contract/pug-wire-contract.json held equal to it below) lists the server's messages,
enums and services as plain facts. Our .proto files are written by hand from it, so this test
compiles them with protoc and compares every name, number, json_name, type, label, map
entry, oneof, presence flag, enum value and RPC signature with the contract, in both
directions (nothing missing, nothing extra). Validation rules are not compared: our
protos do not carry protovalidate annotations.

Differences read `<file>: <full name>: <what> <ours> != <contract>`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from contract_file import CONTRACT_PATH, SHARED_CONTRACT_DIR, SHARED_CONTRACT_PATH, load_contract
from google.protobuf import descriptor_pb2
from protoc_helpers import proto_files

# The event catalog files are described by catalog/events, not by .proto files.
EVENT_CATALOG_PREFIX = "common/events/v1/"

CONTRACT: dict[str, Any] = load_contract()
PROTO_CONTRACT_FILES = sorted(
    name for name in CONTRACT["files"] if not name.startswith(EVENT_CATALOG_PREFIX)
)

Field = descriptor_pb2.FieldDescriptorProto

# Contract scalar names -> protobuf field types.
SCALAR_TYPES = {
    "double": Field.TYPE_DOUBLE,
    "float": Field.TYPE_FLOAT,
    "int64": Field.TYPE_INT64,
    "uint64": Field.TYPE_UINT64,
    "int32": Field.TYPE_INT32,
    "uint32": Field.TYPE_UINT32,
    "fixed64": Field.TYPE_FIXED64,
    "fixed32": Field.TYPE_FIXED32,
    "sfixed32": Field.TYPE_SFIXED32,
    "sfixed64": Field.TYPE_SFIXED64,
    "sint32": Field.TYPE_SINT32,
    "sint64": Field.TYPE_SINT64,
    "bool": Field.TYPE_BOOL,
    "string": Field.TYPE_STRING,
    "bytes": Field.TYPE_BYTES,
}
SCALAR_NAMES = {number: name for name, number in SCALAR_TYPES.items()}


# --- the contract, normalized --------------------------------------------------------------


def contract_enum_names(contract: dict[str, Any]) -> set[str]:
    """Full names of every enum in the contract, so a field type can be told enum vs message."""
    names = set()
    for spec in contract["files"].values():
        package = spec["package"]
        names.update(f"{package}.{enum}" for enum in spec.get("enums", {}))
        for message_name, message in spec.get("messages", {}).items():
            names.update(
                f"{package}.{message_name}.{enum}" for enum in message.get("nested_enums", {})
            )
    return names


def contract_type(type_name: str, enum_names: set[str]) -> str:
    """A contract type in the vocabulary used for both sides: `string`, `enum X`, `message X`."""
    if type_name in SCALAR_TYPES:
        return type_name
    kind = "enum" if type_name in enum_names else "message"
    return f"{kind} {type_name}"


def contract_field(field: dict[str, Any], enum_names: set[str]) -> dict[str, Any]:
    """The facts of one contract field that our descriptor must reproduce."""
    mapping = field.get("map")
    return {
        "number": field["number"],
        "json_name": field["json_name"],
        "type": None if mapping else contract_type(field["type"], enum_names),
        "map key": contract_type(mapping["key"], enum_names) if mapping else None,
        "map value": contract_type(mapping["value"], enum_names) if mapping else None,
        "repeated": field.get("repeated", False),
        "oneof": field.get("oneof"),
        "explicit_presence": field["explicit_presence"],
    }


# --- our descriptors, normalized the same way ----------------------------------------------


def our_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type == Field.TYPE_ENUM:
        return f"enum {field.type_name.removeprefix('.')}"
    if field.type in (Field.TYPE_MESSAGE, Field.TYPE_GROUP):
        return f"message {field.type_name.removeprefix('.')}"
    return SCALAR_NAMES[field.type]


def map_entry(
    field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto
) -> descriptor_pb2.DescriptorProto | None:
    """The synthesized `XxxEntry` nested type when `field` is a map, else None."""
    if field.label != Field.LABEL_REPEATED or field.type != Field.TYPE_MESSAGE:
        return None
    entry_name = field.type_name.rsplit(".", 1)[-1]
    for nested in message.nested_type:
        if nested.name == entry_name and nested.options.map_entry:
            return nested
    return None


def real_oneof(
    field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto
) -> str | None:
    """The oneof group of `field`, ignoring the synthetic `_field` oneof of proto3 `optional`."""
    if not field.HasField("oneof_index") or field.proto3_optional:
        return None
    return message.oneof_decl[field.oneof_index].name


def has_presence(
    field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto
) -> bool:
    """Whether a set zero value is distinguishable from unset (proto3 rules)."""
    if field.label == Field.LABEL_REPEATED:
        return False
    return (
        field.proto3_optional
        or real_oneof(field, message) is not None
        or field.type == Field.TYPE_MESSAGE
    )


def our_field(
    field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto
) -> dict[str, Any]:
    entry = map_entry(field, message)
    if entry is not None:
        key, value = sorted(entry.field, key=lambda f: f.number)
    return {
        "number": field.number,
        "json_name": field.json_name,
        "type": None if entry else our_type(field),
        "map key": our_type(key) if entry else None,
        "map value": our_type(value) if entry else None,
        # The contract marks map fields as not repeated: a map is its own shape.
        "repeated": field.label == Field.LABEL_REPEATED and entry is None,
        "oneof": real_oneof(field, message),
        "explicit_presence": has_presence(field, message),
    }


def our_messages(
    messages: list[descriptor_pb2.DescriptorProto], prefix: str = ""
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    """(name relative to the package, message) for every message, map entries left out."""
    for message in messages:
        if message.options.map_entry:
            continue
        name = f"{prefix}{message.name}"
        yield name, message
        yield from our_messages(list(message.nested_type), f"{name}.")


# --- the comparison ------------------------------------------------------------------------


def diff_names(path: str, ours: set[str], contract: set[str], what: str) -> list[str]:
    """One line per name missing from ours, and per name we have that the contract lacks."""
    missing = [f"{path}.{name}: missing {what}" for name in sorted(contract - ours)]
    extra = [f"{path}.{name}: {what} not in the contract" for name in sorted(ours - contract)]
    return missing + extra


def diff_facts(path: str, ours: dict[str, Any], contract: dict[str, Any]) -> list[str]:
    return [
        f"{path}: {fact} {ours[fact]} != {expected}"
        for fact, expected in contract.items()
        if ours[fact] != expected
    ]


def diff_enum(
    path: str, ours: descriptor_pb2.EnumDescriptorProto, contract: list[list[Any]]
) -> list[str]:
    our_values = {value.name: value.number for value in ours.value}
    contract_values = {name: number for name, number in contract}
    diffs = diff_names(path, set(our_values), set(contract_values), "enum value")
    for name in sorted(our_values.keys() & contract_values.keys()):
        if our_values[name] != contract_values[name]:
            diffs.append(f"{path}.{name}: number {our_values[name]} != {contract_values[name]}")
    return diffs


def diff_enums(
    prefix: str,
    ours: list[descriptor_pb2.EnumDescriptorProto],
    contract: dict[str, list[list[Any]]],
) -> list[str]:
    by_name = {enum.name: enum for enum in ours}
    diffs = diff_names(prefix, set(by_name), set(contract), "enum")
    for name in sorted(by_name.keys() & contract.keys()):
        diffs += diff_enum(f"{prefix}.{name}", by_name[name], contract[name])
    return diffs


def diff_message(
    path: str,
    ours: descriptor_pb2.DescriptorProto,
    contract: dict[str, Any],
    enum_names: set[str],
) -> list[str]:
    our_fields = {field.name: field for field in ours.field}
    contract_fields = {field["name"]: field for field in contract["fields"]}
    diffs = diff_names(path, set(our_fields), set(contract_fields), "field")
    for name in sorted(our_fields.keys() & contract_fields.keys(), key=list(our_fields).index):
        diffs += diff_facts(
            f"{path}.{name}",
            our_field(our_fields[name], ours),
            contract_field(contract_fields[name], enum_names),
        )
    diffs += diff_enums(path, list(ours.enum_type), contract.get("nested_enums", {}))
    return diffs


def diff_service(
    path: str, ours: descriptor_pb2.ServiceDescriptorProto, contract: dict[str, Any]
) -> list[str]:
    our_methods = {method.name: method for method in ours.method}
    contract_methods = {method["name"]: method for method in contract["methods"]}
    missing = [f"{path}/{name}: missing method" for name in contract_methods.keys() - our_methods]
    extra = [
        f"{path}/{name}: method not in the contract"
        for name in our_methods.keys() - contract_methods
    ]
    diffs = sorted(missing) + sorted(extra)
    for name in sorted(our_methods.keys() & contract_methods.keys()):
        method, expected = our_methods[name], contract_methods[name]
        diffs += diff_facts(
            f"{path}/{name}",
            {
                "input": method.input_type.removeprefix("."),
                "output": method.output_type.removeprefix("."),
                "client_streaming": method.client_streaming,
                "server_streaming": method.server_streaming,
            },
            {
                "input": expected["input"],
                "output": expected["output"],
                "client_streaming": expected["client_streaming"],
                "server_streaming": expected["server_streaming"],
            },
        )
    return diffs


def diff_file(
    ours: descriptor_pb2.FileDescriptorProto | None,
    contract: dict[str, Any],
    enum_names: set[str],
) -> list[str]:
    """Every difference between one compiled .proto and its contract entry (unprefixed)."""
    if ours is None:
        return ["file not found in catalog/proto"]
    package = contract["package"]
    if ours.package != package:
        # Every full name below would differ too; one line says it all.
        return [f"package {ours.package} != {package}"]

    messages = dict(our_messages(list(ours.message_type)))
    contract_messages = contract.get("messages", {})
    diffs = diff_names(package, set(messages), set(contract_messages), "message")
    for name in sorted(messages.keys() & contract_messages.keys()):
        diffs += diff_message(
            f"{package}.{name}", messages[name], contract_messages[name], enum_names
        )

    diffs += diff_enums(package, list(ours.enum_type), contract.get("enums", {}))

    services = {service.name: service for service in ours.service}
    contract_services = contract.get("services", {})
    diffs += diff_names(package, set(services), set(contract_services), "service")
    for name in sorted(services.keys() & contract_services.keys()):
        diffs += diff_service(f"{package}.{name}", services[name], contract_services[name])
    return diffs


def contract_diffs(
    file_name: str,
    descriptor_set: descriptor_pb2.FileDescriptorSet,
    contract: dict[str, Any] = CONTRACT,
) -> list[str]:
    """Differences for one contract file, each prefixed with the file name."""
    ours = next((file for file in descriptor_set.file if file.name == file_name), None)
    spec = contract["files"][file_name]
    return [f"{file_name}: {diff}" for diff in diff_file(ours, spec, contract_enum_names(contract))]


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("file_name", PROTO_CONTRACT_FILES)
def test_proto_matches_contract(
    file_name: str, proto_descriptor_set: descriptor_pb2.FileDescriptorSet
) -> None:
    diffs = contract_diffs(file_name, proto_descriptor_set)
    assert not diffs, f"{len(diffs)} difference(s) (ours != contract):\n" + "\n".join(diffs)


def test_every_proto_file_is_in_the_contract() -> None:
    extra = sorted(set(proto_files()) - set(PROTO_CONTRACT_FILES))
    assert not extra, f"catalog/proto files the contract does not list: {extra}"


def contract_field_spec(spec: dict[str, Any], message: str, field: str) -> dict[str, Any]:
    return next(f for f in spec["messages"][message]["fields"] if f["name"] == field)


def drop_contract_field(spec: dict[str, Any], message: str, field: str) -> None:
    fields = spec["messages"][message]["fields"]
    fields.remove(contract_field_spec(spec, message, field))


def contract_method(spec: dict[str, Any], service: str, method: str) -> dict[str, Any]:
    return next(m for m in spec["services"][service]["methods"] if m["name"] == method)


EVENTS = "sdk/events/v1/events.proto"
PROFILES = "shared/profiles/v1/profiles.proto"
INSIGHTS = "shared/insights/v1/insights.proto"

# (file, how to break the contract copy, the one difference that must be reported)
MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        EVENTS,
        lambda spec: contract_field_spec(spec, "Event", "session_id").update(number=8),
        f"{EVENTS}: sdk.events.v1.Event.session_id: number 7 != 8",
    ),
    (
        EVENTS,
        lambda spec: contract_field_spec(spec, "Event", "kind").update(json_name="Kind"),
        f"{EVENTS}: sdk.events.v1.Event.kind: json_name kind != Kind",
    ),
    (
        EVENTS,
        lambda spec: contract_field_spec(spec, "Event", "cookieless").update(
            explicit_presence=False
        ),
        f"{EVENTS}: sdk.events.v1.Event.cookieless: explicit_presence True != False",
    ),
    (
        EVENTS,
        lambda spec: drop_contract_field(spec, "Event", "cookieless"),
        f"{EVENTS}: sdk.events.v1.Event.cookieless: field not in the contract",
    ),
    (
        EVENTS,
        lambda spec: contract_field_spec(spec, "BatchCreateResponse", "dropped_by_reason")[
            "map"
        ].update(value="uint64"),
        f"{EVENTS}: sdk.events.v1.BatchCreateResponse.dropped_by_reason: "
        "map value uint32 != uint64",
    ),
    (
        EVENTS,
        lambda spec: contract_field_spec(spec, "EventBatch", "events").update(repeated=False),
        f"{EVENTS}: sdk.events.v1.EventBatch.events: repeated True != False",
    ),
    (
        PROFILES,
        lambda spec: contract_field_spec(spec, "FilterGroup", "operator").update(
            type="common.v1.FilterOperator"
        ),
        f"{PROFILES}: shared.profiles.v1.FilterGroup.operator: "
        "type enum common.v1.LogicalOperator != enum common.v1.FilterOperator",
    ),
    (
        PROFILES,
        lambda spec: contract_method(spec, "ProfilesService", "List").update(
            server_streaming=False
        ),
        f"{PROFILES}: shared.profiles.v1.ProfilesService/List: server_streaming True != False",
    ),
    (
        PROFILES,
        lambda spec: spec["enums"]["ComplianceRequestStatus"][1].__setitem__(1, 9),
        f"{PROFILES}: shared.profiles.v1.ComplianceRequestStatus."
        "COMPLIANCE_REQUEST_STATUS_PENDING: number 1 != 9",
    ),
    (
        INSIGHTS,
        lambda spec: contract_field_spec(spec, "QueryResponse", "top_k").pop("oneof"),
        f"{INSIGHTS}: shared.insights.v1.QueryResponse.top_k: oneof result != None",
    ),
    (
        INSIGHTS,
        lambda spec: spec["messages"]["TopKQuery"]["nested_enums"]["Dimension"].pop(),
        f"{INSIGHTS}: shared.insights.v1.TopKQuery.Dimension.DIMENSION_USER: "
        "enum value not in the contract",
    ),
]


@pytest.mark.parametrize(
    ("file_name", "mutate", "expected"),
    MUTATIONS,
    ids=[expected.split(": ", 1)[1] for _, _, expected in MUTATIONS],
)
def test_comparison_reports_a_broken_contract(
    file_name: str,
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
    proto_descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    """Keeps the contract test honest: a changed fact must come out as exactly one line."""
    broken = copy.deepcopy(CONTRACT)
    mutate(broken["files"][file_name])
    assert contract_diffs(file_name, proto_descriptor_set, broken) == [expected]


# --- the in-repository copy ----------------------------------------------------------------


def test_the_contract_copy_is_the_shared_contract() -> None:
    """catalog/contract holds the shared contract unchanged, byte for byte.

    The shared original sits beside a checkout that has it (../shared/contract); a clone of
    the repository alone has nothing to compare with, and says so as this one skip (the
    tests that read the contract run on the in-repository copy either way)."""
    if not SHARED_CONTRACT_DIR.is_dir():
        pytest.skip(f"no shared contract to compare catalog/contract with: {SHARED_CONTRACT_DIR}")
    assert SHARED_CONTRACT_PATH.is_file(), f"{SHARED_CONTRACT_PATH} is missing"
    ours, shared = CONTRACT_PATH.read_bytes(), SHARED_CONTRACT_PATH.read_bytes()
    assert ours == shared, (
        f"{CONTRACT_PATH} differs from {SHARED_CONTRACT_PATH}: copy the shared contract "
        "into catalog/contract, then regenerate and rerun the tests"
    )
