"""Event and session ids: UUIDv7 strings, and the check for caller-given UUIDs."""

from __future__ import annotations

import random
import re

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The random module reseeds itself in a forked child, so ids never repeat across a fork.
_bits = random.getrandbits


def uuid7(unix_ms: int) -> str:
    """A lowercase UUIDv7 whose timestamp is `unix_ms` (RFC 9562: 48-bit ms, version 7,
    variant 0b10, 74 random bits)."""
    rand = _bits(74)
    unix_ms = max(unix_ms, 0)  # UUIDv7 cannot carry a time before 1970
    n = (
        (unix_ms & 0xFFFFFFFFFFFF) << 80
        | 0x7 << 76
        | (rand >> 62) << 64
        | 0b10 << 62
        | (rand & 0x3FFFFFFFFFFFFFFF)
    )
    h = "%032x" % n  # noqa: UP031 - the fastest way to pad a 128-bit int to hex
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_uuid(value: object) -> bool:
    """True for a UUID string in the 8-4-4-4-12 hex form (what the server's rule accepts)."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None
