"""How the fake reads a request's bytes: as protobuf's parsers (the server's Go one
included) read them, before betterproto2 turns them into objects.

betterproto2 is lenient where the server is strict and strict where the server is lenient:
it accepts `ff ff ff` and truncated messages, and fails on legal forms (a map entry with no
value, two members of one oneof, a field sent with another wire type, a `Value` with no kind,
a timestamp beyond `datetime`'s years). So `canonical` first reads the bytes by the message's
schema (the generated classes' metadata) and:

- raises `Unreadable` where Go's protobuf refuses to parse: a bad or overlong varint, a
  length past the end, wire type 6 or 7, field number 0, an unmatched group, a string
  that is not UTF-8 (the server's files are edition 2023: strings are verified);
- writes the same message in the one form betterproto2 reads: unknown fields and fields
  of the wrong wire type dropped (Go keeps them as unknown fields, which no rule sees),
  the last member of a oneof kept (setting one clears the others), a singular message sent
  twice merged, the last of a singular scalar kept, every map entry given its key and
  value (the default when missing, as Go does);
- keeps each Timestamp and Duration exactly (`Times`: seconds and nanos as sent, by field
  path) for the rules that compare them, and writes them clamped to what `datetime` and
  `timedelta` hold; the fake stores the clamped value (a decision of the fake);
- writes a `google.protobuf.Value` with no kind as a null (the fake stores it as None).
"""

from __future__ import annotations

import datetime
import keyword
from dataclasses import dataclass, field
from typing import Any, cast

import betterproto2

# The range of times datetime holds, in nanoseconds from the epoch: the reader's, one copy.
from pug._wire.reader import _MAX_TIME, _MIN_TIME
from pug.proto.google.protobuf import Duration, Timestamp, Value

__all__ = ["Times", "Unreadable", "canonical"]

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
_WIRE_TYPES = {
    **dict.fromkeys(
        ("int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "enum"), VARINT
    ),
    **dict.fromkeys(("fixed64", "sfixed64", "double"), FIXED64),
    **dict.fromkeys(("fixed32", "sfixed32", "float"), FIXED32),
    **dict.fromkeys(("string", "bytes", "message", "map"), LENGTH),
}
_MAX_FIELD_NUMBER = (1 << 29) - 1
_NANOS = 1_000_000_000
_MAX_SPAN = datetime.timedelta.max // datetime.timedelta(microseconds=1) * 1000


class Unreadable(ValueError):
    """The bytes are not a protobuf message: the server cannot unmarshal them."""


@dataclass
class Times:
    """Every Timestamp and Duration of a request as sent (seconds, nanos), by protovalidate
    field path (`time_range.from`, `spec.conversion_window`)."""

    exact: dict[str, tuple[int, int]] = field(default_factory=dict)

    def nanos(self, path: str) -> int | None:
        """The value at `path` in nanoseconds (what CEL compares), or None if unset."""
        found = self.exact.get(path)
        return None if found is None else found[0] * _NANOS + found[1]


def canonical(cls: type[betterproto2.Message], body: bytes) -> tuple[bytes, Times]:
    """`body` read as a `cls` the way Go's protobuf reads it, written in the form
    betterproto2 reads the same way; raises `Unreadable` for bytes Go refuses."""
    times = Times()
    return _message(cls, memoryview(body), "", times), times


# ---- reading ------------------------------------------------------------------------------


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    """A varint at `at`: (value, next offset). Go refuses more than 10 bytes, or a 10th
    byte above 1 (more than 64 bits)."""
    value = shift = 0
    for i in range(10):
        if at + i >= len(data):
            raise Unreadable("unexpected end of data in a varint")
        byte = data[at + i]
        if i == 9 and byte > 1:
            raise Unreadable("variable length integer overflow")
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at + i + 1
    raise Unreadable("variable length integer overflow")


def _fields(data: memoryview) -> list[tuple[int, int, bytes | int]]:
    """(number, wire type, value) of each field, in order: an int for varints, the bytes
    for the others. Groups (of unknown fields only, in our schema) are skipped whole."""
    out: list[tuple[int, int, bytes | int]] = []
    at = 0
    while at < len(data):
        at, number, wire_type, value = _field(data, at)
        if wire_type == END_GROUP:
            raise Unreadable("unmatched end group")
        out.append((number, wire_type, value))
    return out


def _field(data: memoryview, at: int) -> tuple[int, int, int, bytes | int]:
    key, at = _varint(data, at)
    number, wire_type = key >> 3, key & 7
    if number == 0 or number > _MAX_FIELD_NUMBER:
        raise Unreadable(f"invalid field number {number}")
    if wire_type == VARINT:
        value, at = _varint(data, at)
        return at, number, wire_type, value
    if wire_type in (FIXED64, FIXED32):
        size = 8 if wire_type == FIXED64 else 4
        if at + size > len(data):
            raise Unreadable("unexpected end of data in a fixed-size field")
        return at + size, number, wire_type, bytes(data[at : at + size])
    if wire_type == LENGTH:
        size, at = _varint(data, at)
        if size > len(data) - at:
            raise Unreadable("length-delimited field runs past the end")
        return at + size, number, wire_type, bytes(data[at : at + size])
    if wire_type == START_GROUP:
        while True:
            at, inner, inner_type, _ = _field(data, at) if at < len(data) else _eof()
            if inner_type == END_GROUP:
                if inner != number:
                    raise Unreadable("mismatched end group")
                return at, number, START_GROUP, b""
    if wire_type == END_GROUP:
        return at, number, wire_type, b""
    raise Unreadable(f"invalid wire type {wire_type}")


def _eof() -> tuple[int, int, int, bytes | int]:
    raise Unreadable("unexpected end of data in a group")


# ---- writing the canonical form ------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative numbers as 64-bit two's complement, as protobuf does
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode(number: int, wire_type: int, value: bytes | int) -> bytes:
    key = _encode_varint(number << 3 | wire_type)
    if isinstance(value, int):
        return key + _encode_varint(value)
    if wire_type == LENGTH:
        return key + _encode_varint(len(value)) + value
    return key + value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _proto_name(attribute: str) -> str:
    """The field's name in the .proto (`from_` is `from`)."""
    stripped = attribute.removesuffix("_")
    return stripped if stripped != attribute and keyword.iskeyword(stripped) else attribute


def _info(cls: type[betterproto2.Message]) -> Any:
    """The class's betterproto2 metadata (a class property mypy cannot read on a type)."""
    return cast(Any, cls)._betterproto


def _message_class(cls: type[betterproto2.Message], name: str, meta: Any) -> Any:
    if meta.unwrap is not None:
        return meta.unwrap()
    return _info(cls).cls_by_field[name]


def _message(cls: type[betterproto2.Message], data: memoryview, path: str, times: Times) -> bytes:
    """One message's canonical bytes (see the module's docstring)."""
    info = _info(cls)
    fields = info.meta_by_field_name
    by_number = {meta.number: name for name, meta in fields.items()}
    # Per field number: the kept values, in arrival order of each field's last write.
    kept: dict[int, list[bytes | int]] = {}
    wire: dict[int, int] = {}
    for number, wire_type, value in _fields(data):
        name = by_number.get(number)
        if name is None:
            continue  # unknown: Go keeps it as an unknown field, which no rule reads
        meta = fields[name]
        expected = _WIRE_TYPES[meta.proto_type]
        packed = meta.repeated and expected != LENGTH and wire_type == LENGTH
        if wire_type != expected and not packed:
            continue  # the wrong wire type: an unknown field to Go
        if packed:
            values = _unpack(expected, value if isinstance(value, bytes) else b"")
            kept.setdefault(number, []).extend(values)
            wire[number] = expected
            continue
        if meta.group is not None:
            for other in info.oneof_field_by_group[meta.group]:
                other_number = fields[other.name].number
                if other_number != number:
                    kept.pop(other_number, None)
        if meta.repeated or meta.proto_type == "map":
            kept.setdefault(number, []).append(value)
        elif meta.proto_type == "message":
            # A singular message sent twice is merged: its payloads, concatenated.
            previous = kept.get(number, [b""])[0]
            assert isinstance(previous, bytes) and isinstance(value, bytes)
            kept[number] = [previous + value]
        else:
            kept[number] = [value]  # the last value of a singular scalar wins
        wire[number] = expected
        # Keep arrival order by the field's last write (dicts keep insertion order).
        kept[number] = kept.pop(number)
    out = bytearray()
    for number, values in kept.items():
        name = by_number[number]
        meta = fields[name]
        at = f"{path}.{_proto_name(name)}" if path else _proto_name(name)
        for i, value in enumerate(values):
            if meta.proto_type == "map":
                assert isinstance(value, bytes)
                value = _map_entry(cls, name, meta, memoryview(value), at, times)
            elif meta.proto_type == "message":
                assert isinstance(value, bytes)
                nested = _message_class(cls, name, meta)
                where = f"{at}[{i}]" if meta.repeated else at
                value = _message(nested, memoryview(value), where, times)
            elif meta.proto_type == "string":
                _check_utf8(value)
            out += _encode(number, wire[number], value)
    if cls is Value and not kept:
        out += _encode(1, VARINT, 0)  # no kind: a null
    if cls is Timestamp or cls is Duration:
        return _time(cls, bytes(out), path, times)
    return bytes(out)


def _unpack(wire_type: int, data: bytes) -> list[bytes | int]:
    view, at, out = memoryview(data), 0, list[bytes | int]()
    while at < len(view):
        if wire_type == VARINT:
            value, at = _varint(view, at)
            out.append(value)
        else:
            size = 8 if wire_type == FIXED64 else 4
            if at + size > len(view):
                raise Unreadable("unexpected end of data in a packed field")
            out.append(bytes(view[at : at + size]))
            at += size
    return out


def _check_utf8(value: bytes | int) -> None:
    try:
        bytes(value).decode("utf-8") if isinstance(value, bytes) else None
    except UnicodeDecodeError:
        raise Unreadable("string field contains invalid UTF-8") from None


def _map_entry(
    cls: type[betterproto2.Message],
    name: str,
    meta: Any,
    data: memoryview,
    path: str,
    times: Times,
) -> bytes:
    """A map entry with both its key and its value: the last of each sent, or the default."""
    key_meta, value_meta = meta.map_meta
    key: bytes | int | None = None
    value: bytes | int | None = None
    for number, wire_type, item in _fields(data):
        if number == 1 and wire_type == _WIRE_TYPES[key_meta.proto_type]:
            key = item
        elif number == 2 and wire_type == _WIRE_TYPES[value_meta.proto_type]:
            value = item
    key_type, value_type = _WIRE_TYPES[key_meta.proto_type], _WIRE_TYPES[value_meta.proto_type]
    if key is None:
        key = _default(key_type)
    if key_meta.proto_type == "string":
        _check_utf8(key)
    if value is None:
        value = _default(value_type)
    if value_meta.proto_type == "message":
        assert isinstance(value, bytes)
        nested = _info(cls).cls_by_field[f"{name}.value"]
        value = _message(nested, memoryview(value), path, times)
    elif value_meta.proto_type == "string":
        _check_utf8(value)
    return _encode(1, key_type, key) + _encode(2, value_type, value)


def _default(wire_type: int) -> bytes | int:
    defaults: dict[int, bytes | int] = {VARINT: 0, FIXED64: bytes(8), FIXED32: bytes(4)}
    return defaults.get(wire_type, b"")


def _time(cls: type[betterproto2.Message], data: bytes, path: str, times: Times) -> bytes:
    """A Timestamp or Duration: kept exactly in `times`, written as the nearest value
    `datetime` / `timedelta` hold (betterproto2 turns them into those)."""
    seconds = nanos = 0
    for number, _, value in _fields(memoryview(data)):
        assert isinstance(value, int)
        if number == 1:
            seconds = _signed(value)
        else:
            nanos = _signed(value)
            nanos = (nanos + (1 << 31)) % (1 << 32) - (1 << 31)  # an int32
    times.exact[path] = (seconds, nanos)
    total = seconds * _NANOS + nanos
    if cls is Timestamp:
        total = min(max(total, _MIN_TIME), _MAX_TIME)
    else:
        total = min(max(total, -_MAX_SPAN), _MAX_SPAN)
    # Seconds and nanos of one sign for a Duration, nanos in [0, 1e9) for a Timestamp.
    seconds, nanos = divmod(total, _NANOS)
    if cls is Duration and seconds < 0 and nanos:
        seconds, nanos = seconds + 1, nanos - _NANOS
    return _encode(1, VARINT, seconds) + _encode(2, VARINT, nanos)
