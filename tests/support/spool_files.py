"""A pug spool directory read by the tests from the format as documented (the docstring of
runtime/pug/_ingest/spool.py), not with the SDK's reader: which events are on disk and not
acknowledged, decoded with Google's protobuf."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

from protoc_helpers import GoogleMessages

MAGIC = b"PUGSPOOL1\n"
MARK = b"\xa5\x50"
HEADER = struct.Struct("<2sII")


def records(data: bytes) -> list[tuple[int, int, bytes]]:
    """(start, kind, body) of each valid record of one file, damaged bytes passed over."""
    assert data.startswith(MAGIC), "not a spool file"
    found = []
    pos = len(MAGIC)
    while pos + HEADER.size <= len(data):
        mark, size, crc = HEADER.unpack_from(data, pos)
        payload = data[pos + HEADER.size : pos + HEADER.size + size]
        if mark == MARK and size >= 1 and len(payload) == size and zlib.crc32(payload) == crc:
            found.append((pos, payload[0], payload[1:]))
            pos += HEADER.size + size
        else:
            pos += 1  # damaged: look for the next valid record byte by byte
    return found


def unsent_events(directory: Path) -> list[bytes]:
    """The framed events of every spool file in `directory` not acknowledged yet."""
    events = []
    for path in sorted(directory.glob("*.pugspool")):
        found = records(path.read_bytes())
        acknowledged = max(
            (struct.unpack("<Q", body)[0] for _, kind, body in found if kind == ord("A")),
            default=0,
        )
        events += [
            body for start, kind, body in found if kind == ord("E") and start >= acknowledged
        ]
    return events


def decode(framed: list[bytes], google_pb2: GoogleMessages) -> list[Any]:
    """Framed events (BatchCreateRequest entries) as Google protobuf Events."""
    request = google_pb2["sdk.events.v1.BatchCreateRequest"].FromString(b"".join(framed))
    return list(request.events)  # type: ignore[attr-defined]


def identity(event: Any) -> tuple[str, int, int]:
    """What must not change between the process that tracked and the one that sends."""
    return (event.event_id, event.occur_time.seconds, event.occur_time.nanos)
