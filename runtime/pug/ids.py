"""Event and session ids: UUIDv7 strings, and the check for caller-given UUIDs.

Every random bit comes from `os.urandom` (the kernel's CSPRNG, as RFC 9562 section 6.9
advises), never from the `random` module: an application that calls `random.seed()`,
or a forked child that shares its parent's generator state, could otherwise make two
processes or two calls hand out the same ids, and storage keeps one event per id. There
is no state here to seed, share or reset in a forked child.
"""

from __future__ import annotations

import itertools
import os

from pug.rules import UUID_PATTERN

_urandom = os.urandom
_from_bytes = int.from_bytes  # big-endian by default (3.11+)
_MS = 0xFFFF_FFFF_FFFF  # the 48-bit timestamp field
_LOW48 = 0xFFFF_FFFF_FFFF


def uuid7(unix_ms: int) -> str:
    """A lowercase UUIDv7 whose timestamp is `unix_ms`, with 74 fresh random bits.

    RFC 9562 layout: 48-bit ms, version 7, 12 bits of rand_a, variant 0b10, 62 bits of
    rand_b. A time before 1970 cannot be carried: it becomes 0.
    """
    ms = unix_ms & _MS if unix_ms > 0 else 0
    r = _from_bytes(_urandom(10))  # 80 bits: 12 for rand_a, 62 for rand_b (6 unused)
    # One %-format: measured ~0.5 µs quicker than the f-string with five format specs.
    return "%08x-%04x-%04x-%04x-%012x" % (  # noqa: UP031
        ms >> 16,
        ms & 0xFFFF,
        0x7000 | r >> 68,
        0x8000 | (r >> 48) & 0x3FFF,
        r & _LOW48,
    )


def uuid7_run(unix_ms: int) -> tuple[bytes, itertools.count[int]]:
    """For many UUIDv7s of one millisecond: their first 24 characters
    ("tttttttt-tttt-7rrr-Vrrr-", 26 random bits) and a counter that gives the last 12
    ("rrrrrrrrrrrr") as `b"%012x" % next(counter)`, starting at a random 47-bit value.

    This is RFC 9562's "monotonic random" method (section 6.2): ids of one millisecond
    differ in a counter seeded at random, so they are unique within the process and
    ordered, and formatting one takes a single int. `next()` on the counter is atomic, so
    threads can share it. A forked child must start a new run (the parent's would repeat);
    a new run's bits are fresh from `os.urandom`, in the child as anywhere.
    """
    ms = unix_ms & _MS if unix_ms > 0 else 0
    r = _from_bytes(_urandom(10))  # 80 bits: 12 rand_a, 14 rand_b, 47 counter (7 unused)
    head = b"%08x-%04x-%04x-%04x-" % (
        ms >> 16,
        ms & 0xFFFF,
        0x7000 | r >> 68,
        0x8000 | (r >> 54) & 0x3FFF,
    )
    return head, itertools.count(r & 0x7FFF_FFFF_FFFF)


def is_uuid(value: object) -> bool:
    """True for a UUID string in the 8-4-4-4-12 hex form (what the server's rule accepts)."""
    return isinstance(value, str) and UUID_PATTERN.matches(value)
