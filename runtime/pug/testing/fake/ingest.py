"""BatchCreate's fast path: a batch in the SDK's layout judged field by field, each field
once by its bytes, and its events kept as bytes until something reads them.

The dev server must keep up with an SDK's exit burst (50 000 events/s and more), where
each event brings a new id, time and distinct id and a few new property values among
ones seen before. Reading every event into a `WireEvent` and checking it costs more than
that: here an event is split into its fields, each field's verdict (and, for properties,
its key) is found by its bytes in a cache, and only what storing needs now is decoded —
its id, kind, distinct id, time and cookieless flag (`Arrival`). An event whose bytes are
those of the last events of its length but in its id, time, distinct id and a few values
(`_Shape`) is not even split: only what changed is judged. The event itself is read
whole from its bytes (`Arrival.event()`, `pug._wire.reader.read_event`) when a read, a
page or a printed line asks for it.

`Scanner.scan(body)` answers the batch's `Arrival`s only when it is sure the batch breaks
no rule: every field was one it knows, sent once (property entries aside), and passed.
Anything else — bytes it does not expect, a rule broken, a field it cannot judge alone —
answers None, and the caller takes the exact path (`read_batch`, then every rule in
protovalidate's order), which finds the violations or accepts the batch as it would.
So this path decides nothing on its own: it is a cache of "this batch is clean".
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from math import isfinite
from operator import itemgetter
from typing import Any, NamedTuple, TypeAlias

import pug.wire_tags as T
from pug._wire.reader import (
    Timestamp,
    Value,
    WireEvent,
    event_spans,
    read_entry,
    read_event,
    read_timestamp,
)

_EVENT_ID, _AUTO, _CUSTOM, _DISTINCT_ID, _KIND, _OCCUR_TIME, _SESSION_ID, _COOKIELESS = (
    T.EVENT_EVENT_ID[0], T.EVENT_AUTO_PROPERTIES[0], T.EVENT_CUSTOM_PROPERTIES[0],
    T.EVENT_DISTINCT_ID[0], T.EVENT_KIND[0], T.EVENT_OCCUR_TIME[0], T.EVENT_SESSION_ID[0],
    T.EVENT_COOKIELESS[0],
)  # fmt: skip


class Arrival(NamedTuple):
    """One event of an accepted batch: what storing it needs, and its bytes."""

    event_id: str
    kind: str
    distinct_id: str  # "" when not sent
    occur_time: Timestamp
    cookieless: bool
    raw: bytes  # the Event message's bytes
    # Its custom-property entries' bytes in the order sent, when each key is sent once
    # (the dev server prints from them); None when the event was read whole.
    custom: tuple[bytes, ...] | None

    def event(self) -> WireEvent:
        """The event read whole, as `read_batch` reads it."""
        return read_event(self.raw)


_new_arrival = tuple.__new__


def arrival(event: WireEvent, raw: bytes) -> Arrival:
    """The `Arrival` of an event read whole (the exact path) and already checked."""
    assert event.occur_time is not None  # required: checked before
    return Arrival(
        event.event_id or "",
        event.kind or "",
        event.distinct_id or "",
        event.occur_time,
        bool(event.cookieless),
        raw,
        None,
    )


# Caches of judged fields, by their bytes: bounded in bytes (the keys and values held, and
# what Python spends on each: two objects and a slot, about _HELD_BYTES; a field longer than
# _FIELD_MAX_BYTES is judged every time), emptied when full.
_CACHE_BYTES = 4 << 20
_FIELD_MAX_BYTES = 512
_HELD_BYTES = 160
_TIMES_MAX = 4096  # occur times read, by their bytes (a millisecond's events share one)
# A key whose values keep being new (an order id, an amount) would only churn the cache of
# entries: after this many new values of one head (`_Head`) its entries are not kept.
_KEEP_NEW_VALUES = 256
# Shapes (`_Shape`) are learned for events up to this long, from two events of one length
# in a row (the last event of each length is kept, at most _CANDIDATES of them); a try at
# most once every _SHAPE_TRY_EVERY events, whatever the traffic.
_SHAPE_MAX_BYTES = 4096
_CANDIDATES = 64
_SHAPE_TRY_EVERY = 32


class _Judged:
    """A cache of fields that passed, by their bytes → what the scanner keeps of them."""

    def __init__(self) -> None:
        self.passed: dict[bytes, str] = {}
        self.size = 0

    def keep(self, field: bytes, value: str) -> str:
        if len(field) <= _FIELD_MAX_BYTES:
            if self.size > _CACHE_BYTES:
                self.passed.clear()
                self.size = 0
            self.passed[field] = value
            self.size += len(field) + len(value) + _HELD_BYTES
        return value


class _Middle(NamedTuple):
    """What follows an event's kind in the SDK's layout, judged: kind, session id ("" if
    not sent), and the bytes after the kind field up to the custom properties."""

    kind: str
    session: str
    rest: bytes


class _Layout(NamedTuple):
    """Where the custom entries are in a block of them (each an entry field whose size is
    one byte): `heads(block) == expected` says a block of the same length has its entry
    tags and sizes at the same places, and so its entries are `entries(block)`."""

    heads: Callable[[bytes], tuple[int, ...]]
    expected: tuple[int, ...]
    entries: Callable[[bytes], tuple[bytes, ...]]


class _Head:
    """The head of a custom entry that passed in the SDK's form of a double or a string
    (its key field, then its value's tag, size and member tag), kept by its bytes: an
    entry of the same head and length has the same key, and a value of the same member
    and size to read and judge (a string's length is judged with its head: its size
    bounds it). It counts the values that were new (each kept in the entries' cache up
    to _KEEP_NEW_VALUES)."""

    __slots__ = ("double", "key", "length", "new_values")

    def __init__(self, key: str, length: int, double: bool) -> None:
        self.key = key
        self.length = length  # the entry's
        self.double = double  # else a string
        self.new_values = 1


class _Shape(NamedTuple):
    """Events of one length whose bytes are those of two events judged before (`expected`,
    taken by `literals`) but in the fields that change from event to event (`fields`): the
    id, the time, the distinct id, then the value of each custom entry that changed, the
    doubles (`doubles` of them) before the strings of their size. Such an event has the same
    fields as theirs, sent the same way: only what changed is judged. An app's events of
    one kind differ in just these (the benchmarks' realistic traffic does)."""

    literals: Callable[[bytes], tuple[bytes, ...]]
    expected: tuple[bytes, ...]
    fields: Callable[[bytes], tuple[bytes, ...]]  # the doubles' values before the strings'
    doubles: int
    unpack: Callable[[bytes], tuple[float, ...]]  # the doubles' values, joined
    middle: _Middle
    # The event's custom entries, if each key is sent once (what is printed from).
    entries: Callable[[bytes], tuple[bytes, ...]] | None


# An event's fields: id, time, distinct id (bytes as sent), its middle, custom entries,
# cookieless.
_Parts: TypeAlias = "tuple[bytes, bytes, bytes | None, _Middle, tuple[bytes, ...], bool]"


class Scanner:
    """Judges batches by the rules it is given (derived from the contract by the fake):
    tests of an event's id, kind and session id and of a property value (and the limits
    that test judges by), the property key prefix of auto-properties, the reserved
    distinct id prefix, the most events a batch holds. It knows the contract's Event
    rules by name; the fake builds one only when the contract has no other
    (`pug.testing.fake.server`)."""

    def __init__(
        self,
        *,
        event_id_ok: Callable[[str], object],
        kind_ok: Callable[[str | None], bool],
        session_ok: Callable[[str | None], bool],
        value_ok: Callable[[Value], bool],
        value_limits: tuple[float, bool],
        auto_prefix: str,
        reserved_prefix: str,
        max_events: int,
    ) -> None:
        self._event_id_ok = event_id_ok
        self._kind_ok = kind_ok
        self._session_ok = session_ok
        self._value_ok = value_ok
        # The rules `value_ok` judges by (the longest string, whether a double must be
        # finite): a new value of a known head is judged by them without a call.
        self._longest, self._finite = value_limits
        self._auto_prefix = auto_prefix
        self._reserved_prefix = reserved_prefix
        self._max_events = max_events
        self._kinds = _Judged()
        self._sessions = _Judged()
        self._auto = _Judged()  # entry bytes → key
        self._custom = _Judged()
        self._times: dict[bytes, Timestamp] = {}
        self._middles: dict[bytes, _Middle] = {}  # by the kind field's bytes
        self._middles_size = 0
        self._layouts: dict[int, _Layout] = {}  # by the custom block's length
        self._layouts_size = 0
        self._heads: dict[bytes, _Head] = {}
        self._heads_size = 0
        self._shapes: dict[int, _Shape] = {}  # by the event's length
        self._shapes_size = 0
        # The last event of each length that had no shape: (its bytes, parts, keys).
        self._candidates: dict[int, tuple[bytes, _Parts, list[str | None]]] = {}
        self._until_try = 0  # events to scan before the next try at a shape

    def scan(self, body: bytes) -> list[Arrival] | None:
        """The batch's events if it breaks no rule for sure; None: take the exact path."""
        data = bytes(body)
        try:
            spans = event_spans(data)
            if len(spans) > self._max_events:
                return None
            return self._events(data, spans)
        except (ValueError, IndexError):  # unreadable: the exact path says how
            return None

    def _events(self, data: bytes, spans: list[tuple[int, int]]) -> list[Arrival] | None:
        """Each event judged; None as soon as one is not clean for sure. One loop, its
        names bound once: it runs for every event of every batch. An event of a known
        shape (`_Shape`) has only what changed judged; any other is split into its fields."""
        sdk_layout, any_layout = self._sdk_layout, self._any_layout
        id_ok, times, reserved = self._event_id_ok, self._times, self._reserved_prefix
        known_entry, custom_entry = self._custom.passed.get, self._custom_entry
        shapes, finite = self._shapes, self._finite
        distinct_keys: list[str | None] = []  # the last event's keys, each sent once
        entries: tuple[bytes, ...] | None  # an event's custom entries, if printed from
        distinct: bytes | None
        out: list[Arrival] = []
        for start, end in spans:
            raw = data[start:end]
            shape = shapes.get(end - start)
            if shape is not None and shape.literals(raw) == shape.expected:
                event_id, occur, distinct, *values = shape.fields(raw)
                if values:
                    doubles = shape.doubles
                    joined = b"".join(values[:doubles])
                    if doubles and finite and not all(map(isfinite, shape.unpack(joined))):
                        return None
                    for text in values[doubles:]:
                        text.decode()  # UTF-8, else ValueError: the exact path says how
                middle, cookieless = shape.middle, False
                entries = None if shape.entries is None else shape.entries(raw)
            else:
                parts = sdk_layout(data, start, end)
                ours = parts is not None  # the SDK's layout: a shape may be learned from it
                parts = parts or any_layout(data, start, end)
                if parts is None:
                    return None
                event_id, occur, distinct, middle, custom, cookieless = parts
                # Custom properties: each entry's value rules and its key's prefix rule.
                keys: list[str | None] = list(map(known_entry, custom))
                while None in keys:  # an entry not judged lately (a new value, mostly)
                    i = keys.index(None)
                    keys[i] = custom_entry(custom[i])
                    if keys[i] is None:
                        return None
                # A key sent twice: the entries are not printed from (the last value
                # counts). The same keys as the last event's, mostly: a list compare.
                if keys == distinct_keys or len(set(keys)) == len(keys):
                    distinct_keys, entries = keys, custom
                else:
                    entries = None
                if ours and distinct is not None:  # a new shape, or the length's last one
                    self._next_shape(raw, parts, keys)  # no longer the app's
            # The event's own fields.
            event_text = event_id.decode()
            if not id_ok(event_text):
                return None
            when = times.get(occur)
            if when is None:
                when = read_timestamp(occur)
                if len(times) >= _TIMES_MAX:
                    times.clear()
                times[occur] = when
            distinct_text = "" if distinct is None else distinct.decode()
            # Event's CEL rule of identity, and the batch's CEL rules (event by event).
            if cookieless:
                if distinct_text or middle.session:
                    return None  # batch.cookieless_identity_server_owned
            elif not (distinct_text and middle.session):
                return None  # event.identity_required_unless_cookieless
            if distinct_text.startswith(reserved):
                return None  # batch.distinct_id_reserved_prefix
            out.append(
                _new_arrival(  # Arrival(...), without its Python-level __new__
                    Arrival,
                    (event_text, middle.kind, distinct_text, when, cookieless, raw, entries),
                )
            )
        return out

    def _next_shape(self, raw: bytes, parts: _Parts, keys: list[str | None]) -> None:
        """Keep an event in the SDK's layout that passed, not of its length's shape, as its
        length's candidate; with the last one of that length, learn their shape if they
        have one (in place of the length's last: what the app sends now)."""
        self._until_try -= 1
        if len(raw) > _SHAPE_MAX_BYTES:
            return
        last = self._candidates.pop(len(raw), None)
        if len(self._candidates) >= _CANDIDATES:
            self._candidates.clear()
        self._candidates[len(raw)] = (raw, parts, keys)
        if last is None or self._until_try > 0:
            return
        self._until_try = _SHAPE_TRY_EVERY
        shape = self._shape(last, (raw, parts, keys))
        if shape is not None:
            if self._shapes_size > _CACHE_BYTES:
                self._shapes.clear()
                self._shapes_size = 0
            self._shapes[len(raw)] = shape
            # Its bytes, and the slices and pieces of bytes that split and compare events.
            pieces = 2 * len(shape.expected) + len(parts[4])
            self._shapes_size += len(raw) + pieces * _HELD_BYTES + _HELD_BYTES

    def _shape(
        self,
        last: tuple[bytes, _Parts, list[str | None]],
        this: tuple[bytes, _Parts, list[str | None]],
    ) -> _Shape | None:
        """The shape of two events that passed (of one length, in the SDK's layout, each
        with a distinct id), if their bytes differ only in the id, time and distinct id
        and in values of custom entries of a head that passed (`_Head`); else None."""
        raw, (event_id, occur, distinct, middle, custom, _), keys = this
        before, (_, _, _, _, custom_before, _), keys_before = last
        if keys != keys_before or distinct is None or len(custom) != len(custom_before):
            return None
        at = 4 + len(event_id)  # the time's bytes: after the id's and its own tag and size
        changing = [slice(2, 2 + len(event_id)), slice(at, at + len(occur))]
        at += len(occur) + 2
        changing.append(slice(at, at + len(distinct)))
        doubles: list[slice] = []
        strings: list[slice] = []
        places: list[slice] = []
        at = len(raw) - sum(2 + len(entry) for entry in custom)  # the custom entries'
        for entry, other in zip(custom, custom_before, strict=True):
            places.append(slice(at + 2, at + 2 + len(entry)))
            if entry != other:
                head_at = 5 + entry[1]  # key field, then the value's tag, size and member
                head = self._heads.get(entry[:head_at])
                if head is None or head.length != len(entry) or other[:head_at] != entry[:head_at]:
                    return None
                if head.double:
                    doubles.append(slice(at + 2 + head_at, at + 2 + len(entry)))
                elif entry[head_at] == len(entry) - head_at - 1:  # a string: size, bytes
                    strings.append(slice(at + 3 + head_at, at + 2 + len(entry)))
                else:
                    return None
            at += 2 + len(entry)
        changing += doubles + strings
        kept: list[slice] = []  # what is the same in every event of the shape
        edge = 0
        for part in sorted(changing, key=lambda part: part.start):
            kept.append(slice(edge, part.start))
            edge = part.stop
        kept.append(slice(edge, len(raw)))
        literals = _getter(kept)
        expected = literals(raw)
        if literals(before) != expected:
            return None
        printed = _getter(places) if len(set(keys)) == len(keys) else None
        unpack = struct.Struct(f"<{len(doubles)}d").unpack
        return _Shape(literals, expected, _getter(changing), len(doubles), unpack, middle, printed)

    def _sdk_layout(self, data: bytes, pos: int, end: int) -> _Parts | None:
        """The event's fields if it is laid out as the SDK writes it: id, time, distinct
        id, kind, session id, auto-properties, custom properties, each size one byte; what
        follows the kind up to the custom properties the same bytes as in an event of that
        kind judged before (else judged now); the custom entries where the last block of
        their length had them (`_Layout`, else found now). None: another layout. Each
        field is read inline, not by a helper: this runs for every event."""
        if data[pos] != _EVENT_ID or data[pos + 1] > 0x7F:
            return None
        stop = pos + 2 + data[pos + 1]
        event_id = data[pos + 2 : stop]
        pos = stop
        if data[pos] != _OCCUR_TIME or data[pos + 1] > 0x7F:
            return None
        stop = pos + 2 + data[pos + 1]
        occur = data[pos + 2 : stop]
        pos = stop
        distinct = None
        if data[pos] == _DISTINCT_ID and data[pos + 1] < 0x80:
            stop = pos + 2 + data[pos + 1]
            distinct = data[pos + 2 : stop]
            pos = stop
        if data[pos] != _KIND or data[pos + 1] > 0x7F:
            return None
        stop = pos + 2 + data[pos + 1]
        middle = self._middles.get(data[pos:stop])
        if middle is None or not data.startswith(middle.rest, stop, end):  # within the event
            middle = self._learn_middle(data, pos, end)
            if middle is None:
                return None
        block = data[stop + len(middle.rest) : end]  # the custom entries
        layout = self._layouts.get(len(block))
        if layout is None or layout.heads(block) != layout.expected:
            layout = self._learn_layout(block)
            if layout is None:
                return None
        return event_id, occur, distinct, middle, layout.entries(block), False

    def _learn_layout(self, block: bytes) -> _Layout | None:
        """Where the custom entries of `block` are, kept by its length (an event's entries
        take the same places as the last event's of that length, mostly); None if `block`
        holds another field or a size longer than one byte."""
        places: list[int] = []
        entries: list[slice] = []
        pos, end = 0, len(block)
        while pos + 1 < end and block[pos] == _CUSTOM and block[pos + 1] < 0x80:
            stop = pos + 2 + block[pos + 1]
            places += (pos, pos + 1)
            entries.append(slice(pos + 2, stop))
            pos = stop
        if pos != end:
            return None
        heads = _getter(places)
        layout = _Layout(heads, heads(block), _getter(entries))
        if end <= _FIELD_MAX_BYTES * 16:  # a longer block is split anew each time
            if self._layouts_size > _CACHE_BYTES:
                self._layouts.clear()
                self._layouts_size = 0
            self._layouts[end] = layout
            self._layouts_size += len(entries) * _HELD_BYTES + _HELD_BYTES
        return layout

    def _learn_middle(self, data: bytes, pos: int, end: int) -> _Middle | None:
        """The kind at `pos`, the session id and auto-properties after it, judged and
        kept by their bytes (None if one breaks a rule, or another field is among them)."""
        kind_at = pos
        kind = session = None
        auto: list[bytes] = []
        while pos < end:
            tag, size = data[pos], data[pos + 1]
            if size > 0x7F or tag == _CUSTOM:
                break
            stop = pos + 2 + size
            if tag == _KIND and kind is None:
                kind = data[pos + 2 : stop]
            elif tag == _SESSION_ID and session is None and not auto:
                session = data[pos + 2 : stop]
            elif tag == _AUTO:
                auto.append(data[pos + 2 : stop])
            else:
                return None
            pos = stop
        if pos > end or kind is None:
            return None
        kind_end = kind_at + 2 + len(kind)
        middle = self._middle(kind, session, auto, data[kind_end:pos])
        if middle is not None and pos - kind_at <= _FIELD_MAX_BYTES * 4:
            if self._middles_size > _CACHE_BYTES:
                self._middles.clear()
                self._middles_size = 0
            self._middles[data[kind_at:kind_end]] = middle
            self._middles_size += pos - kind_at + _HELD_BYTES
        return middle

    def _middle(
        self, kind: bytes, session: bytes | None, auto: list[bytes], rest: bytes
    ) -> _Middle | None:
        """Kind, session id and auto-properties judged: None if one breaks a rule."""
        kind_text = self._judge(kind, self._kinds, self._kind_ok)
        if kind_text is None:
            return None
        session_text = ""
        if session is not None:
            found = self._judge(session, self._sessions, self._session_ok)
            if found is None:
                return None
            session_text = found
        for entry in auto:
            if entry not in self._auto.passed and self._entry(entry, self._auto, auto=True) is None:
                return None
        return _Middle(kind_text, session_text, rest)

    def _any_layout(self, data: bytes, pos: int, end: int) -> _Parts | None:
        """The event's fields in any order, each sent once (property entries aside), with
        sizes below 16 KiB; None for anything else (another wire type, a field unknown or
        sent twice, a rule broken by the kind, session id or an auto-property)."""
        event_id = occur = distinct = kind = session = None
        cookieless: bool | None = None
        auto: list[bytes] = []
        custom: list[bytes] = []
        while pos < end:
            tag = data[pos]
            size = data[pos + 1]
            pos += 2
            if tag == _COOKIELESS:
                if size > 0x7F or cookieless is not None:
                    return None
                cookieless = size != 0
                continue
            if size > 0x7F:  # two bytes (entries and ids are shorter than 16 KiB)
                high = data[pos]
                if high > 0x7F:
                    return None
                size = size & 0x7F | high << 7
                pos += 1
            stop = pos + size
            if stop > end:
                return None
            if tag == _CUSTOM:
                custom.append(data[pos:stop])
            elif tag == _AUTO:
                auto.append(data[pos:stop])
            elif tag == _EVENT_ID and event_id is None:
                event_id = data[pos:stop]
            elif tag == _OCCUR_TIME and occur is None:
                occur = data[pos:stop]
            elif tag == _DISTINCT_ID and distinct is None:
                distinct = data[pos:stop]
            elif tag == _KIND and kind is None:
                kind = data[pos:stop]
            elif tag == _SESSION_ID and session is None:
                session = data[pos:stop]
            else:
                return None  # unknown, sent twice, or another wire type: the exact path
            pos = stop
        if pos != end or event_id is None or occur is None or kind is None:
            return None
        middle = self._middle(kind, session, auto, b"")
        if middle is None:
            return None
        return event_id, occur, distinct, middle, tuple(custom), bool(cookieless)

    @staticmethod
    def _judge(field: bytes, judged: _Judged, test: Callable[[str | None], bool]) -> str | None:
        """A kind or session id as text if it passed `test` (now or before), else None."""
        text = judged.passed.get(field)
        if text is None:
            text = field.decode()
            return judged.keep(field, text) if test(text) else None
        return text

    def _custom_entry(self, entry: bytes) -> str | None:
        """The key of a custom entry not judged lately (mostly a new value of a key seen
        before) that breaks no rule; None if it breaks one. An entry of a head that passed
        (`_Head`) has only its value read and judged; it is kept unless its head's values
        keep being new. Each new value of an order id or an amount comes here."""
        at = 2 + entry[1]
        head = self._heads.get(entry[: at + 3])
        if head is None or len(entry) != head.length:
            return self._learn_head(entry, at)
        if head.double:
            if self._finite and not isfinite(_unpack_double(entry, at + 3)[0]):
                return None
        elif entry[at + 3] == head.length - at - 4:  # a string's size, in one byte
            entry[at + 4 :].decode()  # UTF-8, else ValueError: the exact path says how
        else:
            return self._entry(entry, self._custom, auto=False)
        if head.new_values < _KEEP_NEW_VALUES:
            head.new_values += 1
            self._custom.keep(entry, head.key)
        return head.key

    def _learn_head(self, entry: bytes, at: int) -> str | None:
        """The key of a custom entry judged whole (kept), and its head kept if it is a
        double or a string in the SDK's form (`_sdk_entry`); None if it breaks a rule."""
        key = self._entry(entry, self._custom, auto=False)
        if key is None or _sdk_entry(entry) is None:
            return key
        member, size = entry[at + 2], entry[at + 1]
        # A string of its size (in bytes) is not too long (in characters), whatever it is.
        if member == _DOUBLE or (member == _STRING and size - 2 <= self._longest):
            if self._heads_size > _CACHE_BYTES:
                self._heads.clear()
                self._heads_size = 0
            self._heads[entry[: at + 3]] = _Head(key, len(entry), member == _DOUBLE)
            self._heads_size += at + 3 + _HELD_BYTES
        return key

    def _entry(self, entry: bytes, judged: _Judged, *, auto: bool) -> str | None:
        """The key of a property entry that breaks no rule, kept; None if it breaks one."""
        key, value = entry_of(entry)
        if key.startswith(self._auto_prefix) is not auto or not self._value_ok(value):
            return None
        return judged.keep(entry, key)


def _getter(items: list[Any]) -> Callable[[bytes], tuple[Any, ...]]:
    """`itemgetter(*items)`: a block's items in one call, as a tuple however many."""
    if len(items) > 1:
        return itemgetter(*items)
    return lambda block: tuple(block[item] for item in items)


_unpack_double = struct.Struct("<d").unpack_from
_STRING, _INT, _DOUBLE, _BOOL = (
    T.PROPERTY_VALUE_STRING_VALUE[0], T.PROPERTY_VALUE_INT_VALUE[0],
    T.PROPERTY_VALUE_DOUBLE_VALUE[0], T.PROPERTY_VALUE_BOOL_VALUE[0],
)  # fmt: skip
_MAP_KEY, _MAP_VALUE = T.MAP_ENTRY_KEY[0], T.MAP_ENTRY_VALUE[0]


def entry_of(entry: bytes) -> tuple[str, Value]:
    """A property entry's key and value (`read_entry`), in a few steps for the forms the
    SDK writes."""
    return _sdk_entry(entry) or read_entry(entry)


def _sdk_entry(entry: bytes) -> tuple[str, Value] | None:
    """A property entry as the SDK writes a new value (key, then a value with one member:
    a string, a double, or an int or bool below 128), read in a few steps; None for any
    other form (`read_entry` reads every form)."""
    at = 2 + entry[1]
    if entry[0] != _MAP_KEY or entry[1] > 0x7F or entry[at] != _MAP_VALUE:
        return None
    size = entry[at + 1]
    if size > 0x7F or at + 2 + size != len(entry) or size < 2:
        return None
    member, first = entry[at + 2], entry[at + 3]
    if member == _DOUBLE and size == 9:
        value: Value = _unpack_double(entry, at + 3)[0]
    elif member == _STRING and first < 0x80 and size == 2 + first:
        value = entry[at + 4 :].decode()
    elif member == _INT and size == 2 and first < 0x80:
        value = first
    elif member == _BOOL and size == 2 and first < 0x80:
        value = first != 0
    else:
        return None
    return entry[2:at].decode(), value
