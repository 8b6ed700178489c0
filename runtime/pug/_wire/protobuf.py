"""Protobuf writer and reader of the ingestion messages: stateless functions, no caches.

betterproto2 takes ~300 µs to serialize one 8-property Event; this module writes the
same bytes directly (Event, PropertyValue, BatchCreateRequest, IdentifyRequest with its
Struct traits) and reads the one answer the worker needs (BatchCreateResponse). Field tags
come from the schema (`pug.wire_tags`, generated from catalog/proto); tests decode the
output with Google's protobuf and compare with betterproto2. What is worth remembering
between events (encoded entries, heads, frames, the millisecond's id run) is kept by
`pug._ingest.encode.EventEncoder`, not here: this module holds no state, so a forked
child or a second client needs nothing reset.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterable, Mapping
from typing import Any, cast

import pug.wire_tags as T
from pug import rules
from pug.event import Variant, WireProperties

# The server counts a string value's characters (at most MAX_STRING_CHARS); cutting at as
# many UTF-8 bytes stays within it without counting characters.
MAX_STRING_BYTES = rules.MAX_STRING_CHARS
_UTC = datetime.UTC
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_SMALL = [bytes([i]) for i in range(128)]
_pack_double = struct.Struct("<d").pack

# Enum attribute lookups cost ~0.2 µs each; the hot paths use these module constants.
_STRING, _INT, _DOUBLE, _BOOL, _TIMESTAMP = (
    Variant.STRING, Variant.INT, Variant.DOUBLE, Variant.BOOL, Variant.TIMESTAMP
)  # fmt: skip


# Field tags come from the schema (generated from catalog/proto into pug.wire_tags).
_EVENT_ID, _AUTO, _CUSTOM, _DISTINCT_ID, _KIND, _OCCUR_TIME, _SESSION_ID = (
    T.EVENT_EVENT_ID, T.EVENT_AUTO_PROPERTIES, T.EVENT_CUSTOM_PROPERTIES, T.EVENT_DISTINCT_ID,
    T.EVENT_KIND, T.EVENT_OCCUR_TIME, T.EVENT_SESSION_ID,
)  # fmt: skip
CUSTOM = _CUSTOM  # the custom_properties field's tag
_PV_STRING, _PV_INT, _PV_DOUBLE, _PV_BOOL, _PV_TIMESTAMP = (
    T.PROPERTY_VALUE_STRING_VALUE, T.PROPERTY_VALUE_INT_VALUE, T.PROPERTY_VALUE_DOUBLE_VALUE,
    T.PROPERTY_VALUE_BOOL_VALUE, T.PROPERTY_VALUE_TIMESTAMP_VALUE,
)  # fmt: skip
_SECONDS, _NANOS = T.TIMESTAMP_SECONDS, T.TIMESTAMP_NANOS
_MAP_KEY, _MAP_VALUE = T.MAP_ENTRY_KEY, T.MAP_ENTRY_VALUE
MAP_KEY, MAP_VALUE, PV_STRING = _MAP_KEY, _MAP_VALUE, _PV_STRING
_EVENTS = T.BATCH_CREATE_REQUEST_EVENTS
_PV_BOOLS = {True: _PV_BOOL + b"\x01", False: _PV_BOOL + b"\x00"}


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative int (negative int64s are passed as n & 2**64-1)."""
    # Unrolled for the sizes the hot path writes (lengths, timestamps): ~5× the loop's speed.
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 0x10000000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if n < 0x800000000:
        return bytes(
            (n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80,
             n >> 21 & 0x7F | 0x80, n >> 28)
        )  # fmt: skip
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def utf8(text: str, limit: int | None = None) -> bytes:
    """UTF-8 bytes of `text`, lone surrogates replaced, cut to `limit` bytes at a
    character boundary (so the result is always valid UTF-8, as protobuf strings must be)."""
    try:
        data = text.encode()
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
    if limit is not None and len(data) > limit:
        data = data[:limit].decode("utf-8", "ignore").encode()
    return data


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + varint(len(payload)) + payload


def timestamp(seconds: int, nanos: int) -> bytes:
    """A google.protobuf.Timestamp body (zero fields left out, as protobuf writers do)."""
    out = b""
    if seconds:
        out += _SECONDS + varint(seconds & 0xFFFFFFFFFFFFFFFF)
    if nanos:
        out += _NANOS + varint(nanos)
    return out


# google.protobuf.Timestamp's range (years 1 to 9999 in UTC); the server refuses the batch
# of an event with a time outside it.
MIN_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS = -62_135_596_800, 253_402_300_799


def datetime_parts(value: datetime.datetime) -> tuple[int, int]:
    """(seconds, nanos) since the epoch; a naive datetime is taken as UTC. Raises ValueError
    for a time outside the years 1 to 9999 in UTC (an aware `datetime.min` is one)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        raise ValueError(f"{value.isoformat()} is outside the years 1 to 9999 in UTC")
    return seconds, delta.microseconds * 1000


def datetime_from_parts(seconds: int, nanos: int) -> datetime.datetime:
    """The UTC datetime of (seconds, nanos), to the microsecond."""
    return _EPOCH + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)


def property_value(variant: Variant, value: Any) -> bytes:
    """A common.v1.PropertyValue body: exactly one oneof member, set zero values kept.
    `value` is what `variant` says (str, int, float, bool or datetime): typed Any, since
    the pair is checked together where it is made (pug.properties)."""
    if variant is _STRING:
        return field(_PV_STRING, utf8(value, MAX_STRING_BYTES))
    if variant is _INT:
        return _PV_INT + varint(value & 0xFFFFFFFFFFFFFFFF)
    if variant is _DOUBLE:
        return _PV_DOUBLE + _pack_double(value)
    if variant is _BOOL:
        return _PV_BOOLS[value]
    return field(_PV_TIMESTAMP, timestamp(*datetime_parts(value)))


def map_entry(tag: bytes, key: bytes, value: bytes) -> bytes:
    """One entry of a map<string, Message> field."""
    return field(tag, field(_MAP_KEY, key) + field(_MAP_VALUE, value))


def entry(tag: bytes, key: str, variant: Variant, value: object) -> bytes:
    """One map<string, PropertyValue> entry, tag included."""
    return map_entry(tag, utf8(key), property_value(variant, value))


def properties_map(tag: bytes, props: WireProperties) -> bytes:
    """A whole map<string, PropertyValue> field (uncached: for constant parts)."""
    return b"".join([entry(tag, k, v[0], v[1]) for k, v in props.items()])


def double_prefix(key: str) -> bytes:
    """The custom entry of a double property `key`, all but its 8 value bytes."""
    return entry(CUSTOM, key, _DOUBLE, 0.0)[:-8]


def custom_field(props: WireProperties) -> bytes:
    """The custom_properties field of mapped properties (uncached)."""
    return b"".join([entry(CUSTOM, k, v[0], v[1]) for k, v in props.items()])


_UUID_LEN = b"\x24"  # event and session ids are 36-character UUID strings


def head(distinct_id: str, kind: str, session_id: str, auto: bytes) -> bytes:
    """The fields of an Event that repeat for one client, distinct id and kind:
    distinct_id, kind, session_id and auto_properties. Protobuf readers take fields in
    any order, so they are written together once and reused."""
    return b"".join(
        (
            field(_DISTINCT_ID, utf8(distinct_id)),
            field(_KIND, utf8(kind)),
            field(_SESSION_ID, utf8(session_id)),
            auto,
        )
    )


def session_field(session_id: str) -> bytes:
    """The session_id field: with auto_properties, the part of a head one client repeats."""
    return field(_SESSION_ID, utf8(session_id))


DISTINCT_ID, KIND = _DISTINCT_ID, _KIND  # a head's first two fields' tags
EVENT_ID_PREFIX = _EVENT_ID + _UUID_LEN  # event ids are 36-character UUID strings
OCCUR_TIME = _OCCUR_TIME
SMALL = _SMALL  # one-byte varints, by value


# Events are queued framed, as entries of BatchCreateRequest.events (tag and length first),
# so a batch is one join.
EVENTS_TAG = _EVENTS


def frame(body: bytes) -> bytes:
    """An encoded Event as an entry of BatchCreateRequest.events."""
    return _EVENTS + varint(len(body)) + body


def unframe(entry: bytes) -> bytes:
    """The Event body of a `frame`d entry."""
    _, start = _read_varint(entry, 1)  # after the one-byte tag
    return entry[start:]


def event(event_id: str, seconds: int, nanos: int, head: bytes, custom: bytes) -> bytes:
    """An sdk.events.v1.Event body from its `head` and encoded custom_properties (not
    framed: `frame` it to queue it)."""
    occur = timestamp(seconds, nanos)
    return b"".join(
        (EVENT_ID_PREFIX, event_id.encode(), _OCCUR_TIME, _SMALL[len(occur)], occur, head, custom)
    )


def auto_properties(values: Mapping[str, str]) -> bytes:
    """The auto_properties field for string values; encoded once per client."""
    return properties_map(_AUTO, {k: (_STRING, v) for k, v in values.items()})


def batch(entries: Iterable[bytes]) -> bytes:
    """A BatchCreateRequest body from `frame`d events."""
    return b"".join(entries)


def count_events(body: bytes) -> int:
    """How many events a BatchCreateRequest body holds, without decoding them."""
    count = pos = 0
    while pos < len(body):
        length, pos = _read_varint(body, pos + 1)  # skip the tag byte (field 1)
        pos += length
        count += 1
    return count


def accept_all(body: bytes) -> bytes:
    """The BatchCreateResponse that accepts every event of a request (fakes and sinks)."""
    return T.BATCH_CREATE_RESPONSE_ACCEPTED + varint(count_events(body))


def accepted(count: int) -> bytes:
    """The BatchCreateResponse that accepts `count` events and drops none (both fields
    written: they have presence)."""
    return T.BATCH_CREATE_RESPONSE_ACCEPTED + varint(count) + _NONE_DROPPED


_NONE_DROPPED = T.BATCH_CREATE_RESPONSE_DROPPED + varint(0)


# google.protobuf.Struct for identify traits.
def struct_value(value: object) -> bytes:
    """A google.protobuf.Value body for a JSON-like value already cleaned by the caller."""
    if value is None:
        return T.VALUE_NULL_VALUE + b"\x00"  # NULL_VALUE (0): a set member of the oneof
    if value is True or value is False:
        return T.VALUE_BOOL_VALUE + (b"\x01" if value else b"\x00")
    if isinstance(value, int | float):
        return T.VALUE_NUMBER_VALUE + _pack_double(float(value))
    if isinstance(value, str):
        return field(T.VALUE_STRING_VALUE, utf8(value))
    if isinstance(value, Mapping):
        return field(T.VALUE_STRUCT_VALUE, struct_body(value))
    values = cast("Iterable[object]", value)  # a list or tuple, cleaned by the caller
    items = b"".join([field(T.LIST_VALUE_VALUES, struct_value(v)) for v in values])
    return field(T.VALUE_LIST_VALUE, items)


def struct_body(values: Mapping[str, object]) -> bytes:
    """A google.protobuf.Struct body."""
    entries = [map_entry(T.STRUCT_FIELDS, utf8(k), struct_value(v)) for k, v in values.items()]
    return b"".join(entries)


def identify(
    *,
    external_id: str,
    traits: Mapping[str, object] | None,
    anonymous_id: str | None,
    device_id: str | None,
) -> bytes:
    """An sdk.profiles.v1.IdentifyRequest body."""
    out = [field(T.IDENTIFY_REQUEST_EXTERNAL_ID, utf8(external_id))]
    if traits is not None:
        out.append(field(T.IDENTIFY_REQUEST_TRAITS, struct_body(traits)))
    if anonymous_id is not None:
        out.append(field(T.IDENTIFY_REQUEST_ANONYMOUS_ID, utf8(anonymous_id)))
    if device_id is not None:
        out.append(field(T.IDENTIFY_REQUEST_DEVICE_ID, utf8(device_id)))
    return b"".join(out)


# Reading the one response the hot loop needs: sdk.events.v1.BatchCreateResponse.
def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def read_fields(data: bytes) -> Iterable[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varints, bytes for length-delimited fields."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = _read_varint(data, pos)
            yield number, value
        elif kind == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            yield number, data[pos : pos + length]
            pos += length
        elif kind in (1, 5):
            pos += 8 if kind == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {kind}")


_ACCEPTED, _DROPPED, _BY_REASON = (
    tag[0] >> 3
    for tag in (
        T.BATCH_CREATE_RESPONSE_ACCEPTED,
        T.BATCH_CREATE_RESPONSE_DROPPED,
        T.BATCH_CREATE_RESPONSE_DROPPED_BY_REASON,
    )
)


def parse_batch_response(data: bytes) -> tuple[int, int, dict[str, int]]:
    """(accepted, dropped, dropped_by_reason) of a BatchCreateResponse."""
    accepted = dropped = 0
    reasons: dict[str, int] = {}
    for number, value in read_fields(data):
        if number == _ACCEPTED and isinstance(value, int):
            accepted = value
        elif number == _DROPPED and isinstance(value, int):
            dropped = value
        elif number == _BY_REASON and isinstance(value, bytes):
            entry = dict(read_fields(value))
            key = entry.get(1, b"")
            count = entry.get(2, 0)
            if isinstance(key, bytes) and isinstance(count, int):
                reasons[key.decode("utf-8", "replace")] = count
    return accepted, dropped, reasons
