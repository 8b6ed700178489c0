"""Event and session ids: UUIDv7 strings, and the check for caller-given UUIDs."""

from __future__ import annotations

import random
import re

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The random module reseeds itself in a forked child, so ids never repeat across a fork.
_bits = random.getrandbits


# The first 15 characters ("tttttttt-tttt-7") are the same for every id of one millisecond.
_prefix: tuple[int, str] = (-1, "")


def uuid7(unix_ms: int) -> str:
    """A lowercase UUIDv7 whose timestamp is `unix_ms` (RFC 9562: 48-bit ms, version 7,
    variant 0b10, 74 random bits)."""
    global _prefix
    unix_ms = max(unix_ms, 0)  # UUIDv7 cannot carry a time before 1970
    cached = _prefix  # one read: another thread may replace it meanwhile
    if cached[0] != unix_ms:
        h = "%012x" % (unix_ms & 0xFFFFFFFFFFFF)
        cached = _prefix = (unix_ms, f"{h[:8]}-{h[8:]}-7")
    rand = _bits(74)  # 12 bits of rand_a, 62 of rand_b (the top two are the variant's)
    return cached[1] + "%03x-%04x-%012x" % (  # noqa: UP031
        rand >> 62,
        0x8000 | (rand >> 48) & 0x3FFF,
        rand & 0xFFFFFFFFFFFF,
    )


def is_uuid(value: object) -> bool:
    """True for a UUID string in the 8-4-4-4-12 hex form (what the server's rule accepts)."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None
