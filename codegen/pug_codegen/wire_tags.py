"""The field tags the SDK's hand-written protobuf writer (`pug._wire.protobuf`) uses, read from
catalog/proto so the encoder's field numbers come from the schema, not from memory."""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

_FD = descriptor_pb2.FieldDescriptorProto
# Protobuf wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit.
_WIRE_TYPES = {
    _FD.TYPE_DOUBLE: 1, _FD.TYPE_FIXED64: 1, _FD.TYPE_SFIXED64: 1,
    _FD.TYPE_FLOAT: 5, _FD.TYPE_FIXED32: 5, _FD.TYPE_SFIXED32: 5,
    _FD.TYPE_STRING: 2, _FD.TYPE_BYTES: 2, _FD.TYPE_MESSAGE: 2,
}  # fmt: skip
# The messages the writer encodes (and the one response it reads), by constant prefix.
MESSAGES = {
    "sdk.events.v1.Event": "EVENT",
    "sdk.events.v1.BatchCreateRequest": "BATCH_CREATE_REQUEST",
    "sdk.events.v1.BatchCreateResponse": "BATCH_CREATE_RESPONSE",
    "common.v1.PropertyValue": "PROPERTY_VALUE",
    "sdk.profiles.v1.IdentifyRequest": "IDENTIFY_REQUEST",
    "google.protobuf.Timestamp": "TIMESTAMP",
    "google.protobuf.Struct": "STRUCT",
    "google.protobuf.Value": "VALUE",
    "google.protobuf.ListValue": "LIST_VALUE",
    "sdk.events.v1.Event.CustomPropertiesEntry": "MAP_ENTRY",
}


@dataclass(frozen=True)
class Tag:
    name: str  # EVENT_EVENT_ID
    tag: bytes
    comment: str  # "sdk.events.v1.Event.event_id = 1 (string)"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tags(files: descriptor_pb2.FileDescriptorSet) -> list[Tag]:
    """A tag constant for every field of the messages in MESSAGES, in schema order."""
    found: dict[str, descriptor_pb2.DescriptorProto] = {}
    for f in files.file:
        for message in f.message_type:
            full = f"{f.package}.{message.name}"
            found[full] = message
            for nested in message.nested_type:
                found[f"{full}.{nested.name}"] = nested
    out = []
    for full, prefix in MESSAGES.items():
        for field in found[full].field:
            wire_type = _WIRE_TYPES.get(field.type, 0)  # the rest are varints
            type_name = field.type_name.lstrip(".") or _FD.Type.Name(field.type)[5:].lower()
            out.append(
                Tag(
                    name=f"{prefix}_{re.sub(r'[^A-Z0-9]', '_', field.name.upper())}",
                    tag=_varint(field.number << 3 | wire_type),
                    comment=f"{full}.{field.name} = {field.number} ({type_name})",
                )
            )
    return out
