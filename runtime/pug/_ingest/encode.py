"""EventEncoder: the one place an event becomes the framed bytes the queue holds.

A framed event is an entry of `BatchCreateRequest.events` (tag, length, Event body), so a
batch is one join. Much of what an event carries repeats from call to call: what follows
the distinct id for one kind (the kind, the client's session and auto-properties: a
"tail"), custom (key, value) pairs, the frame of a length, the event id's first 24
characters and the occur_time of one millisecond. The encoder remembers each of them, and
it alone: every cache is an attribute of one encoder (one per client), bounded by entries
and by bytes, so a client's caches hold a few MiB at most whatever callers send. What
rarely repeats is written, not remembered: distinct ids (but a kind's last one), and the
values of a key that turned out volatile (order ids, amounts; see `_Volatile`).

Validation is not done here (see `pug._ingest.validate`), with one exception that is a
cache's contract: a kind's tail is held only once a pair with it passed
`validate.check_event_ids`, so with a held kind only the distinct id is checked (the rules
of `validate.check_distinct_id`, which raises with its message when one is broken).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from typing import Any

from pug._ingest import validate
from pug._wire import protobuf as pb
from pug._wire.codegen_support import CACHES_NEEDED, ENCODERS, Caches, Encoder, no_caches
from pug.errors import PugValidationError
from pug.event import REGISTRY, PugEvent, Variant, WireProperties, event_class, event_properties
from pug.ids import uuid7_run
from pug.properties import check_key, check_mapping, omit_failed, wire_value
from pug.rules import AUTO_PROPERTY_PREFIX

_time_ns = time.time_ns  # a module global: tests pin the clock here
_pack_double = struct.Struct("<d").pack
_SMALL = pb.SMALL
_STRING, _DOUBLE = Variant.STRING, Variant.DOUBLE  # enum lookups cost ~0.2 µs each
_CUSTOM, _MAP_KEY, _MAP_VALUE = pb.CUSTOM, pb.MAP_KEY, pb.MAP_VALUE
_PV_STRING = pb.PV_STRING
_DISTINCT_ID, _KIND = pb.DISTINCT_ID, pb.KIND
_RESERVED_ID_PREFIX = validate.RESERVED_ID_PREFIX
_RESERVED_FIRST = _RESERVED_ID_PREFIX[0]  # a distinct id's first character, then startswith
_INF = float("inf")
# The parts of short fields by length, so that writing one is a join of a few: the
# distinct_id field's tag and length; a custom entry's tag and length; a string
# PropertyValue's length, its string_value tag and the string's length. An entry is
# short (every length fits one byte) when its key part and string are together under
# _SHORT_ENTRY bytes.
_ID_HEADS = [_DISTINCT_ID + _SMALL[n] for n in range(128)]
_ENTRY_HEADS = [_CUSTOM + _SMALL[n] for n in range(128)]
_STRING_HEADS = [_SMALL[n + 2] + _PV_STRING + _SMALL[n] for n in range(126)]
_SHORT_ENTRY = 125

# ---- the caches' bounds ----------------------------------------------------------------
# The largest encoding a cache keeps: with its key (no longer than it), an entry costs at
# most ~1 KiB, so a cache of 4096 entries holds at most ~4 MiB whatever callers send.
CACHED_BYTES_MAX = 512
ENTRIES_HELD = 4096  # custom (key, value) entries, in all (then they start again)
KEY_PARTS_HELD = 4096  # what a key alone decides (double heads, string key fields), each
KINDS_HELD = 4096  # kinds (each held once checked), custom and typed apart
# A key whose entries reach this many different values keeps none from then on.
VOLATILE_AFTER = 256
LAST_ID_BYTES = 96  # a longer distinct id is not remembered as a kind's last one
FRAMES_HELD = 4096  # frames by event length (events vary little in length)
# Typed events' field caches (generated encoders keep at most 256 entries in each): at
# most this many, for the classes seen last.
FIELD_CACHES_HELD = 64
# Strings longer than this are not kept as entries: they rarely repeat.
LONG_STRING = 64

_MAX_EVENT_BYTES = validate.MAX_EVENT_BYTES
_FIXED = len(pb.EVENT_ID_PREFIX) + 36  # the event_id field (a 36-character UUID)


def _remember(cache: dict[Any, bytes], key: object, encoded: bytes, limit: int) -> bytes:
    """Keep `encoded` under `key` in a cache of at most `limit` entries (emptied when full:
    what repeats comes back at once), unless it is over CACHED_BYTES_MAX; returns it."""
    if len(encoded) > CACHED_BYTES_MAX:
        return encoded
    if len(cache) >= limit:
        cache.clear()
    cache[key] = encoded
    return encoded


# What is held for a kind: its last distinct id (None at first), the head written for it
# (the distinct_id field and the tail) and the tail (the kind, session id and
# auto-properties fields).
_Held = tuple[str | None, bytes, bytes]


class _Millisecond:
    """What every event of one millisecond shares: the event_id field up to its last 12
    characters and the counter that gives them (see ids.uuid7_run), the occur_time field,
    and the length of those two fields together."""

    __slots__ = ("counter", "id_prefix", "ms", "occur_field", "size")

    def __init__(self, ms: int) -> None:
        self.ms = ms
        seconds, millis = divmod(ms, 1000)
        occur = pb.timestamp(seconds, millis * 1_000_000)
        id_head, self.counter = uuid7_run(ms)
        self.id_prefix = pb.EVENT_ID_PREFIX + id_head
        self.occur_field = pb.OCCUR_TIME + _SMALL[len(occur)] + occur
        self.size = _FIXED + len(self.occur_field)


_NO_MILLISECOND = _Millisecond(0)
_NO_MILLISECOND.ms = -1  # matches no clock reading: the first event starts a run


class EventEncoder:
    """Encodes the events of one client (its session id and auto-properties) and holds
    every cache that makes it fast. Safe to call from many threads: a cache is a dict
    (one-step reads and writes), and the millisecond's run is replaced, never changed."""

    def __init__(self, session_id: str, auto_properties: Mapping[str, str]) -> None:
        self._auto = pb.auto_properties(auto_properties)
        self.session_id = session_id
        # Custom entries by the value's exact type first (so 1, 1.0 and True never share
        # an entry), then by key, then by value.
        self._entries: dict[type, dict[str, dict[object, bytes]]] = {
            str: {},
            int: {},
            float: {},
            bool: {},
        }
        self._entries_held = 0
        # What a custom entry's key alone decides, by key: for a double, every byte but
        # the value's 8; for a string, the map key field and the value's tag. A value
        # seen for the first time (ids, amounts) is encoded from these in a few steps.
        self._double_heads: dict[str, bytes] = {}
        self._key_fields: dict[str, bytes] = {}
        self._frames: dict[int, bytes] = {}
        # Typed events' generated encoders, each with the caches of its string and int
        # fields (pug._wire.codegen_support), by class.
        self._typed: dict[type, tuple[Encoder | None, Caches]] = {}
        self._field_caches = 0
        self._start_session(session_id)

    def _start_session(self, session_id: str) -> None:
        self.session_id = session_id
        # What follows the distinct id in every event of one kind ("tails": the kind, the
        # session id, the auto-properties), by kind, custom kinds and typed events apart.
        # A kind is held once checked (and, as a string, found to name no typed event),
        # with its last distinct id and head (`_Held`): distinct ids are not cached
        # beyond that, since in real traffic most calls bring one not seen lately, and
        # writing it costs less than remembering it.
        self._custom_tails: dict[str, _Held] = {}
        self._typed_tails: dict[str, _Held] = {}
        self._session_auto = pb.session_field(session_id) + self._auto  # every tail ends so
        self._registry_size = -1
        self._now = _NO_MILLISECOND

    def after_fork_in_child(self, session_id: str) -> None:
        """A forked child has its own session, and must not continue the parent's run of
        ids of this millisecond (it would repeat them)."""
        self._start_session(session_id)

    # ---- events ---------------------------------------------------------------------

    def encode_now(
        self,
        distinct_id: str,
        event: PugEvent | str,
        properties: Mapping[Any, Any] | None,
        added: bytes = b"",
    ) -> bytes | None:
        """The common call (no timestamp, session id or before_send) as a framed event
        happening now; None when it needs `encode` (a typed event with extra properties or
        a broken rule, a kind string naming a typed event). `added`: custom entries sent
        after the event's own (a context's, encoded once; no key of the event's). Raises
        PugValidationError."""
        if type(event) is str:
            tails = self._custom_tails
            if len(REGISTRY) != self._registry_size:
                # A catalog was imported: a kind sent as custom until now may be typed.
                tails.clear()
                self._registry_size = len(REGISTRY)
            kind: str = event
            custom = None
        else:
            try:
                fast, caches = self._typed[type(event)]
            except KeyError:
                fast, caches = self._typed_encoder(type(event))
            custom = fast(event, caches) if fast is not None and not properties else None
            if custom is None:  # no generated encoder, extra properties, or a broken rule
                return None
            tails = self._typed_tails
            kind = event.KIND  # type: ignore[union-attr]
        try:
            held = tails[kind]  # a kind held has passed its checks: the distinct id is left
        except KeyError:
            new = self._new_tail(tails, distinct_id, kind, custom is None)
            if new is None:  # a typed kind, as a string
                return None
            held = new
        # One read of the held tuple: another thread may replace it meanwhile.
        head = held[1] if held[0] is distinct_id else self._head(tails, kind, held, distinct_id)
        if custom is None:
            custom = self.custom_properties(properties)
        if added:
            custom += added
        # Now, to the millisecond (the precision of the official SDKs; the id carries the
        # same ms): a new run of ids when the millisecond changed.
        ms = _time_ns() // 1_000_000
        now = self._now  # one read: another thread may replace it meanwhile
        if now.ms != ms:
            now = self._now = _Millisecond(ms)
        size = now.size + len(head) + len(custom)
        try:
            framing = self._frames[size]  # a subscript, not .get(): hits are the rule
        except KeyError:
            framing = self._frame(size)
        body = b"".join(
            (framing, now.id_prefix, b"%012x" % next(now.counter), now.occur_field,
             head, custom)
        )  # fmt: skip
        if len(body) > _MAX_EVENT_BYTES:
            validate.check_event_size(kind, len(body))
        return body

    def encode(
        self,
        event_id: str,
        seconds: int,
        nanos: int,
        distinct_id: str,
        kind: str,
        session_id: str,
        properties: WireProperties,
    ) -> bytes:
        """Any checked event (see the core's `_encode_checked`), framed."""
        head = pb.head(distinct_id, kind, session_id, self._auto)
        body = pb.event(event_id, seconds, nanos, head, self.custom_field(properties))
        framed = self._frame(len(body)) + body
        validate.check_event_size(kind, len(framed))
        return framed

    def _typed_encoder(self, cls: type) -> tuple[Encoder | None, Caches]:
        """The generated encoder of a typed event class first seen, with new caches (the
        encoders of 0.1.0's modules keep their own: they take none)."""
        fast = ENCODERS.get(cls)
        needed = CACHES_NEEDED.get(cls)
        if fast is not None and needed is None:
            legacy = fast
            fast = lambda event, caches: legacy(event)  # noqa: E731
        caches = no_caches(needed or 0)
        if self._field_caches + len(caches) > FIELD_CACHES_HELD:
            self._typed.clear()
            self._field_caches = 0
        self._typed[cls] = (fast, caches)
        self._field_caches += len(caches)
        return fast, caches

    def _frame(self, n: int) -> bytes:
        framing = self._frames.get(n)
        if framing is None:
            framing = _remember(self._frames, n, pb.EVENTS_TAG + pb.varint(n), FRAMES_HELD)
        return framing

    def _head(self, tails: dict[str, _Held], kind: str, held: _Held, distinct_id: str) -> bytes:
        """The distinct_id field and a held kind's tail, once the id passed
        `validate.check_distinct_id`'s rules (which raises with its message when one is
        broken); remembered with the kind as its last distinct id (a handler often tracks
        several events for one user in a row), unless the id is long."""
        if (
            type(distinct_id) is not str
            or not distinct_id
            or (distinct_id[0] == _RESERVED_FIRST and distinct_id.startswith(_RESERVED_ID_PREFIX))
        ):
            validate.check_distinct_id(distinct_id, "distinct_id")  # raises (but for subclasses)
        try:
            data = distinct_id.encode()
        except UnicodeEncodeError:  # lone surrogates: replaced, as pb.utf8 does
            data = pb.utf8(distinct_id)
        n = len(data)
        tail = held[2]
        if n < 128:
            head = _ID_HEADS[n] + data + tail
            if n <= LAST_ID_BYTES and tails.get(kind) is held:
                tails[kind] = (distinct_id, head, tail)
            return head
        return _DISTINCT_ID + pb.varint(n) + data + tail

    def _new_tail(
        self, tails: dict[str, _Held], distinct_id: str, kind: str, as_string: bool
    ) -> _Held | None:
        """What is held for a kind not held yet, once the (distinct id, kind) pair passed
        `validate`'s checks, and held (at most KINDS_HELD kinds, none over
        CACHED_BYTES_MAX): no last distinct id yet, and the kind's tail. None for a kind
        string naming a typed event (`as_string`): `encode` takes it."""
        if as_string and event_class(kind) is not None:
            return None
        validate.check_event_ids(distinct_id, kind)
        tail = pb.field(_KIND, kind.encode()) + self._session_auto  # checked: ASCII
        held: _Held = (None, b"", tail)
        if len(kind) <= CACHED_BYTES_MAX:
            if len(tails) >= KINDS_HELD:
                tails.clear()
            tails[kind] = held
        return held

    # ---- custom properties ------------------------------------------------------------

    def custom_properties(self, props: Mapping[Any, Any] | None) -> bytes:
        """The custom_properties field of a caller's dict, in one pass: a (key, value)
        pair seen before is three dict lookups. Values that cannot be sent are left out
        (pug.properties); raises PugValidationError for a `$` key."""
        if not props:
            return b""
        if type(props) is not dict:
            check_mapping(props)
        parts: list[bytes] = []
        cache = self._entries
        append = parts.append
        for key, value in props.items():
            # Subscripts, not .get(): a hit (the common case) costs no method call.
            try:
                append(cache[type(value)][key][value])
            except Exception:  # not seen yet, a type never cached, or an unhashable value
                append(self.first_seen(key, value))
        return b"".join(parts)

    def first_seen(self, key: object, value: object) -> bytes:
        """The entry of a (key, value) pair the entry cache does not hold, kept if worth
        keeping; b"" when it is left out (pug.properties). A string of at most LONG_STRING
        characters or a finite non-zero float under a key seen before is written from
        what the key decides, in a few steps; the rest takes the generic path."""
        if type(key) is str and key[:1] != AUTO_PROPERTY_PREFIX:
            encoded = self._from_key_parts(key, value)
            if encoded is not None:
                self.keep(key, value, encoded)
                return encoded
        try:
            k = key if type(key) is str and key[:1] != AUTO_PROPERTY_PREFIX else check_key(key)
            if k is None:
                return b""
            mapped = wire_value(k, value)
            return b"" if mapped is None else self.custom_entry(k, mapped[0], mapped[1])
        except PugValidationError:
            raise
        except Exception as exc:
            omit_failed(key, exc)
            return b""

    def _from_key_parts(self, key: str, value: object) -> bytes | None:
        """The entry of a string of at most LONG_STRING characters or of a finite non-zero
        float, from what its key decides if that is held; else None."""
        if type(value) is str:
            key_field = self._key_fields.get(key)
            if key_field is not None and len(value) <= LONG_STRING:
                return _short_string_entry(key_field, value)
        elif type(value) is float and value and -_INF < value < _INF:  # finite, not 0
            double_head = self._double_heads.get(key)
            if double_head is not None:
                return double_head + _pack_double(value)
        return None

    def custom_field(self, props: WireProperties) -> bytes:
        """The custom_properties field of mapped properties, reusing entries seen before (a
        wire value's type decides its variant, so the cache's key is enough)."""
        parts = []
        for key, (variant, value) in props.items():
            try:
                parts.append(self._entries[type(value)][key][value])
            except KeyError:
                parts.append(self.custom_entry(key, variant, value))
        return b"".join(parts)

    def custom_entry(self, key: str, variant: Variant, value: object) -> bytes:
        """The custom_properties entry for (key, value), encoded and kept if worth it:
        not long strings (memory) nor float zeros (0.0 == -0.0, encoded differently)."""
        encoded = self.new_entry(key, variant, value)
        if not (
            (type(value) is str and len(value) > LONG_STRING)
            or (type(value) is float and not value)
        ):
            self.keep(key, value, encoded)
        return encoded

    def keep(self, key: str, value: object, encoded: bytes) -> None:
        """Hold `encoded` as the entry of (key, value), within the bounds: none over
        CACHED_BYTES_MAX, ENTRIES_HELD in all (then every entry goes: what repeats comes
        back at once); a key's VOLATILE_AFTER-th value makes it volatile."""
        by_key = self._entries.get(type(value))
        if by_key is None or len(encoded) > CACHED_BYTES_MAX:
            return
        values = by_key.get(key)
        if isinstance(values, _Volatile):
            return
        if values is not None and len(values) >= VOLATILE_AFTER:
            self._entries_held -= len(values)
            prefix = self._prefix(type(value), key)
            if prefix is None:
                volatile: _Volatile = _VolatileOthers(self, key, b"")
            elif type(value) is str:
                volatile = _VolatileStrings(self, key, prefix)
            else:
                volatile = _VolatileDoubles(self, key, prefix)
            by_key[key] = volatile
            return
        if self._entries_held >= ENTRIES_HELD:
            for held in self._entries.values():
                held.clear()
            self._entries_held = 0
            values = None
        if values is None:
            values = by_key[key] = {}
        values[value] = encoded
        self._entries_held += 1

    def _prefix(self, value_type: type, key: str) -> bytes | None:
        """What `key` alone decides of an entry of a `value_type` value, if held."""
        if value_type is str:
            return self._key_fields.get(key)
        return self._double_heads.get(key) if value_type is float else None

    def new_entry(self, key: str, variant: Variant, value: object) -> bytes:
        """`protobuf.entry(CUSTOM, key, variant, value)`, with what the key decides reused."""
        if variant is _DOUBLE:
            head = self._double_heads.get(key)
            if head is None:
                head = _remember(self._double_heads, key, pb.double_prefix(key), KEY_PARTS_HELD)
            return head + _pack_double(value)
        if variant is _STRING and type(value) is str:
            key_part = self._key_fields.get(key)
            if key_part is None:
                key_part = pb.field(_MAP_KEY, pb.utf8(key)) + _MAP_VALUE
                _remember(self._key_fields, key, key_part, KEY_PARTS_HELD)
            if len(value) <= LONG_STRING:
                encoded = _short_string_entry(key_part, value)
                if encoded is not None:
                    return encoded
            data = pb.utf8(value, pb.MAX_STRING_BYTES)
            n = len(data)
            if len(key_part) + n < _SHORT_ENTRY:
                return b"".join(
                    (_ENTRY_HEADS[len(key_part) + n + 3], key_part, _STRING_HEADS[n], data)
                )
        return pb.entry(_CUSTOM, key, variant, value)

    def cache_bytes(self) -> int:
        """The bytes the caches hold (encodings and keys' texts, not dict overhead): what
        their bounds keep within a few MiB."""
        total = sum(len(k) + len(v) for k, v in self._double_heads.items())
        total += sum(len(k) + len(v) for k, v in self._key_fields.items())
        total += sum(len(v) for v in self._frames.values())
        for by_key in self._entries.values():
            for key, by_value in by_key.items():
                total += sum(len(key) + len(v) for v in by_value.values())
        for tails in (self._custom_tails, self._typed_tails):
            for kind, (last, head, tail) in tails.items():
                total += len(kind) + len(last or "") + len(head) + len(tail)
        for _, caches in self._typed.values():
            for cache in caches:
                total += sum(len(str(k)) + len(v) for k, v in cache.items())
        return total

    def cached_entries(self) -> int:
        """How many encodings the caches hold, all caches together."""
        held = len(self._double_heads) + len(self._key_fields) + len(self._frames)
        held += sum(len(by_value) for by in self._entries.values() for by_value in by.values())
        held += sum(len(cache) for _, caches in self._typed.values() for cache in caches)
        return held + len(self._custom_tails) + len(self._typed_tails)


class _Volatile(dict[object, bytes]):
    """In the entry cache, in place of the entries of a key that turned volatile: one that
    gathered VOLATILE_AFTER different values of one type (order ids, amounts), which do
    not come back. It holds none: `__missing__` writes each value (so a new one raises
    nothing on the caller's path), from what the key decides where a subclass knows how."""

    __slots__ = ("encoder", "key", "prefix")

    def __init__(self, encoder: EventEncoder, key: str, prefix: bytes) -> None:
        self.encoder = encoder
        self.key = key
        self.prefix = prefix


class _VolatileOthers(_Volatile):
    """A volatile key's int or bool values, written the generic way."""

    __slots__ = ()

    def __missing__(self, value: object) -> bytes:
        return self.encoder.first_seen(self.key, value)  # not kept: see `keep`


class _VolatileStrings(_Volatile):
    """A volatile key's string values; `prefix` is the map key field and the value tag."""

    __slots__ = ()

    def __missing__(self, value: str) -> bytes:
        if len(value) <= LONG_STRING:
            encoded = _short_string_entry(self.prefix, value)
            if encoded is not None:
                return encoded
        return self.encoder.first_seen(self.key, value)


class _VolatileDoubles(_Volatile):
    """A volatile key's float values; `prefix` is every byte of an entry but the value's 8."""

    __slots__ = ()

    def __missing__(self, value: float) -> bytes:
        if value and -_INF < value < _INF:
            return self.prefix + _pack_double(value)
        return self.encoder.first_seen(self.key, value)


def _short_string_entry(key_part: bytes, value: str) -> bytes | None:
    """The custom entry of a string of at most LONG_STRING characters under a key whose
    map key field and value tag are `key_part`, when every length fits one byte; else
    None."""
    try:  # at most 256 bytes: within MAX_STRING_BYTES, nothing to cut
        data = value.encode()
    except UnicodeEncodeError:  # lone surrogates: the generic path
        return None
    n = len(data)
    if len(key_part) + n < _SHORT_ENTRY:
        return b"".join((_ENTRY_HEADS[len(key_part) + n + 3], key_part, _STRING_HEADS[n], data))
    return None


# ---- typed events' custom properties, without the client's caches (tests, benchmarks) --


def encode_typed(event: PugEvent) -> tuple[str, bytes]:
    """(kind, encoded custom_properties) of a typed event: by its generated encoder when
    it has one and is sure of every value, else by the checked path."""
    cls = type(event)
    fast = ENCODERS.get(cls)
    if fast is not None:
        encoded = fast(event)
        if encoded is not None:
            return cls.KIND, encoded
    return encode_typed_checked(event)


def encode_typed_checked(event: PugEvent) -> tuple[str, bytes]:
    """`encode_typed` for any PugEvent, through msgspec's validation (`event_properties`).
    Raises the error naming the rule."""
    kind, props = event_properties(event)
    return kind, pb.custom_field(props)
