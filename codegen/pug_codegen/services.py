"""The read API's model: services and messages read from catalog/proto, named by
catalog/read_api.yaml, ready for the resources template."""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from pug_codegen.catalog import CatalogError
from pug_codegen.protos import descriptor_set

_FD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _FD.TYPE_STRING: "str",
    _FD.TYPE_BOOL: "bool",
    _FD.TYPE_DOUBLE: "float",
    _FD.TYPE_FLOAT: "float",
    _FD.TYPE_BYTES: "bytes",
    **dict.fromkeys(
        (_FD.TYPE_INT32, _FD.TYPE_INT64, _FD.TYPE_UINT32, _FD.TYPE_UINT64, _FD.TYPE_SINT32,
         _FD.TYPE_SINT64, _FD.TYPE_FIXED32, _FD.TYPE_FIXED64, _FD.TYPE_SFIXED32,
         _FD.TYPE_SFIXED64),
        "int",
    ),
}  # fmt: skip
# Well-known types betterproto2 turns into Python values.
_UNWRAPPED = {".google.protobuf.Timestamp": "datetime.datetime",
              ".google.protobuf.Duration": "datetime.timedelta"}  # fmt: skip


@dataclass(frozen=True)
class Param:
    name: str
    annotation: str  # the Python type without `| None`
    repeated: bool


@dataclass(frozen=True)
class Method:
    rpc: str  # "GetByExternalId"
    name: str  # "get_by_external_id"
    path: str  # "shared.profiles.v1.ProfilesService/GetByExternalId"
    request: str  # "shared_profiles_v1.GetByExternalIdRequest"
    response: str
    params: tuple[Param, ...]
    streaming: bool
    unwrap: str | None
    unwrap_type: str | None
    items: str | None  # the one repeated field of the response: what iterators yield
    item_type: str | None
    paginated: bool  # request has page_token, response next_page_token
    doc: str
    errors: str


@dataclass(frozen=True)
class Resource:
    name: str  # "profiles"
    class_name: str  # "Profiles"
    service: str
    doc: str
    methods: tuple[Method, ...]


def module_alias(package: str) -> str:
    """`shared.profiles.v1` → `shared_profiles_v1`, the name the facade imports it as."""
    return package.replace(".", "_")


class _Types:
    """Full protobuf type names → the Python annotations betterproto2 gives them."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.python: dict[str, str] = dict(_UNWRAPPED)
        self.aliases: dict[str, str] = {}  # alias → proto package
        self.used: set[str] = set()  # aliases the facade refers to
        for f in files.file:
            alias = module_alias(f.package)
            self.aliases[alias] = f.package
            for enum in f.enum_type:
                self.python[f".{f.package}.{enum.name}"] = f"{alias}.{enum.name}"
            for message in f.message_type:
                full = f".{f.package}.{message.name}"
                self.messages[full] = message
                self.python.setdefault(full, f"{alias}.{message.name}")
                for enum in message.enum_type:
                    # betterproto2 flattens nested names: TopKQuery.Dimension → TopKQueryDimension
                    self.python[f"{full}.{enum.name}"] = f"{alias}.{message.name}{enum.name}"

    def annotation(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        base = _SCALARS[field.type] if field.type in _SCALARS else self.python[field.type_name]
        self.use(base)
        return base

    def use(self, annotation: str) -> str:
        alias = annotation.rpartition(".")[0]
        if alias in self.aliases:
            self.used.add(alias)
        return annotation

    def is_map(self, field: descriptor_pb2.FieldDescriptorProto) -> bool:
        entry = self.messages.get(field.type_name)
        return entry is not None and entry.options.map_entry


def load(proto_root: Path, read_api: Path) -> tuple[list[Resource], list[tuple[str, str, str]]]:
    """The resources of the read API, and the proto modules the facade must import as
    (parent package, module, alias): `("shared.profiles", "v1", "shared_profiles_v1")`."""
    files = descriptor_set(proto_root)
    types = _Types(files)
    services = {f"{f.package}.{s.name}": s for f in files.file for s in f.service}
    try:
        spec: dict[str, Any] = yaml.safe_load(read_api.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise CatalogError(f"not valid YAML: {exc}", file=read_api, line=line) from None
    resources = []
    for name, res in spec["resources"].items():
        service = services.get(res["service"])
        if service is None:
            raise CatalogError(f"unknown service {res['service']}", file=read_api)
        named = res["methods"]
        missing = [m.name for m in service.method if m.name not in named]
        if missing:
            raise CatalogError(
                f"{res['service']} has RPCs without a facade method: {', '.join(missing)}",
                file=read_api,
            )
        methods = [
            _method(res["service"], m, named[m.name], types, read_api) for m in service.method
        ]
        resources.append(
            Resource(name, name.capitalize(), res["service"], res["doc"], tuple(methods))
        )
    imports = []
    for alias in sorted(types.used):
        parent, _, module = types.aliases[alias].rpartition(".")
        imports.append((parent, module, alias))
    return resources, imports


def _method(
    service: str,
    rpc: descriptor_pb2.MethodDescriptorProto,
    spec: dict[str, Any],
    types: _Types,
    read_api: Path,
) -> Method:
    request = types.messages[rpc.input_type]
    response = types.messages[rpc.output_type]
    params = tuple(
        # betterproto2 appends "_" to a keyword (TimeRange.from → from_): so do we.
        Param(
            f.name + "_" if keyword.iskeyword(f.name) else f.name,
            types.annotation(f),
            f.label == _FD.LABEL_REPEATED and not types.is_map(f),
        )
        for f in request.field
    )
    unwrap = spec.get("unwrap")
    unwrap_type = None
    if unwrap is not None:
        field = next((f for f in response.field if f.name == unwrap), None)
        if field is None:
            raise CatalogError(
                f"{rpc.name}: response has no field '{unwrap}' to unwrap", file=read_api
            )
        unwrap_type = types.annotation(field)
    repeated = [f for f in response.field if f.label == _FD.LABEL_REPEATED]
    items = repeated[0] if len(repeated) == 1 else None
    paginated = (
        not rpc.server_streaming  # a stream carries every page itself
        and items is not None
        and any(f.name == "page_token" for f in request.field)
        and any(f.name == "next_page_token" for f in response.field)
    )
    return Method(
        rpc=rpc.name,
        name=spec["name"],
        path=f"{service}/{rpc.name}",
        request=types.use(types.python[rpc.input_type]),
        response=types.use(types.python[rpc.output_type]),
        params=params,
        streaming=rpc.server_streaming,
        unwrap=unwrap,
        unwrap_type=unwrap_type,
        items=items.name if items is not None else None,
        item_type=types.annotation(items) if items is not None else None,
        paginated=paginated,
        doc=spec["doc"],
        errors=spec.get("errors", "PugError on failure."),
    )
