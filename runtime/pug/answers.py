"""Reading a server's answer into its generated message, with the work it may cost bounded.

betterproto parses in pure Python: a few microseconds per field, and unknown fields cost
time quadratic in their number (each is appended to the bytes kept so far). The transports
bound an answer's size (16 MiB for reads), but 16 MiB of two-byte fields would take minutes
of the caller's CPU, outside any timeout. So before parsing, the answer is walked once,
field by field, as the generated classes describe it, and refused with `resource_exhausted`
when it would cost more than an honest answer could:

- MAX_FIELDS fields in all (the largest page the server returns, 1 000 activity events of a
  hundred properties each, is about 400 000 and parses in about 4 s);
- MAX_DEPTH messages one inside another (protobuf's own default recursion limit);
- unknown fields whose count times size, summed over the messages holding them, is over
  MAX_UNKNOWN_WORK bytes (what appending them copies).

The walk stops as soon as a bound is passed, so a hostile answer costs at most the walk up
to that point (about a microsecond per field); on an honest page it adds about 15% to
the parse (0.09 s to 0.62 s for 1 000 events of 20 properties, measured here).
"""

from __future__ import annotations

from typing import Final, TypeVar

import betterproto2

from pug.errors import PugError, error_for

M = TypeVar("M", bound=betterproto2.Message)

MAX_FIELDS: Final = 500_000
MAX_DEPTH: Final = 100
MAX_UNKNOWN_WORK: Final = 1 << 30

# What a field number of a message is, for the walk.
_SCALAR, _MESSAGE, _PACKED = 0, 1, 2
_Plan = dict[int, tuple[int, "type[betterproto2.Message] | None"]]
_PLANS: dict[type[betterproto2.Message], _Plan] = {}


def parse(cls: type[M], data: bytes) -> M:
    """`data` parsed as `cls`; PugError `resource_exhausted` when the parse would cost more
    than the bounds above, `internal` when the bytes are not a `cls`."""
    try:
        _Walk().message(cls, memoryview(data), 0)
        return cls.parse(data)
    except PugError:
        raise
    except Exception as exc:
        raise error_for("internal", f"unreadable {cls.__name__}: {exc}") from None


def _plan(cls: type[betterproto2.Message]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        meta: betterproto2.ProtoClassMetadata = cls._betterproto  # type: ignore[arg-type]
        plan = {}
        for number, name in meta.field_name_by_number.items():
            field = meta.meta_by_field_name[name]
            if field.proto_type == betterproto2.TYPE_MAP:
                plan[number] = (_MESSAGE, meta.cls_by_field[name])
            elif field.proto_type == betterproto2.TYPE_MESSAGE:
                inner = field.unwrap() if field.unwrap else meta.cls_by_field[name]
                plan[number] = (_MESSAGE, inner)
            elif field.repeated and field.proto_type in betterproto2.PACKED_TYPES:
                plan[number] = (_PACKED, None)
            else:
                plan[number] = (_SCALAR, None)
        _PLANS[cls] = plan
    return plan


class _Walk:
    """One walk over an answer, counting what parsing it would do."""

    def __init__(self) -> None:
        self.fields = 0
        self.unknown_work = 0

    def message(self, cls: type[betterproto2.Message], data: memoryview, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise error_for(
                "resource_exhausted", f"the answer nests messages more than {MAX_DEPTH} deep"
            )
        plan = _plan(cls)
        unknown_count = unknown_bytes = 0
        end = len(data)
        i = 0
        while i < end:
            start = i
            tag, i = _varint(data, i)
            wire_type = tag & 7
            if wire_type == 0:
                _, i = _varint(data, i)
            elif wire_type == 1:
                i += 8
            elif wire_type == 5:
                i += 4
            elif wire_type == 2:
                length, i = _varint(data, i)
                value = data[i : i + length]
                i += length
                kind, inner = plan.get(tag >> 3, (_SCALAR, None))
                if kind == _MESSAGE and inner is not None:
                    self.message(inner, value, depth + 1)
                elif kind == _PACKED:
                    self.fields += length  # at most one element per byte
            else:
                raise ValueError(f"wire type {wire_type} is not supported")
            if i > end:
                raise ValueError("a field runs past the end of its message")
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise error_for(
                    "resource_exhausted", f"the answer has more than {MAX_FIELDS} fields"
                )
            if (tag >> 3) not in plan:
                unknown_count += 1
                unknown_bytes += i - start
                if unknown_count * unknown_bytes + self.unknown_work > MAX_UNKNOWN_WORK:
                    raise error_for(
                        "resource_exhausted",
                        f"the answer has {unknown_count} unknown fields of {unknown_bytes} "
                        f"bytes in one {cls.__name__}, too many to read",
                    )
        self.unknown_work += unknown_count * unknown_bytes


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("the bytes end inside a varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("a varint is longer than 10 bytes")
