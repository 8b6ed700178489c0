"""What generated code builds on: the typed-event encoders' building blocks and registry.

`pug-codegen` writes, beside each event Struct, a function that checks every field of an
instance against its catalog rules and writes its `custom_properties` entries directly,
with the constant parts (key, tags, lengths) encoded once at import. It returns None for
anything it is not certain about (a wrong type, a broken rule, a str subclass); the
checked path in `pug.properties` then takes the event and names the broken rule. So the
generated code only has to be right about what it accepts, and tests hold it to
producing exactly the checked path's bytes.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Callable
from typing import Any

from pug._wire import protobuf as pb
from pug.event import PugEvent, Variant

__all__ = [
    "ENCODERS",
    "EXACT_INT",
    "UTC",
    "bool_entries",
    "double_prefix",
    "integer",
    "pack_double",
    "register",
    "string",
    "timestamp",
]

Encoder = Callable[[Any], "bytes | None"]
ENCODERS: dict[type[PugEvent], Encoder] = {}

UTC = datetime.UTC
# Ints given for a double field are taken on the fast path while a double holds them exactly.
EXACT_INT = 2**53
pack_double = struct.Struct("<d").pack
# Each field keeps the entries of at most this many distinct values (then starts again).
_CACHE_LIMIT = 256
_LONG = 64  # longer strings are not kept: they rarely repeat
_CACHED_BYTES_MAX = 512  # nor longer encodings (a field's cache stays within ~128 KiB)


def _remember(cache: dict[Any, bytes], key: object, encoded: bytes) -> bytes:
    """Keep `encoded` in a field's cache of at most _CACHE_LIMIT values (emptied when full:
    what repeats comes back at once), none over _CACHED_BYTES_MAX."""
    if len(encoded) > _CACHED_BYTES_MAX:
        return encoded
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = encoded
    return encoded


def register(encoders: dict[type[PugEvent], Encoder]) -> None:
    """Make `encoders` the fast path of their classes (called by generated modules)."""
    ENCODERS.update(encoders)


double_prefix = pb.double_prefix


def bool_entries(name: str) -> tuple[bytes, bytes]:
    """The entries of a bool property `name`: (False, True)."""
    return (
        pb.entry(pb.CUSTOM, name, Variant.BOOL, False),
        pb.entry(pb.CUSTOM, name, Variant.BOOL, True),
    )


def string(cache: dict[str, bytes], name: str, value: str) -> bytes:
    """The entry of a checked string value, remembered in `cache` unless long."""
    encoded = pb.entry(pb.CUSTOM, name, Variant.STRING, value)
    return encoded if len(value) > _LONG else _remember(cache, value, encoded)


def integer(cache: dict[int, bytes], name: str, value: int) -> bytes:
    """The entry of a checked int value, remembered in `cache`."""
    encoded = pb.entry(pb.CUSTOM, name, Variant.INT, value)
    return _remember(cache, value, encoded)


def timestamp(name: str, value: datetime.datetime) -> bytes:
    """The entry of a datetime value (naive is taken as UTC)."""
    return pb.entry(pb.CUSTOM, name, Variant.TIMESTAMP, value)
