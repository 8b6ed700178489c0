"""What FakePug holds and how it answers from it: the stored events, profiles and
deletions (`Store`), pagination and schema summaries of the read API; insights queries are
computed by `insights`, values and filters read by `values`.

`Store` has one method per RPC, named after it (`get_activity_feed`, `list_` for List:
PEP 8's trailing underscore for a builtin's name), taking a request already checked by the
server's rules (`server.py`) and returning the response. It holds no lock: `FakePug`
serializes calls. Where the real server's behaviour is not pinned down, the choices are
listed in `pug.testing.fake.server`'s docstring.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import pug.rules as rules
from pug._wire import protobuf as pb
from pug._wire.reader import Value, read_event
from pug.errors import error_for
from pug.proto.common.v1 import (
    EventFilter,
    EventNameMeta,
    GetFilterSchemaRequest,
    GetFilterSchemaResponse,
    PropertyKeyMeta,
    PropertySource,
    PropertyValueType,
)
from pug.proto.sdk.profiles.v1 import IdentifyRequest, IdentifyResponse
from pug.proto.shared.activity import v1 as activity_v1
from pug.proto.shared.insights import v1 as insights_v1
from pug.proto.shared.profiles import v1 as profiles_v1
from pug.testing.fake import insights
from pug.testing.fake.ingest import Arrival
from pug.testing.fake.values import (
    Deletion,
    PropertyLookup,
    StoredEvent,
    StoredProfile,
    as_text,
    event_lookup,
    event_matches,
    event_value_type,
    filter_matches,
    groups_match,
    in_time_range,
    plain_map,
    profile_value_type,
    property_at,
    to_struct,
)

PROJECT_ID = "fake-project"
# Page sizes are the fake's choice (the contract bounds them, it does not fix them).
LIST_PAGE_SIZE = 100  # profiles per ListResponse message
DEFAULT_PAGE_SIZE = 50  # feed, event explorer and segment pages when page_size is 0
# Property dicts made plain, kept for the events that share them: bounded in entries (each
# one event's properties, which the reader shares only for events of at most 4 KiB).
_PLAINS_MAX = 1024
# Events taken but not yet stored (`Store.settle`) at most, and their wire bytes: held as
# the fake's `Arrival`s, a few hundred bytes more each than once stored.
_PENDING_MAX = 50_000
_PENDING_MAX_BYTES = 16 << 20
# What a store holds at most by default (`FakePug(max_store_bytes=...)`; the dev server's
# `--max-store-mb`): past it, the oldest events are dropped (`Store.evict`).
DEFAULT_MAX_BYTES = 512 << 20
# What holding an event costs, from its wire bytes: as its bytes (with its duplicate-check
# key and place in arrival order), and once read into a StoredEvent (its dicts and strings).
# Measured with tracemalloc for 8-property events of 356 wire bytes, each with a new owner
# noted: 1 260 B and 3 290 B.
_KEPT_PER_WIRE_BYTE, _READ_PER_WIRE_BYTE, _EVENT_BYTES = 3, 9, 300
# A profile without traits (with its owner's entry until it is made), an alias, a deletion;
# traits at 4 bytes for each character of their repr (measured: 3.1 for string traits).
_PROFILE_BYTES, _ALIAS_BYTES, _DELETION_BYTES, _BYTES_PER_TRAIT_CHAR = 600, 250, 600, 4


def _kept_bytes(size: int) -> int:
    """What an event of `size` wire bytes holds, kept as its bytes."""
    return _KEPT_PER_WIRE_BYTE * size + _EVENT_BYTES


def _read_bytes(size: int) -> int:
    """What an event of `size` wire bytes holds, read into a StoredEvent."""
    return _READ_PER_WIRE_BYTE * size + _EVENT_BYTES


def _noted_bytes(owner: str) -> int:
    """What a profile without traits holds (or its owner, noted until it is made)."""
    return _PROFILE_BYTES + 2 * len(owner)


def _alias_bytes(alias: str, target: str) -> int:
    return _ALIAS_BYTES + 2 * len(alias) + 2 * len(target)


_NANOS = 1_000_000_000
_NANOS_PER_MINUTE = 60 * _NANOS
# The times a datetime holds, in nanoseconds from the epoch (what occur_time is clamped to).
_MIN_TIME = (
    (
        datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)
        - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    )
    // datetime.timedelta(microseconds=1)
    * 1000
)
_MAX_TIME = (
    (
        datetime.datetime.max.replace(tzinfo=datetime.UTC)
        - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    )
    // datetime.timedelta(microseconds=1)
    * 1000
)


# ---- pagination ---------------------------------------------------------------------------


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _page_offset(token: str | None) -> int:
    """The offset an opaque page token carries; invalid_argument for a token not ours."""
    if not token:
        return 0
    try:
        prefix, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(number) if prefix == "offset" else -1
    except ValueError:  # binascii.Error and UnicodeDecodeError included
        offset = -1
    if offset < 0:
        raise error_for("invalid_argument", f"page_token: invalid page token {token!r}")
    return offset


T = TypeVar("T")
logger = logging.getLogger("pug.testing")


def _page(items: Sequence[T], token: str | None, size: int | None) -> tuple[list[T], str]:
    """One page of `items` from the token's offset, and the next token ("" at the end)."""
    offset = _page_offset(token)
    size = size or DEFAULT_PAGE_SIZE
    end = offset + size
    return list(items[offset:end]), _page_token(end) if end < len(items) else ""


# ---- schema summaries ---------------------------------------------------------------------


def _kind_metas(events: Sequence[StoredEvent]) -> list[EventNameMeta]:
    counts: Counter[str] = Counter()
    last: dict[str, datetime.datetime] = {}
    for e in events:
        counts[e.kind] += 1
        last[e.kind] = max(last.get(e.kind, e.occur_time), e.occur_time)
    ranked = sorted(counts, key=lambda kind: (-counts[kind], kind))
    return [EventNameMeta(name=k, count=counts[k], last_seen_at=last[k]) for k in ranked]


def _key_metas(
    items: Iterable[tuple[Mapping[str, Any], datetime.datetime]],
    type_of: Callable[[object], PropertyValueType],
    allowed: set[PropertyValueType],
) -> list[PropertyKeyMeta]:
    """Each key seen: how often, when last, and the type of its latest value."""
    counts: Counter[str] = Counter()
    last: dict[str, datetime.datetime] = {}
    types: dict[str, PropertyValueType] = {}
    for props, seen_at in items:
        for key, value in props.items():
            counts[key] += 1
            if key not in last or seen_at >= last[key]:
                last[key], types[key] = seen_at, type_of(value)
    ranked = sorted(counts, key=lambda key: (-counts[key], key))
    return [
        PropertyKeyMeta(name=k, count=counts[k], last_seen_at=last[k], value_type=types[k])
        for k in ranked
        if not allowed or types[k] in allowed
    ]


def _ranked_texts(values: Iterable[object]) -> list[str]:
    """Distinct values as text, the most frequent first."""
    counts = Counter(as_text(v) for v in values if v is not None)
    return sorted(counts, key=lambda text: (-counts[text], text))


def _heatmap(events: Iterable[StoredEvent]) -> list[activity_v1.HeatmapDay]:
    counts = Counter(e.occur_time.date().isoformat() for e in events)
    return [activity_v1.HeatmapDay(date=day, count=counts[day]) for day in sorted(counts)]


# ---- the store ----------------------------------------------------------------------------


class Store:
    """Every event, profile, alias and deletion the fake holds, and the answer to each RPC."""

    def __init__(
        self, clock: Callable[[], datetime.datetime], max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_bytes < 1:
            raise ValueError("a store's byte bound must be positive")
        self.clock = clock
        self.max_bytes = max_bytes
        self._events: list[StoredEvent] = []
        self._arrived: list[tuple[int, bytes, str]] = []  # (seq, event's bytes, owner), unread
        self._seen: set[tuple[str, str, int]] = set()  # (event_id, kind, minute)
        self._seq = 0
        # Each stored event in arrival order: (seq, duplicate-check key, wire size; -1 once
        # erased): what `evict` drops first, and what it costs.
        self._order: deque[tuple[int, tuple[str, str, int], int]] = deque()
        # Bytes held, estimated: by the events (kept up to date), by the rest (profiles,
        # traits, aliases, deletions: counted high as they come, recounted by `evict`).
        self._events_bytes = 0
        self._other_bytes = 0
        self.evicted_events = 0  # dropped to stay within max_bytes
        # Batches wait at most this many wire bytes (held as Arrivals, ~3 times as many):
        # what waits adds a tenth to a small bound at most.
        self._pending_max_bytes = min(_PENDING_MAX_BYTES, max_bytes // 32)
        self._profiles: dict[str, StoredProfile] = {}  # by external id, in creation order
        # Batches taken since the store was last read, with the time each arrived.
        self._pending: list[tuple[datetime.datetime, list[Arrival]]] = []
        self._pending_events = 0
        self._pending_bytes = 0
        # Owners stored events brought, whose profiles are made when `profiles` is read
        # (with the time their first event arrived): a burst of new users is cheap.
        self._new_owners: dict[str, datetime.datetime] = {}
        self.aliases: dict[str, str] = {}  # merged anonymous id → identified external id
        self.deletions: dict[str, Deletion] = {}
        self._plains: dict[int, tuple[Mapping[str, Value], dict[str, Any]]] = {}
        # "xxxxxxxx-xxxx-4xxx-yxxx-": a random UUID's version and variant kept.
        self._profile_ids_prefix = str(uuid.uuid4())[:24]
        self._profile_ids = itertools.count()

    # ---- ingestion ---------------------------------------------------------------------

    def batch_create(self, events: list[Arrival], size: int) -> bytes:
        """Take a BatchCreate's events (`size` bytes on the wire), already checked
        (`FakePug.handle_batch`), with the time they arrived: they are stored when the
        store is next read, or once `_PENDING_MAX` events or `_PENDING_MAX_BYTES` (a
        32nd of the bound, if less) wait (`settle`), many batches at once."""
        self._pending.append((self.clock(), events))
        self._pending_events += len(events)
        self._pending_bytes += size
        if self._pending_events > _PENDING_MAX or self._pending_bytes > self._pending_max_bytes:
            self.settle()
        # The BatchCreateResponse's bytes, written here: betterproto2 took 30 µs a batch.
        return pb.accepted(len(events))

    def settle(self) -> None:
        """Store the batches taken since the last read, in arrival order: each event's
        duplicate check and its owner (by the aliases of its arrival: identify settles
        before it merges), a new owner noted with its batch's arrival time. A stored
        event's fields are read from its bytes when `events` is read, a new owner's
        profile made when `profiles` is."""
        if not self._pending:
            return
        pending, self._pending, self._pending_events = self._pending, [], 0
        self._pending_bytes = 0
        seen, aliases, profiles, new_owners = (
            self._seen,
            self.aliases,
            self._profiles,
            self._new_owners,
        )
        keep, place = self._arrived.append, self._order.append
        seq, wire, owners, noted = self._seq, 0, 0, 0
        for arrived_at, events in pending:
            # An Arrival's fields unpacked at once: this runs for every event that arrives.
            for event_id, kind, distinct_id, when, cookieless, raw, _ in events:
                # The minute of occur_time as stored (a datetime, clamped to its years).
                nanos = when.seconds * _NANOS + when.nanos
                if not _MIN_TIME <= nanos <= _MAX_TIME:
                    nanos = min(max(nanos, _MIN_TIME), _MAX_TIME)
                key = (event_id, kind, nanos // _NANOS_PER_MINUTE)
                if key in seen:
                    continue
                seen.add(key)
                owner = "" if cookieless else aliases.get(distinct_id, distinct_id)
                if owner and owner not in profiles and owner not in new_owners:
                    new_owners[owner] = arrived_at
                    noted += 1
                    owners += len(owner)
                seq += 1
                size = len(raw)
                keep((seq, raw, owner))
                place((seq, key, size))
                wire += size
        stored = seq - self._seq
        self._seq = seq
        # The sums of _kept_bytes and _noted_bytes over what was stored, taken at once.
        self._events_bytes += _KEPT_PER_WIRE_BYTE * wire + _EVENT_BYTES * stored
        self._other_bytes += 2 * owners + _PROFILE_BYTES * noted
        self._within_bound()

    def _within_bound(self) -> None:
        if self._events_bytes + self._other_bytes > self.max_bytes:
            self.evict()

    def evict(self) -> None:
        """Keep the store within `max_bytes`: once it holds more, the oldest events are
        dropped until it holds three quarters (a quarter free: not one eviction a batch),
        with their duplicate-check keys (an event sent again after its eviction is stored
        again), then the profiles they leave without an event, a trait or an alias. If
        profiles and aliases alone are over the bound, the oldest of them go too."""
        self._other_bytes = self._recount_other()
        target = self.max_bytes * 3 // 4
        if self._events_bytes + self._other_bytes <= target:
            return
        order, seen, events, arrived = self._order, self._seen, self._events, self._arrived
        read = kept = 0  # events dropped from the front of `_events`, of `_arrived`
        owners: set[str] = set()
        dropped_before = self.evicted_events
        while order and self._events_bytes + self._other_bytes > target:
            seq, key, size = order.popleft()
            seen.discard(key)
            if size < 0:  # erased already (`_erase` took its cost back)
                continue
            if read < len(events) and events[read].seq == seq:
                owners.add(events[read].owner)
                read += 1
                self._events_bytes -= _read_bytes(size)
            else:
                owners.add(arrived[kept][2])
                kept += 1
                self._events_bytes -= _kept_bytes(size)
            self.evicted_events += 1
        del events[:read], arrived[:kept]
        self._drop_profiles_left_empty(owners)
        if self._events_bytes + self._other_bytes > target:
            self._drop_oldest_profiles(target)
        if dropped_before == 0 and self.evicted_events:
            logger.warning(
                "the fake Pug's store is over its bound of %d MiB: the oldest events are "
                "dropped from now on (FakePug(max_store_bytes=...), pug devserver "
                "--max-store-mb)",
                self.max_bytes >> 20,
            )

    def _drop_profiles_left_empty(self, owners: set[str]) -> None:
        """Forget the profiles of `owners` that have no event left, no trait and no alias."""
        owners.discard("")
        if not owners:
            return
        owners -= {e.owner for e in self._events}
        owners -= {a[2] for a in self._arrived}
        owners -= set(self.aliases.values())
        for owner in owners:
            if self._new_owners.pop(owner, None) is not None:
                self._other_bytes -= _noted_bytes(owner)
            profile = self._profiles.get(owner)
            if profile is not None and not profile.properties:
                del self._profiles[owner]
                self._other_bytes -= self._profile_bytes(profile)

    def _drop_oldest_profiles(self, target: int) -> None:
        """Events are gone and profiles, aliases and deletions are still over `target`:
        the oldest deletions, then the oldest profiles with their aliases, are forgotten."""
        while self.deletions and self._events_bytes + self._other_bytes > target:
            del self.deletions[next(iter(self.deletions))]
            self._other_bytes -= _DELETION_BYTES
        self.profiles  # noqa: B018 (owners noted by settle become profiles: counted once)
        while self._profiles and self._events_bytes + self._other_bytes > target:
            external_id, profile = next(iter(self._profiles.items()))
            del self._profiles[external_id]
            self._other_bytes -= self._profile_bytes(profile)
            self.aliases = {k: v for k, v in self.aliases.items() if v != external_id}
        self._other_bytes = self._recount_other()

    def _recount_other(self) -> int:
        """What profiles (made or noted), traits, aliases and deletions hold, estimated."""
        noted = sum(map(_noted_bytes, self._new_owners))
        made = sum(map(self._profile_bytes, self._profiles.values()))
        aliases = sum(_alias_bytes(k, v) for k, v in self.aliases.items())
        return noted + made + aliases + _DELETION_BYTES * len(self.deletions)

    @staticmethod
    def _profile_bytes(profile: StoredProfile) -> int:
        traits = _BYTES_PER_TRAIT_CHAR * len(repr(profile.properties)) if profile.properties else 0
        return _noted_bytes(profile.external_id) + traits

    @property
    def profiles(self) -> dict[str, StoredProfile]:
        """Every profile by external id, in creation order."""
        self.settle()
        if self._new_owners:
            new, self._new_owners = self._new_owners, {}
            for owner, first_seen in new.items():
                if owner not in self._profiles:
                    self._profiles[owner] = StoredProfile(
                        self._profile_id(), owner, {}, first_seen, first_seen
                    )
        return self._profiles

    def _profile_id(self) -> str:
        """A new profile's id: a UUID (version 4), random to this store and counted in it
        (a burst of new users makes one each; uuid4() costs more than storing the event)."""
        return f"{self._profile_ids_prefix}{next(self._profile_ids):012x}"

    @property
    def events(self) -> list[StoredEvent]:
        """Every event stored, in arrival order (those arrived since the last read made
        `StoredEvent`s now: ingestion does not wait for them)."""
        self.settle()
        if self._arrived:
            arrived, self._arrived = self._arrived, []
            self._events.extend([self._stored(*a) for a in arrived])
            wire = sum([len(a[1]) for a in arrived])
            self._events_bytes += (_READ_PER_WIRE_BYTE - _KEPT_PER_WIRE_BYTE) * wire
            self._within_bound()
        return self._events

    @events.setter
    def events(self, events: list[StoredEvent]) -> None:
        self._arrived.clear()
        self._events = events

    def _stored(self, seq: int, raw: bytes, owner: str) -> StoredEvent:
        event = read_event(raw)
        assert event.occur_time is not None  # required: checked before
        return StoredEvent(
            seq=seq,
            event_id=event.event_id or "",
            kind=event.kind or "",
            distinct_id=event.distinct_id or "",
            session_id=event.session_id,
            occur_time=event.occur_time.to_datetime(),
            cookieless=bool(event.cookieless),
            auto=self._plain(event.auto_properties),
            custom=self._plain(event.custom_properties),
            owner=owner,
        )

    def _plain(self, props: Mapping[str, Value]) -> dict[str, Any]:
        """`plain_map`, made once for the property dicts events share (`read_batch` gives
        events with the same properties the same dict): stored events share the result,
        which nothing changes (reads copy it)."""
        seen = self._plains.get(id(props))
        if seen is not None and seen[0] is props:  # holding `props` keeps its id its own
            return seen[1]
        plain = plain_map(props)
        if len(self._plains) >= _PLAINS_MAX:
            self._plains.clear()
        self._plains[id(props)] = (props, plain)
        return plain

    def _owner(self, distinct_id: str) -> str:
        """The external id whose profile a distinct id's events belong to."""
        return self.aliases.get(distinct_id, distinct_id)

    def _profile_for(self, external_id: str) -> StoredProfile:
        """The profile of an external id, created on first sight."""
        profile = self.profiles.get(external_id)
        if profile is None:
            now = self.clock()
            profile = StoredProfile(self._profile_id(), external_id, {}, now, now)
            self.profiles[external_id] = profile
        return profile

    def identify(self, request: IdentifyRequest) -> IdentifyResponse:
        external_id = request.external_id or ""
        if not external_id:
            # Accepted by the API, then dropped by the server's worker (its message needs
            # a non-empty external_id): nothing changes.
            return IdentifyResponse()
        profile = self._profile_for(external_id)
        traits = request.traits.to_dict() if request.traits is not None else {}
        profile.properties.update(traits)
        profile.update_time = self.clock()
        anonymous_id = request.anonymous_id or ""
        if anonymous_id and anonymous_id != external_id:
            self._merge(anonymous_id, profile)
            self._other_bytes += _alias_bytes(anonymous_id, external_id)
        # Counted whole again (the traits may replace others): `evict` recounts.
        self._other_bytes += self._profile_bytes(profile)
        self._within_bound()
        return IdentifyResponse()

    def _merge(self, anonymous_id: str, into: StoredProfile) -> None:
        """Fold the anonymous profile into the identified one: its properties (the
        identified profile's win), its events, and the anonymous id itself."""
        anonymous = self.profiles.pop(anonymous_id, None)
        if anonymous is not None:
            into.properties = {**anonymous.properties, **into.properties}
            into.create_time = min(into.create_time, anonymous.create_time)
        for alias, target in self.aliases.items():
            if target == anonymous_id:
                self.aliases[alias] = into.external_id
        self.aliases[anonymous_id] = into.external_id
        for event in self._events:  # settled by `profiles` above
            if event.owner == anonymous_id:
                event.owner = into.external_id
        arrived = self._arrived  # not read yet, and not read for this: the owner is theirs
        for i, (seq, raw, owner) in enumerate(arrived):
            if owner == anonymous_id:
                arrived[i] = (seq, raw, into.external_id)

    # ---- profiles ----------------------------------------------------------------------

    def _events_of(self, owner: str) -> list[StoredEvent]:
        """One owner's events. Those not read yet are read for this and not kept read: the
        view of a profile after a burst of 100 000 events reads its own, not all of them."""
        self.settle()
        mine = [e for e in self._events if e.owner == owner]
        mine += [self._stored(*a) for a in self._arrived if a[2] == owner]
        return mine

    def profile_message(self, profile: StoredProfile) -> profiles_v1.Profile:
        events = self._events_of(profile.external_id)
        summary = profiles_v1.ProfileActivitySummary(
            total_events=len(events),
            pageviews=sum(1 for e in events if e.kind == "page_view"),
            sessions=len({e.session_id for e in events if e.session_id}),
        )
        if events:
            summary.first_seen = min(e.occur_time for e in events)
            summary.last_seen = max(e.occur_time for e in events)
        return profiles_v1.Profile(
            create_time=profile.create_time,
            external_id=profile.external_id,
            id=profile.id,
            properties=to_struct(profile.properties),
            project_id=PROJECT_ID,
            update_time=profile.update_time,
            activity=summary,
        )

    def _profile_by_id(self, profile_id: str) -> StoredProfile:
        for profile in self.profiles.values():
            if profile.id == profile_id:
                return profile
        raise error_for("not_found", f"profile {profile_id} not found")

    def get(self, request: profiles_v1.GetRequest) -> profiles_v1.GetResponse:
        profile = self._profile_by_id(request.id or "")
        return profiles_v1.GetResponse(profile=self.profile_message(profile))

    def get_by_external_id(
        self, request: profiles_v1.GetByExternalIdRequest
    ) -> profiles_v1.GetByExternalIdResponse:
        external_id = request.external_id or ""
        profile = self.profiles.get(external_id)
        if profile is None:
            raise error_for("not_found", f"profile with external id {external_id} not found")
        return profiles_v1.GetByExternalIdResponse(profile=self.profile_message(profile))

    def list_(self, request: profiles_v1.ListRequest) -> list[profiles_v1.ListResponse]:
        chosen = [
            p
            for p in self.profiles.values()
            if groups_match(
                request.filter_groups,
                request.filter_groups_operator,
                self._profile_lookup(p.external_id),
            )
        ]
        offset = _page_offset(request.page_token)
        pages = []
        for start in range(offset, max(len(chosen), offset + 1), LIST_PAGE_SIZE):
            end = start + LIST_PAGE_SIZE
            pages.append(
                profiles_v1.ListResponse(
                    profiles=[self.profile_message(p) for p in chosen[start:end]],
                    next_page_token=_page_token(end) if end < len(chosen) else "",
                )
            )
        return pages

    def delete(self, request: profiles_v1.DeleteRequest) -> profiles_v1.DeleteResponse:
        profile = self._profile_by_id(request.id or "")
        deletion = self._erase(profile.external_id)
        return profiles_v1.DeleteResponse(
            request_id=deletion.request_id,
            status=profiles_v1.ComplianceRequestStatus.COMPLETED,
        )

    def delete_data_subject(
        self, request: profiles_v1.DeleteDataSubjectRequest
    ) -> profiles_v1.DeleteDataSubjectResponse:
        if not request.external_id:
            # external_id is proto3 `optional`: sent as "", it is present and passes
            # `required` (protovalidate checks presence). Erasing "nobody" is refused by
            # the handler (an empty id would match cookieless data): a decision of the
            # fake, invalid_argument without violations.
            raise error_for("invalid_argument", "external_id: must not be empty")
        deletion = self._erase(request.external_id)
        return profiles_v1.DeleteDataSubjectResponse(
            request_id=deletion.request_id,
            status=profiles_v1.ComplianceRequestStatus.COMPLETED,
        )

    def _erase(self, external_id: str) -> Deletion:
        """Delete a profile, its events and its aliases at once (the server does it in the
        background: the request is COMPLETED when it is first read)."""
        requested_at = self.clock()
        profile = self.profiles.pop(external_id, None)
        self.settle()
        # Its events read and not read yet: neither is read for this (a burst of 100 000
        # events before the deletion stays unread).
        read = {e.seq for e in self._events if e.owner == external_id}
        unread = {a[0] for a in self._arrived if a[2] == external_id}
        erased = len(read) + len(unread)
        if erased:
            order = self._order
            for _ in range(len(order)):  # once round, in order (an index is O(n) in a deque)
                seq, key, size = order.popleft()
                if seq in read or seq in unread:  # its key stays until evicted: the event
                    cost = _read_bytes(size) if seq in read else _kept_bytes(size)
                    self._events_bytes -= cost  # is still a duplicate
                    size = -1
                order.append((seq, key, size))
            self._events = [e for e in self._events if e.seq not in read]
            self._arrived = [a for a in self._arrived if a[0] not in unread]
        self.aliases = {k: v for k, v in self.aliases.items() if v != external_id}
        deletion = Deletion(
            request_id=str(uuid.uuid4()),
            external_id=external_id,
            profile_id=profile.id if profile is not None else None,
            events=erased,
            requested_at=requested_at,
            completed_at=self.clock(),
        )
        self.deletions[deletion.request_id] = deletion
        self._other_bytes += _DELETION_BYTES
        self._within_bound()
        return deletion

    def get_deletion_request(
        self, request: profiles_v1.GetDeletionRequestRequest
    ) -> profiles_v1.GetDeletionRequestResponse:
        deletion = self.deletions.get(request.request_id or "")
        if deletion is None:
            raise error_for("not_found", f"deletion request {request.request_id} not found")
        return profiles_v1.GetDeletionRequestResponse(
            request_id=deletion.request_id,
            external_id=deletion.external_id,
            profile_id=deletion.profile_id,
            status=profiles_v1.ComplianceRequestStatus.COMPLETED,
            events_identified=deletion.events,
            requested_at=deletion.requested_at,
            completed_at=deletion.completed_at,
        )

    # ---- activity ----------------------------------------------------------------------

    def _select_events(
        self, request: activity_v1.GetActivityFeedRequest | activity_v1.GetEventExplorerRequest
    ) -> list[StoredEvent]:
        """The events a feed request asks for, newest first."""
        owner = self._owner(request.distinct_id) if request.distinct_id else None
        chosen = []
        for e in self.events:
            lookup = event_lookup(e, self.profiles)
            if (
                (owner is None or e.owner == owner)
                and (not request.session_id or e.session_id == request.session_id)
                and in_time_range(e.occur_time, request.time_range)
                and all(filter_matches(f, *lookup(f)) for f in request.property_filters)
                and (
                    not request.events
                    or any(event_matches(e, f, self.profiles) for f in request.events)
                )
            ):
                chosen.append(e)
        chosen.sort(key=lambda e: (e.occur_time, e.seq), reverse=True)
        return chosen

    def _event_page(
        self, request: activity_v1.GetActivityFeedRequest | activity_v1.GetEventExplorerRequest
    ) -> tuple[list[activity_v1.ActivityEvent], str]:
        page, token = _page(self._select_events(request), request.page_token, request.page_size)
        return [activity_event(e) for e in page], token

    def get_activity_feed(
        self, request: activity_v1.GetActivityFeedRequest
    ) -> activity_v1.GetActivityFeedResponse:
        events, token = self._event_page(request)
        return activity_v1.GetActivityFeedResponse(events=events, next_page_token=token)

    def get_event_explorer(
        self, request: activity_v1.GetEventExplorerRequest
    ) -> activity_v1.GetEventExplorerResponse:
        events, token = self._event_page(request)
        return activity_v1.GetEventExplorerResponse(events=events, next_page_token=token)

    def get_activity_heatmap(
        self, request: activity_v1.GetActivityHeatmapRequest
    ) -> activity_v1.GetActivityHeatmapResponse:
        # distinct_id must be sent; "" asks for everyone.
        owner = self._owner(request.distinct_id) if request.distinct_id else None
        events = [
            e
            for e in self.events
            if (owner is None or e.owner == owner)
            and in_time_range(e.occur_time, request.time_range)
        ]
        return activity_v1.GetActivityHeatmapResponse(days=_heatmap(events))

    def get_profile_stats(
        self, request: activity_v1.GetProfileStatsRequest
    ) -> activity_v1.GetProfileStatsResponse:
        owner = self._owner(request.distinct_id or "")
        profile = self.profiles.get(owner)
        if profile is None:
            raise error_for("not_found", f"profile {request.distinct_id} not found")
        events = self._events_of(owner)
        stats = activity_v1.ProfileStats(total_events=len(events))
        if events:
            stats.first_seen = min(e.occur_time for e in events)
            stats.last_seen = max(e.occur_time for e in events)
        return activity_v1.GetProfileStatsResponse(
            stats=stats, heatmap=_heatmap(events), properties=to_struct(profile.properties)
        )

    def get_filter_schema(self, request: GetFilterSchemaRequest) -> GetFilterSchemaResponse:
        events = [e for e in self.events if not request.event_kind or e.kind == request.event_kind]
        allowed = set(request.allowed_types)
        return GetFilterSchemaResponse(
            events=_kind_metas(events),
            auto_property_keys=_key_metas(
                ((e.auto, e.occur_time) for e in events), event_value_type, allowed
            ),
            custom_property_keys=_key_metas(
                ((e.custom, e.occur_time) for e in events), event_value_type, allowed
            ),
            profile_property_keys=_key_metas(
                ((p.properties, p.update_time) for p in self.profiles.values()),
                profile_value_type,
                allowed,
            ),
        )

    def get_property_values(
        self, request: activity_v1.GetPropertyValuesRequest | insights_v1.GetPropertyValuesRequest
    ) -> activity_v1.GetPropertyValuesResponse | insights_v1.GetPropertyValuesResponse:
        """The values of a property, the most frequent first: both services answer this
        RPC, each with its own response message."""
        key, source = request.property_key or "", request.source
        if source == PropertySource.PROFILE:
            values = _ranked_texts(
                property_at(p.properties, key)[1] for p in self.profiles.values()
            )
        else:
            auto = source == PropertySource.AUTO or (
                source == PropertySource.UNSPECIFIED and key.startswith(rules.AUTO_PROPERTY_PREFIX)
            )
            kind = request.event_kind
            events = [e for e in self.events if not kind or e.kind == kind]
            values = _ranked_texts(
                property_at(e.auto if auto else e.custom, key)[1] for e in events
            )
        if isinstance(request, insights_v1.GetPropertyValuesRequest):
            return insights_v1.GetPropertyValuesResponse(values=values)
        return activity_v1.GetPropertyValuesResponse(values=values)

    # ---- insights ----------------------------------------------------------------------

    def query(self, request: insights_v1.QueryRequest) -> insights_v1.QueryResponse:
        return insights.answer(request, self.events, self.profiles)

    def segment_users(
        self, request: insights_v1.SegmentUsersRequest
    ) -> insights_v1.SegmentUsersResponse:
        candidates = [
            e for e in self.events if e.owner and in_time_range(e.occur_time, request.time_range)
        ]
        users: set[str] | None = None
        for query in request.events:
            event_filter = query.event or EventFilter()
            did = {e.owner for e in candidates if event_matches(e, event_filter, self.profiles)}
            users = did if users is None else users & did
        chosen = sorted(
            user
            for user in users or set()
            if groups_match(
                request.filter_groups,
                request.filter_groups_operator,
                self._profile_lookup(user),
            )
        )
        page, token = _page(chosen, request.page_token, request.page_size)
        return insights_v1.SegmentUsersResponse(distinct_ids=page, next_page_token=token)

    def _profile_lookup(self, external_id: str) -> PropertyLookup:
        profile = self.profiles.get(external_id)
        props = profile.properties if profile is not None else {}
        return lambda f: property_at(props, f.property or "")


def activity_event(e: StoredEvent) -> activity_v1.ActivityEvent:
    return activity_v1.ActivityEvent(
        event_id=e.event_id,
        kind=e.kind,
        distinct_id=e.owner,
        occur_time=e.occur_time,
        session_id=e.session_id,
        auto_properties=to_struct(e.auto),
        custom_properties=to_struct(e.custom),
    )
