"""EventEncoder: the one place an event becomes the framed bytes the queue holds.

A framed event is an entry of `BatchCreateRequest.events` (tag, length, Event body), so a
batch is one join. Most of what an event carries repeats from call to call: the
(distinct id, kind) pair with the client's session and auto-properties (a "head"), custom
(key, value) pairs, the frame of a length, the event id's first 24 characters and the
occur_time of one millisecond. The encoder remembers each of them, and it alone: every
cache is an attribute of one encoder (one per client), bounded by entries and by bytes,
so a client's caches hold a few MiB at most whatever callers send.

Validation is not done here (see `pug._ingest.validate`), with one exception that is a
cache's contract: heads are held by kind, then distinct id, and a kind is held only once
a pair with it passed `validate.check_event_ids`, so a cached head is a checked pair and
a hit skips the checks; a distinct id new to a held kind is checked alone (the rules of
`validate.check_distinct_id`, which raises with its message when one is broken).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from typing import Any

from pug._ingest import validate
from pug._wire import protobuf as pb
from pug._wire.codegen_support import ENCODERS
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

# ---- the caches' bounds ----------------------------------------------------------------
# The largest encoding a cache keeps: with its key (no longer than it), an entry costs at
# most ~1 KiB, so a cache of 4096 entries holds at most ~4 MiB whatever callers send.
CACHED_BYTES_MAX = 512
ENTRIES_HELD = 4096  # custom (key, value) entries, in all (then they start again)
KEY_PARTS_HELD = 4096  # what a key alone decides (double heads, string key fields), each
HEADS_HELD = 4096  # (distinct id, kind) pairs, by pair: one user may send many kinds;
# and at most as many kinds (each held once checked, with the heads of its distinct ids)
FRAMES_HELD = 4096  # frames by event length (events vary little in length)
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
            str: {}, int: {}, float: {}, bool: {}
        }  # fmt: skip
        self._entries_held = 0
        # What a custom entry's key alone decides, by key: for a double, every byte but
        # the value's 8; for a string, the map key field. A value seen for the first time
        # (ids, amounts) is encoded from these in a few steps.
        self._double_heads: dict[str, bytes] = {}
        self._key_fields: dict[str, bytes] = {}
        self._frames: dict[int, bytes] = {}
        self._start_session(session_id)

    def _start_session(self, session_id: str) -> None:
        self.session_id = session_id
        # Heads by kind then distinct id: custom kinds and typed events apart. A kind is
        # held once checked (and, as a string, found to name no typed event), so a
        # distinct id first seen with it is checked alone. The session id is in every
        # head, so a new session starts them again.
        self._custom_heads: dict[str, dict[str, bytes]] = {}
        self._typed_heads: dict[str, dict[str, bytes]] = {}
        self._heads_held = 0
        self._session_auto = pb.session_field(session_id) + self._auto  # every head ends so
        self._registry_size = -1
        self._now = _NO_MILLISECOND

    def after_fork_in_child(self, session_id: str) -> None:
        """A forked child has its own session, and must not continue the parent's run of
        ids of this millisecond (it would repeat them)."""
        self._start_session(session_id)

    # ---- events ---------------------------------------------------------------------

    def encode_now(
        self, distinct_id: str, event: PugEvent | str, properties: Mapping[Any, Any] | None
    ) -> bytes | None:
        """The common call (no timestamp, session id or before_send) as a framed event
        happening now; None when it needs `encode` (a typed event with extra properties or
        a broken rule, a kind string naming a typed event). Raises PugValidationError."""
        if type(event) is str:
            heads = self._custom_heads
            if len(REGISTRY) != self._registry_size:
                # A catalog was imported: a kind sent as custom until now may be typed.
                heads.clear()
                self._registry_size = len(REGISTRY)
            kind: str = event
            custom = None
        else:
            fast = ENCODERS.get(type(event))  # type: ignore[arg-type]
            custom = fast(event) if fast is not None and not properties else None
            if custom is None:  # no generated encoder, extra properties, or a broken rule
                return None
            heads = self._typed_heads
            kind = event.KIND  # type: ignore[union-attr]
        by_id: dict[str, bytes] | None
        try:
            by_id = heads[kind]  # a kind held has passed its checks
            head = by_id.get(distinct_id)  # not a subscript: a new distinct id raises nothing
        except (KeyError, TypeError):  # a kind not held (or a distinct id not even hashable)
            by_id = head = None
        if head is None:
            head = self._new_head(heads, by_id, distinct_id, kind, custom is None)
            if head is None:  # a typed kind, as a string
                return None
        if custom is None:
            custom = self.custom_properties(properties)
        # Now, to the millisecond (the precision of the official SDKs; the id carries the
        # same ms): a new run of ids when the millisecond changed.
        ms = _time_ns() // 1_000_000
        now = self._now  # one read: another thread may replace it meanwhile
        if now.ms != ms:
            now = self._now = _Millisecond(ms)
        n = now.size + len(head) + len(custom)
        try:
            framing = self._frames[n]  # a subscript, not .get(): hits are the rule
        except KeyError:
            framing = self._frame(n)
        body = b"".join(
            (framing, now.id_prefix, b"%012x" % next(now.counter), now.occur_field, head, custom)
        )
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

    def _frame(self, n: int) -> bytes:
        framing = self._frames.get(n)
        if framing is None:
            framing = _remember(self._frames, n, pb.EVENTS_TAG + pb.varint(n), FRAMES_HELD)
        return framing

    def _new_head(
        self,
        heads: dict[str, dict[str, bytes]],
        by_id: dict[str, bytes] | None,
        distinct_id: str,
        kind: str,
        as_string: bool,
    ) -> bytes | None:
        """The head of a (distinct id, kind) pair not cached, once the pair passed
        `validate`'s checks (`by_id`, a kind held, is checked already, so only the distinct
        id is), then remembered: at most HEADS_HELD pairs and kinds in all, none over
        CACHED_BYTES_MAX beyond the constant part. None for a kind string naming a typed
        event (`as_string`): `encode` takes it."""
        if by_id is None:  # a kind not held (since the heads last started again)
            if as_string and event_class(kind) is not None:
                return None
            validate.check_event_ids(distinct_id, kind)
            by_id = heads.get(kind)
            if by_id is None and len(kind) <= CACHED_BYTES_MAX:
                if len(heads) >= HEADS_HELD:
                    self._clear_heads()
                by_id = heads[kind] = {}
        elif (
            type(distinct_id) is not str
            or not distinct_id
            or (distinct_id[0] == _RESERVED_FIRST and distinct_id.startswith(_RESERVED_ID_PREFIX))
        ):
            validate.check_distinct_id(distinct_id, "distinct_id")  # raises (but for subclasses)
        try:
            data = distinct_id.encode()
        except UnicodeEncodeError:  # lone surrogates: replaced, as pb.utf8 does
            data = pb.utf8(distinct_id)
        kind_data = kind.encode()  # checked: ASCII
        n, m = len(data), len(kind_data)
        if n < 128 and m < 128:  # one-byte lengths
            head = b"".join(
                (_DISTINCT_ID, _SMALL[n], data, _KIND, _SMALL[m], kind_data, self._session_auto)
            )
        else:
            head = pb.head(distinct_id, kind, self.session_id, self._auto)
        if by_id is None or len(head) - len(self._auto) > CACHED_BYTES_MAX:
            return head
        if self._heads_held >= HEADS_HELD:
            self._clear_heads()
            by_id = heads[kind] = {}
        by_id[distinct_id] = head
        self._heads_held += 1
        return head

    def _clear_heads(self) -> None:
        self._custom_heads.clear()
        self._typed_heads.clear()
        self._heads_held = 0

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
                continue
            except Exception:  # not seen yet, a type never cached, or an __eq__ that raises
                pass
            encoded = self._first_seen(key, value)
            if encoded is not None:  # else left out
                append(encoded)
        return b"".join(parts)

    def _first_seen(self, key: object, value: object) -> bytes | None:
        """The entry of a (key, value) pair the entry cache does not hold, remembered if
        worth keeping (as `custom_entry` does); None when it is left out (pug.properties).
        A string of at most LONG_STRING characters or a finite non-zero float under a key
        seen before is written from what the key decides, in a few steps; the rest takes
        the generic path."""
        encoded = None
        if type(key) is str and key[:1] != AUTO_PROPERTY_PREFIX:
            if type(value) is str:
                key_field = self._key_fields.get(key)
                if key_field is not None and len(value) <= LONG_STRING:
                    try:  # at most 256 bytes: within MAX_STRING_BYTES, nothing to cut
                        data = value.encode()
                    except UnicodeEncodeError:  # lone surrogates: the generic path
                        data = b"\xff" * 126
                    n = len(data)
                    if n < 126 and len(key_field) < 124 - n:  # every length fits one byte
                        encoded = b"".join(
                            (_CUSTOM, _SMALL[len(key_field) + n + 4], key_field, _MAP_VALUE,
                             _SMALL[n + 2], _PV_STRING, _SMALL[n], data)
                        )  # fmt: skip
            elif type(value) is float and value and -_INF < value < _INF:  # finite, not 0
                double_head = self._double_heads.get(key)
                if double_head is not None and len(double_head) < CACHED_BYTES_MAX - 8:
                    encoded = double_head + _pack_double(value)
        if encoded is not None:  # remembered: within the bounds by construction
            if self._entries_held >= ENTRIES_HELD:
                for kept in self._entries.values():
                    kept.clear()
                self._entries_held = 0
            by_key: dict[Any, dict[object, bytes]] = self._entries[type(value)]  # key: a str
            by_value = by_key.get(key)
            if by_value is None:
                by_value = by_key[key] = {}
            by_value[value] = encoded
            self._entries_held += 1
            return encoded
        try:
            k = key if type(key) is str and key[:1] != AUTO_PROPERTY_PREFIX else check_key(key)
            if k is None:
                return None
            mapped = wire_value(k, value)
            return None if mapped is None else self.custom_entry(k, mapped[0], mapped[1])
        except PugValidationError:
            raise
        except Exception as exc:
            omit_failed(key, exc)
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
        """The custom_properties entry for (key, value), encoded and remembered."""
        encoded = self.new_entry(key, variant, value)
        by_key = self._entries.get(type(value))
        # Not kept: long strings (memory) and float zeros (0.0 == -0.0, encoded differently).
        if by_key is not None and not (
            (type(value) is str and len(value) > LONG_STRING)
            or (type(value) is float and not value)
            or len(encoded) > CACHED_BYTES_MAX  # a huge key
        ):
            if self._entries_held >= ENTRIES_HELD:
                for kept in self._entries.values():
                    kept.clear()
                self._entries_held = 0
            by_value = by_key.get(key)
            if by_value is None:
                by_value = by_key[key] = {}
            by_value[value] = encoded
            self._entries_held += 1
        return encoded

    def new_entry(self, key: str, variant: Variant, value: object) -> bytes:
        """`protobuf.entry(CUSTOM, key, variant, value)`, with what the key decides reused."""
        if variant is _DOUBLE:
            head = self._double_heads.get(key)
            if head is None:
                head = _remember(self._double_heads, key, pb.double_prefix(key), KEY_PARTS_HELD)
            return head + _pack_double(value)
        if variant is _STRING and type(value) is str:
            key_field = self._key_fields.get(key)
            if key_field is None:
                key_field = pb.field(_MAP_KEY, pb.utf8(key))
                _remember(self._key_fields, key, key_field, KEY_PARTS_HELD)
            data = pb.utf8(value, pb.MAX_STRING_BYTES)
            n = len(data)
            if n < 126 and len(key_field) < 124 - n:  # every length fits one byte
                return b"".join(
                    (_CUSTOM, _SMALL[len(key_field) + n + 4], key_field, _MAP_VALUE,
                     _SMALL[n + 2], _PV_STRING, _SMALL[n], data)
                )  # fmt: skip
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
        for heads in (self._custom_heads, self._typed_heads):
            for kind, by_id in heads.items():
                total += len(kind) + sum(len(h) for h in by_id.values())
        return total

    def cached_entries(self) -> int:
        """How many encodings the caches hold, all caches together."""
        held = len(self._double_heads) + len(self._key_fields) + len(self._frames)
        held += sum(len(by_value) for by in self._entries.values() for by_value in by.values())
        return held + self._heads_held


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
