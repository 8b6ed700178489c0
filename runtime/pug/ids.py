"""Event and session ids: UUIDv7 strings, and the check for caller-given UUIDs."""

from __future__ import annotations

import itertools
import random
import re

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The random module reseeds itself in a forked child, so ids never repeat across a fork.
_bits = random.getrandbits
# The variant's hex digit (0b10xx) from any hex digit's low two bits.
_VARIANT = {ord(d): b"89ab"[int(d, 16) & 3 : (int(d, 16) & 3) + 1] for d in "0123456789abcdef"}


def uuid7_prefix(unix_ms: int) -> bytes:
    """The first 15 characters of every UUIDv7 of one millisecond: "tttttttt-tttt-7"
    (RFC 9562: 48-bit ms, then the version)."""
    h = b"%012x" % (max(unix_ms, 0) & 0xFFFFFFFFFFFF)  # UUIDv7 cannot carry a time before 1970
    return h[:8] + b"-" + h[8:] + b"-7"


def uuid7_tail() -> bytes:
    """The other 21 characters, "rrr-Vrrr-rrrrrrrrrrrr": 74 random bits and the variant."""
    r = b"%019x" % _bits(76)  # 12 bits of rand_a, 2 for the variant digit, 62 of rand_b
    return b"".join((r[:3], b"-", _VARIANT[r[3]], r[4:7], b"-", r[7:]))


def uuid7_run(unix_ms: int) -> tuple[bytes, itertools.count[int]]:
    """For many UUIDv7s of one millisecond: their first 24 characters
    ("tttttttt-tttt-7rrr-Vrrr-", 26 random bits) and a counter that gives the last 12
    ("rrrrrrrrrrrr") as `b"%012x" % next(counter)`, starting at a random 47-bit value.

    This is RFC 9562's "monotonic random" method (section 6.2): ids of one millisecond
    differ in a counter seeded at random, so they are unique within the process and
    ordered, and formatting one takes a single int. `next()` on the counter is atomic, so
    threads can share it. A forked child must start a new run (the parent's would repeat).
    """
    r = b"%07x" % _bits(28)  # 12 bits of rand_a, 2 for the variant digit, 14 of rand_b
    head = uuid7_prefix(unix_ms) + r[:3] + b"-" + _VARIANT[r[3]] + r[4:7] + b"-"
    return head, itertools.count(_bits(47))


def uuid7(unix_ms: int) -> str:
    """A lowercase UUIDv7 whose timestamp is `unix_ms`, with 74 fresh random bits."""
    return (uuid7_prefix(unix_ms) + uuid7_tail()).decode()


def is_uuid(value: object) -> bool:
    """True for a UUID string in the 8-4-4-4-12 hex form (what the server's rule accepts)."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None
