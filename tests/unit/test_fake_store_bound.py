"""FakePug's store holds at most `max_store_bytes`: past it the oldest events go (with their
duplicate-check keys), then profiles left without events, traits or aliases, and memory
stays within the bound however much arrives."""

from __future__ import annotations

import logging

import pytest
from pug import BatchConfig, Pug
from pug._wire.reader import event_spans, read_batch
from pug.testing import FakePug, InMemoryTransport
from pug.testing.fake.query import Store
from pug.transports.base import BATCH_CREATE

from tests.support.memory import deep_size

MiB = 1 << 20


def sdk_batches(n: int, first: int = 0, *, size: int = 500) -> list[bytes]:
    """What the SDK sends for n events of realistic traffic: a new user and order id each."""
    transport = InMemoryTransport()
    client = Pug(api_key="prv_bound", transport=transport, batch=BatchConfig(max_size=size))
    for i in range(first, first + n):
        client.track(f"user_{i}", "order.completed", {"order_id": f"ord_{i:08d}", "n": i})
    client.close()
    return [body for method, body in transport.requests if method == BATCH_CREATE]


def ids_in(fake: FakePug) -> list[int]:
    return [e.properties["n"] for e in fake.events()]


def test_what_the_store_holds_stays_within_its_bound_however_many_events_arrive() -> None:
    fake = FakePug(max_store_bytes=2 * MiB)
    largest = 0
    for i, body in enumerate(sdk_batches(20_000)):
        fake.handle_batch(body)
        if i % 8 == 0:
            fake.events()  # events read are held as StoredEvents, three times as large
            fake.profiles  # noqa: B018 (owners noted become profiles)
            largest = max(largest, deep_size(fake._store))
    kept = len(fake.events())
    largest = max(largest, deep_size(fake._store))
    assert fake.evicted_events + kept == 20_000
    assert fake.evicted_events > 15_000  # unbounded, they take over 40 MiB
    assert largest <= 2 * MiB


def test_the_oldest_events_go_first_and_an_evicted_event_sent_again_is_stored_again() -> None:
    fake = FakePug(max_store_bytes=4 * MiB)
    bodies = sdk_batches(3_000)
    for body in bodies:
        fake.handle_batch(body)
    kept = ids_in(fake)
    assert kept == list(range(3_000 - len(kept), 3_000))  # the newest, in arrival order
    assert 500 < len(kept) < 2_000 and fake.evicted_events == 3_000 - len(kept)
    # The oldest event kept and the one before it, sent again (same ids, same times): the
    # evicted one is stored again (its duplicate-check key went with it), the other is not.
    fake._store.evict()  # down to three quarters of the bound: room for two events
    kept = ids_in(fake)
    oldest = kept[0]
    fake.handle_batch(frames_of(bodies, oldest - 1, oldest))
    after = ids_in(fake)
    assert after == [*kept, oldest - 1]


def frames_of(bodies: list[bytes], *numbers: int) -> bytes:
    """A BatchCreateRequest of the events numbered `numbers` among `bodies`: each event's
    frame as the SDK wrote it (its tag and length, then the event)."""
    frames = {}
    for body in bodies:
        spans = event_spans(body)
        for i, event in enumerate(read_batch(body)):
            if event.custom_properties["n"] in numbers:
                frames[event.custom_properties["n"]] = body[
                    spans[i - 1][1] if i else 0 : spans[i][1]
                ]
    return b"".join(frames[n] for n in numbers)


def test_profiles_left_without_events_go_those_with_traits_or_aliases_stay() -> None:
    fake = FakePug(max_store_bytes=1 * MiB)
    client = Pug(api_key="prv_bound", transport=fake, batch=BatchConfig(max_size=500))
    client.track("user_0", "order.completed", {"n": 0})
    client.track("anon-1", "order.completed", {"n": 1})
    client.identify("user_0", {"plan": "pro"})
    client.identify("user_1", {}, anonymous_id="anon-1")
    client.track("user_2", "order.completed", {"n": 2})
    client.flush()
    for body in sdk_batches(3_000, first=10):
        fake.handle_batch(body)
    client.close()
    assert fake.evicted_events > 3
    profiles = fake.profiles
    assert profiles["user_0"] == {"plan": "pro"}  # a trait: kept
    assert "user_1" in profiles and fake.merged_ids("user_1") == ["anon-1"]  # an alias
    assert "user_2" not in profiles and "user_10" not in profiles  # nothing left of them
    assert "user_3009" in profiles  # a profile whose event is kept


def test_identify_alone_stays_within_the_bound() -> None:
    store_bound = 1 * MiB
    fake = FakePug(max_store_bytes=store_bound)
    client = Pug(api_key="prv_bound", transport=fake)
    for i in range(3_000):
        client.identify(f"user_{i}", {"plan": "pro", "bio": "x" * 200})
    client.close()
    profiles = fake.profiles
    assert 0 < len(profiles) < 3_000
    assert list(profiles) == [f"user_{i}" for i in range(3_000 - len(profiles), 3_000)]
    assert deep_size(fake._store) <= store_bound


def test_events_erased_then_evicted_add_up() -> None:
    fake = FakePug(max_store_bytes=1 * MiB)
    client = Pug(api_key="prv_bound", transport=fake, batch=BatchConfig(max_size=500))
    for i in range(200):
        client.track("user_erased", "order.completed", {"n": i})
    client.flush()
    client.profiles.delete_data_subject("user_erased")
    for body in sdk_batches(3_000, first=1_000):
        fake.handle_batch(body)
    client.close()
    kept = ids_in(fake)
    assert kept == list(range(4_000 - len(kept), 4_000))
    assert fake.evicted_events + len(kept) == 3_000  # the 200 erased are not counted


def test_an_erasure_after_a_burst_reads_none_of_it_and_what_is_left_adds_up() -> None:
    fake = FakePug(max_store_bytes=64 * MiB)
    client = Pug(api_key="prv_bound", transport=fake, batch=BatchConfig(max_size=500))
    client.track("user_erased", "order.completed", {"n": -1})
    client.flush()
    assert [e.distinct_id for e in fake.events()] == ["user_erased"]  # one read
    for i in range(3):  # and three not read yet, among a burst
        client.track("user_erased", "order.completed", {"n": -2 - i})
    client.flush()
    burst = sdk_batches(5_000)
    for body in burst:
        fake.handle_batch(body)
    client.profiles.delete_data_subject("user_erased")
    assert fake._store._events == [] and len(fake._store._arrived) == 5_000  # none read
    # What it counts is what it holds: the burst's events only, as a store of them alone.
    alone = FakePug(max_store_bytes=64 * MiB)
    for body in burst:
        alone.handle_batch(body)
    alone._store.settle()
    assert fake._store._events_bytes == alone._store._events_bytes
    assert ids_in(fake) == list(range(5_000))
    client.close()


def test_the_first_eviction_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakePug(max_store_bytes=1 * MiB)
    with caplog.at_level(logging.WARNING, logger="pug.testing"):
        for body in sdk_batches(6_000):
            fake.handle_batch(body)
        fake.events()
    assert fake.evicted_events > 0
    assert [r.getMessage() for r in caplog.records] == [
        "the fake Pug's store is over its bound of 1 MiB: the oldest events are dropped "
        "from now on (FakePug(max_store_bytes=...), pug devserver --max-store-mb)"
    ]


def test_a_bound_below_one_byte_is_refused() -> None:
    with pytest.raises(ValueError, match="a store's byte bound must be positive"):
        FakePug(max_store_bytes=0)


def test_reset_keeps_the_bound() -> None:
    fake = FakePug(max_store_bytes=1 * MiB)
    fake.reset()
    for body in sdk_batches(3_000):
        fake.handle_batch(body)
    assert fake.evicted_events > 0
    assert isinstance(fake._store, Store) and fake._store.max_bytes == 1 * MiB


def test_a_profile_read_after_a_burst_reads_its_own_events_only() -> None:
    fake = FakePug()
    bodies = sdk_batches(5_000)
    for body in bodies:
        fake.handle_batch(body)
    client = Pug(api_key="prv_bound", transport=fake)
    client.track("user_7", "order.completed", {"n": -1})
    client.flush()
    profile = fake.profile("user_7")
    assert profile.activity is not None and profile.activity.total_events == 2
    assert len(fake._store._arrived) == 5_001  # the others are still as they arrived
    assert [e.properties["n"] for e in fake.events(distinct_id="user_7")] == [7, -1]
    assert fake.profile("user_7") == profile
    client.close()


def test_identify_merging_after_a_burst_does_not_read_every_event() -> None:
    fake = FakePug()
    for body in sdk_batches(5_000):
        fake.handle_batch(body)
    client = Pug(api_key="prv_bound", transport=fake)
    client.track("anon-7", "order.completed", {"n": -1})
    client.identify("user_7", {"plan": "pro"}, anonymous_id="anon-7")
    client.flush()
    assert len(fake._store._arrived) == 5_001  # merged without reading them
    profile = fake.profile("user_7")
    assert profile.activity is not None and profile.activity.total_events == 2
    assert [e.properties["n"] for e in fake.events(distinct_id="anon-7")] == [-1]
    assert fake.merged_ids("user_7") == ["anon-7"]
    client.close()


def test_batches_never_read_wait_within_their_own_bound_then_are_stored() -> None:
    # Nothing reads (a burst at the dev server, whose idle work has not run): what waits
    # unstored is bounded too, in bytes (a 32nd of a small bound) and in events.
    fake = FakePug(max_store_bytes=32 * MiB)
    largest = 0
    for body in sdk_batches(10_000):
        fake.handle_batch(body)
        largest = max(largest, deep_size(fake._store._pending))
    assert fake._store._pending_bytes <= 32 * MiB // 32
    assert fake._store._seq > 0  # some were stored as they came: the bound was reached
    assert largest <= 32 * MiB // 32 * 4  # held as Arrivals: ~3 times their wire bytes
    assert [e.properties["n"] for e in fake.events()] == list(range(10_000))
