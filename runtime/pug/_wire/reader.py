"""Reading sdk.events.v1 batches back into plain Python values, for the dev server and
FakePug: what a server received, as the server stores it.

`read_batch(body)` gives one `WireEvent` per event of a BatchCreateRequest body. Property
values are `str`, `int`, `float`, `bool`, `Timestamp`, or None for a PropertyValue with no
member of its oneof set (which the server refuses).

It reads the bytes directly (field keys from the schema, `pug.wire_tags`), not through
betterproto2 objects (~0.3 ms an event): the dev server must ingest an app's exit burst
at SDK speed. So the loops are written out: one-byte keys and lengths are read inline,
names are module constants, and nested messages are read by offset, not sliced. It reads
as the fake's canonical reader (`pug.testing.fake.wire`) does, Go's protobuf semantics:

- bytes Go refuses raise `Unreadable` (a ValueError): a bad or overlong varint, a length
  past the end, wire type 6 or 7, field number 0, an unmatched group, a kept string that
  is not UTF-8;
- unknown fields and fields sent with another wire type are skipped; the last of a field
  sent twice is kept (a Timestamp sent twice is merged), the last member of a oneof;
- a map entry without a key has the key "", without a value no member (None); a key sent
  twice keeps its first place and its last value;
- Timestamps are kept exactly as sent (seconds an int64, nanos an int32).

What follows an event's id and time (distinct id, kind, session, properties) is mostly
the same bytes from one event to the next: it is read once and kept by its bytes (a cache
bounded in bytes), and events that share it share its values.
"""

from __future__ import annotations

import datetime
import struct
from typing import NamedTuple, TypeAlias

import pug.wire_tags as T

_NANOS_PER_SECOND = 1_000_000_000
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# What datetime holds, in nanoseconds from the epoch (year 1 to the last microsecond of 9999).
_MIN_TIME = (
    (datetime.datetime(1, 1, 1, tzinfo=datetime.UTC) - _EPOCH)
    // datetime.timedelta(microseconds=1)
    * 1000
)
_MAX_TIME = (
    (datetime.datetime.max.replace(tzinfo=datetime.UTC) - _EPOCH)
    // datetime.timedelta(microseconds=1)
    * 1000
)


class Timestamp(NamedTuple):
    """A google.protobuf.Timestamp as sent: exact to the nanosecond."""

    seconds: int
    nanos: int

    def to_datetime(self) -> datetime.datetime:
        """As a UTC datetime (to the microsecond), clamped to the years 1 to 9999 that
        `datetime` holds (a Timestamp as sent may be outside them)."""
        total = self.seconds * _NANOS_PER_SECOND + self.nanos
        seconds, nanos = divmod(min(max(total, _MIN_TIME), _MAX_TIME), _NANOS_PER_SECOND)
        return _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)


Value: TypeAlias = "str | int | float | bool | Timestamp | None"


class WireEvent(NamedTuple):
    """One sdk.events.v1.Event; None for a field not present."""

    event_id: str | None
    kind: str | None
    distinct_id: str | None
    occur_time: Timestamp | None
    session_id: str | None
    cookieless: bool | None
    auto_properties: dict[str, Value]
    custom_properties: dict[str, Value]


class Unreadable(ValueError):
    """The bytes are not a BatchCreateRequest the server can unmarshal."""


_MAX_FIELD_NUMBER = (1 << 29) - 1
_U64 = 1 << 64
_I64 = 1 << 63
_unpack_double = struct.Struct("<d").unpack_from

# Keys (tag bytes) of the fields read, from the schema; any other key is skipped whole
# (an unknown field, or a known one sent with another wire type: unknown to Go too).
_EVENTS = T.BATCH_CREATE_REQUEST_EVENTS[0]
_EVENT_ID, _AUTO, _CUSTOM, _DISTINCT_ID, _KIND, _OCCUR_TIME, _SESSION_ID, _COOKIELESS = (
    T.EVENT_EVENT_ID[0], T.EVENT_AUTO_PROPERTIES[0], T.EVENT_CUSTOM_PROPERTIES[0],
    T.EVENT_DISTINCT_ID[0], T.EVENT_KIND[0], T.EVENT_OCCUR_TIME[0], T.EVENT_SESSION_ID[0],
    T.EVENT_COOKIELESS[0],
)  # fmt: skip
_MAP_KEY, _MAP_VALUE = T.MAP_ENTRY_KEY[0], T.MAP_ENTRY_VALUE[0]
_PV_STRING, _PV_INT, _PV_DOUBLE, _PV_BOOL, _PV_TIMESTAMP = (
    T.PROPERTY_VALUE_STRING_VALUE[0], T.PROPERTY_VALUE_INT_VALUE[0],
    T.PROPERTY_VALUE_DOUBLE_VALUE[0], T.PROPERTY_VALUE_BOOL_VALUE[0],
    T.PROPERTY_VALUE_TIMESTAMP_VALUE[0],
)  # fmt: skip
_SECONDS, _NANOS = T.TIMESTAMP_SECONDS[0], T.TIMESTAMP_NANOS[0]


def read_batch(body: bytes) -> list[WireEvent]:
    """The events of a BatchCreateRequest body; `Unreadable` (a ValueError) for bytes the
    server cannot unmarshal. Events whose bytes after their id and time are the same share
    those values, property dicts included (the same objects): treat them as read-only.
    Consumers may use that identity to reuse what they derived from one for the next.

    The same bytes object read again (the dev server's fake, then its page's feed, read
    each request's body) gives the events read the first time, in a new list."""
    last_body, last_events = _last[0]  # one read of one tuple: consistent across threads
    if body is last_body:
        return list(last_events)
    data = bytes(body)
    with _AS_UNREADABLE:
        events = [_event(data, start, stop) for start, stop in event_spans(data)]
    _last[0] = (body, events)  # held, so `is` cannot match another object
    return list(events)


def read_event(data: bytes) -> WireEvent:
    """One Event message's bytes, read as `read_batch` reads each event of a batch."""
    with _AS_UNREADABLE:
        return _event(data, 0, len(data))


def read_entry(entry: bytes) -> tuple[str, Value]:
    """One map<string, PropertyValue> entry's bytes: its key and value."""
    found = _entries.get(entry)
    if found is None:
        with _AS_UNREADABLE:
            found = _entry(entry, 0, len(entry))
    return found


def read_timestamp(message: bytes) -> Timestamp:
    """A google.protobuf.Timestamp message's bytes, exactly as sent."""
    with _AS_UNREADABLE:
        return _timestamp(message, [(0, len(message))])


class _AsUnreadable:
    """Reading past the end (IndexError) and a kept string that is not UTF-8, raised as
    the `Unreadable` Go's parser reports."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is IndexError:
            raise _truncated() from None
        if kind is UnicodeDecodeError:
            raise Unreadable("string field contains invalid UTF-8") from None


_AS_UNREADABLE = _AsUnreadable()


# The last body read and its events: one body (the caller bounds its size).
_last: list[tuple[object, list[WireEvent]]] = [(None, [])]


def event_spans(data: bytes) -> list[tuple[int, int]]:
    """Where each event's bytes are: the request's fields are read whole first (as the
    fake's canonical reader does), so a malformed tail is found before any event."""
    spans = []
    pos, end = 0, len(data)
    while pos < end:
        key = data[pos]
        pos += 1
        if key > 0x7F:
            key, pos = _varint(data, pos, key)
        if key == _EVENTS:
            size = data[pos]
            pos += 1
            if size > 0x7F:  # events are mostly 128 bytes to 16 KiB: two bytes, inline
                if data[pos] < 0x80:
                    size = size & 0x7F | data[pos] << 7
                    pos += 1
                else:
                    size, pos = _varint(data, pos, size)
            stop = pos + size
            if stop > end:
                raise _past_end()
            spans.append((pos, stop))
            pos = stop
        else:
            pos = _skip(data, pos, end, key)
    return spans


# What follows an event's id and time (distinct id, kind, session, properties) repeats from
# event to event of one user and kind: read once, kept by its bytes. Bounded in bytes (what
# a tail and the event read from it hold, emptied when full) and per tail. A tail of 174
# bytes (2 properties) held 1 030 B with its WireEvent (its dicts, strings and values).
_TAIL_CACHE_BYTES = 4 << 20
_TAIL_MAX_BYTES = 4096
_TAIL_HELD_PER_BYTE, _TAIL_HELD = 4, 400
_tails: dict[bytes, WireEvent] = {}
_tails_size = [0]


def _event(data: bytes, pos: int, end: int) -> WireEvent:
    """One Event from data[pos:end]: its id and time (the SDK writes them first), then the
    rest, read by `_read_event` once per distinct tail of bytes."""
    start = pos
    event_id = None
    occur: list[tuple[int, int]] = []  # occur_time's parts: a message sent twice is merged
    while pos < end:
        key = data[pos]
        if key != _EVENT_ID and key != _OCCUR_TIME:
            break
        size = data[pos + 1]
        pos += 2
        if size > 0x7F:
            size, pos = _varint(data, pos, size)
        stop = pos + size
        if stop > end:
            raise _past_end()
        if key == _EVENT_ID:
            event_id = data[pos:stop]
        else:
            occur.append((pos, stop))
        pos = stop
    if end - pos > _TAIL_MAX_BYTES:
        return _read_event(data, start, end)
    tail = data[pos:end]
    rest = _tails.get(tail)
    if rest is None:
        rest = _read_event(data, pos, end)
        if rest.event_id is not None or rest.occur_time is not None:
            return _read_event(data, start, end)  # not the SDK's layout: read it whole
        if _tails_size[0] > _TAIL_CACHE_BYTES:
            _tails.clear()
            _tails_size[0] = 0
        _tails[tail] = rest
        _tails_size[0] += _TAIL_HELD_PER_BYTE * len(tail) + _TAIL_HELD
    return WireEvent(
        None if event_id is None else event_id.decode(),
        rest.kind,
        rest.distinct_id,
        _timestamp(data, occur) if occur else None,
        rest.session_id,
        rest.cookieless,
        rest.auto_properties,
        rest.custom_properties,
    )


def _read_event(data: bytes, pos: int, end: int) -> WireEvent:
    """The fields of an Event in data[pos:end]. Strings are decoded after the loop, so only
    the last of a field sent twice must be UTF-8 (as only the last is kept)."""
    event_id = kind = distinct_id = session_id = None
    occur: list[tuple[int, int]] = []  # occur_time's parts: a message sent twice is merged
    cookieless: bool | None = None
    auto: dict[str, Value] = {}
    custom: dict[str, Value] = {}
    entries = _entries
    while pos < end:
        key = data[pos]
        pos += 1
        if key > 0x7F:
            key, pos = _varint(data, pos, key)
        if key == _COOKIELESS:
            flag = data[pos]
            pos += 1
            if flag > 0x7F:
                flag, pos = _varint(data, pos, flag)
            cookieless = flag != 0
            continue
        if key not in _EVENT_LENGTH_KEYS:
            pos = _skip(data, pos, end, key)
            continue
        size = data[pos]
        pos += 1
        if size > 0x7F:
            size, pos = _varint(data, pos, size)
        stop = pos + size
        if stop > end:
            raise _past_end()
        if key == _CUSTOM:
            entry = entries.get(data[pos:stop])
            if entry is None:
                entry = _entry(data, pos, stop)
            custom[entry[0]] = entry[1]
        elif key == _AUTO:
            entry = entries.get(data[pos:stop])
            if entry is None:
                entry = _entry(data, pos, stop)
            auto[entry[0]] = entry[1]
        elif key == _EVENT_ID:
            event_id = data[pos:stop]
        elif key == _KIND:
            kind = data[pos:stop]
        elif key == _DISTINCT_ID:
            distinct_id = data[pos:stop]
        elif key == _SESSION_ID:
            session_id = data[pos:stop]
        else:
            occur.append((pos, stop))
        pos = stop
    if pos > end:  # a varint ran past the event's end
        raise _truncated()
    return WireEvent(
        None if event_id is None else event_id.decode(),
        None if kind is None else kind.decode(),
        None if distinct_id is None else distinct_id.decode(),
        _timestamp(data, occur) if occur else None,
        None if session_id is None else session_id.decode(),
        cookieless,
        auto,
        custom,
    )


_EVENT_LENGTH_KEYS = frozenset(
    (_EVENT_ID, _AUTO, _CUSTOM, _DISTINCT_ID, _KIND, _OCCUR_TIME, _SESSION_ID)
)


def _entry(data: bytes, pos: int, end: int) -> tuple[str, Value]:
    """One map<string, PropertyValue> entry: the last key and value sent, "" and a
    PropertyValue with no member when missing (a duplicate key's last value wins: the
    caller's dict). Kept by its bytes in `_entries`."""
    start = pos
    key_at = value_at = None
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag > 0x7F:
            tag, pos = _varint(data, pos, tag)
        if tag != _MAP_KEY and tag != _MAP_VALUE:
            pos = _skip(data, pos, end, tag)
            continue
        size = data[pos]
        pos += 1
        if size > 0x7F:
            size, pos = _varint(data, pos, size)
        stop = pos + size
        if stop > end:
            raise _past_end()
        if tag == _MAP_KEY:
            key_at = (pos, stop)
        else:
            value_at = (pos, stop)
        pos = stop
    if pos > end:
        raise _truncated()
    key = "" if key_at is None else data[key_at[0] : key_at[1]].decode()
    entry = key, None if value_at is None else _value(data, value_at[0], value_at[1])
    if end - start <= _ENTRY_MAX_BYTES:
        if _entries_size[0] > _ENTRY_CACHE_BYTES:
            _entries.clear()
            _entries_size[0] = 0
        _entries[data[start:end]] = entry
        _entries_size[0] += 2 * (end - start) + _ENTRY_HELD
    return entry


# Property entries (key and value) repeat across events whose other properties differ:
# each is read once, kept by its bytes (bounded in bytes: what an entry and its key and
# value hold, 223 B for an entry of 17; emptied when full).
_ENTRY_CACHE_BYTES = 1 << 20
_ENTRY_MAX_BYTES = 256
_ENTRY_HELD = 220
_entries: dict[bytes, tuple[str, Value]] = {}
_entries_size = [0]


def _value(data: bytes, pos: int, end: int) -> Value:
    """A PropertyValue's member: the last one sent (setting one clears the others)."""
    found: Value = None
    # A string or Timestamp member is read only if it stays the last one (as before: the
    # bytes of a member replaced are never looked into); a Timestamp's parts are merged.
    text_at = None
    times: list[tuple[int, int]] | None = None
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag > 0x7F:
            tag, pos = _varint(data, pos, tag)
        if tag in (_PV_STRING, _PV_TIMESTAMP):
            size = data[pos]
            pos += 1
            if size > 0x7F:
                size, pos = _varint(data, pos, size)
            stop = pos + size
            if stop > end:
                raise _past_end()
            if tag == _PV_STRING:
                text_at, times = (pos, stop), None
            elif times is None:
                text_at, times = None, [(pos, stop)]
            else:
                times.append((pos, stop))
            pos = stop
        elif tag in (_PV_INT, _PV_BOOL):
            number = data[pos]
            pos += 1
            if number > 0x7F:
                number, pos = _varint(data, pos, number)
            found = number != 0 if tag == _PV_BOOL else number - _U64 if number >= _I64 else number
            text_at = times = None
        elif tag == _PV_DOUBLE:
            if pos + 8 > end:
                raise Unreadable("unexpected end of data in a fixed-size field")
            found = _unpack_double(data, pos)[0]
            text_at = times = None
            pos += 8
        else:
            pos = _skip(data, pos, end, tag)
    if pos > end:
        raise _truncated()
    if text_at is not None:
        return data[text_at[0] : text_at[1]].decode()
    if times is not None:
        return _timestamp(data, times)
    return found


def _timestamp(data: bytes, parts: list[tuple[int, int]]) -> Timestamp:
    """A google.protobuf.Timestamp exactly as sent (seconds an int64, nanos an int32)
    from the (start, stop) of each time it was sent: a message sent twice is merged, read
    as its parts' bytes joined."""
    if len(parts) == 1:
        pos, end = parts[0]
    else:
        data = b"".join([data[start:stop] for start, stop in parts])
        pos, end = 0, len(data)
    seconds = nanos = 0
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag > 0x7F:
            tag, pos = _varint(data, pos, tag)
        if tag in (_SECONDS, _NANOS):
            number = data[pos]
            pos += 1
            if number > 0x7F:
                number, pos = _varint(data, pos, number)
            if tag == _SECONDS:
                seconds = number - _U64 if number >= _I64 else number
            else:
                nanos = (number + (1 << 31)) % (1 << 32) - (1 << 31)
        else:
            pos = _skip(data, pos, end, tag)
    if pos > end:
        raise _truncated()
    return Timestamp(seconds, nanos)


def _varint(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of a varint whose first byte (above 0x7F) was read. Go refuses more than
    10 bytes, or a 10th byte above 1 (more than 64 bits)."""
    # Up to 5 bytes (lengths, times in seconds and nanos) unrolled: twice the loop's speed.
    byte = data[pos]
    if byte < 0x80:
        return first & 0x7F | byte << 7, pos + 1
    value = first & 0x7F | (byte & 0x7F) << 7
    byte = data[pos + 1]
    if byte < 0x80:
        return value | byte << 14, pos + 2
    value |= (byte & 0x7F) << 14
    byte = data[pos + 2]
    if byte < 0x80:
        return value | byte << 21, pos + 3
    value |= (byte & 0x7F) << 21
    byte = data[pos + 3]
    if byte < 0x80:
        return value | byte << 28, pos + 4
    value |= (byte & 0x7F) << 28
    pos += 4
    for shift in (35, 42, 49, 56, 63):
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            break
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    raise Unreadable("variable length integer overflow")


def _skip(data: bytes, pos: int, end: int, key: int) -> int:
    """Past a field not read (its key read): checked as Go's parser checks it."""
    number, wire_type = key >> 3, key & 7
    if number == 0 or number > _MAX_FIELD_NUMBER:
        raise Unreadable(f"invalid field number {number}")
    if wire_type == 0:
        _, pos = _varint(data, pos + 1, data[pos]) if data[pos] > 0x7F else (0, pos + 1)
    elif wire_type == 1 or wire_type == 5:
        pos += 8 if wire_type == 1 else 4
        if pos > end:
            raise Unreadable("unexpected end of data in a fixed-size field")
    elif wire_type == 2:
        size = data[pos]
        pos += 1
        if size > 0x7F:
            size, pos = _varint(data, pos, size)
        pos += size
        if pos > end:
            raise _past_end()
    elif wire_type == 3:
        while True:  # a group: its fields up to the matching end
            if pos >= end:
                raise Unreadable("unexpected end of data in a group")
            inner = data[pos]
            pos += 1
            if inner > 0x7F:
                inner, pos = _varint(data, pos, inner)
            if inner & 7 == 4:
                if inner >> 3 != number:
                    raise Unreadable("mismatched end group")
                if pos > end:
                    raise _truncated()
                return pos
            pos = _skip(data, pos, end, inner)
    elif wire_type == 4:
        raise Unreadable("unmatched end group")
    else:
        raise Unreadable(f"invalid wire type {wire_type}")
    if pos > end:
        raise _truncated()
    return pos


def _past_end() -> Unreadable:
    return Unreadable("length-delimited field runs past the end")


def _truncated() -> Unreadable:
    return Unreadable("unexpected end of data")
