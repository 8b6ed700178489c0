"""Contexts (`pug.context`, `set_context`, `current_context`) and client-level properties:
what each `track()` form sends inside and outside a context, how contexts nest and merge,
and that one context never shows through to another thread or task.

Every test reads what the fake server received (`FakePug.events()`), or the raw bytes the
transport was sent where the question is the wire itself (no key sent twice).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pug
import pytest
from accounting import assert_stats_add_up
from pug import AsyncPug, Pug, PugValidationError, TrackedEvent
from pug._wire import protobuf as pb
from pug.events import Purchase
from pug.testing import FakePug, InMemoryTransport
from pug.testing.fake.assertions import ReceivedEvent
from pug.transports.base import BATCH_CREATE
from pug.wire_tags import BATCH_CREATE_REQUEST_EVENTS, EVENT_CUSTOM_PROPERTIES, MAP_ENTRY_KEY

NO_ID = (
    "invalid event dropped: event 'ctx.orphan' has no distinct id: pass one to track() or "
    "track it inside pug.context(distinct_id=...)"
)

S_1 = "01938c2a-0000-7000-8000-000000000001"
S_CALL = "01938c2a-0000-7000-8000-000000000002"
S_CTX = "01938c2a-0000-7000-8000-000000000003"
S_INNER = "01938c2a-0000-7000-8000-000000000004"
S_OUTER = "01938c2a-0000-7000-8000-000000000005"


def session(n: int) -> str:
    return f"01938c2a-0000-7000-9000-{n:012x}"


@pytest.fixture
def fake() -> FakePug:
    return FakePug()


@pytest.fixture
def client(fake: FakePug) -> Iterator[Pug]:
    made = Pug(api_key="prv_test", transport=fake)
    fake.attach(made)
    yield made
    made.close()


def sent(fake: FakePug) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.kind, e.distinct_id, e.properties) for e in fake.events()]


# ---- the forms of track() ------------------------------------------------------------


def test_every_form_of_track_inside_a_context(client: Pug, fake: FakePug) -> None:
    typed = Purchase(product_id="p1", amount=49.0, currency="USD")
    with pug.context(distinct_id="user_42"):
        client.track("ctx.a")
        client.track("ctx.b", {"n": 1})
        client.track(typed)
        client.track(typed, {"n": 2})
        client.track("user_7", "ctx.c")  # an explicit distinct id wins
        client.track("user_7", "ctx.d", {"n": 3})
        client.track("ctx.e", properties={"n": 4})
        client.track("ctx.f", distinct_id="user_8")
        client.track("ctx.g", {"n": 5}, distinct_id="user_9")
    assert sent(fake) == [
        ("ctx.a", "user_42", {}),
        ("ctx.b", "user_42", {"n": 1}),
        ("purchase", "user_42", {"productId": "p1", "amount": 49.0, "currency": "USD"}),
        ("purchase", "user_42", {"n": 2, "productId": "p1", "amount": 49.0, "currency": "USD"}),
        ("ctx.c", "user_7", {}),
        ("ctx.d", "user_7", {"n": 3}),
        ("ctx.e", "user_42", {"n": 4}),
        ("ctx.f", "user_8", {}),
        ("ctx.g", "user_9", {"n": 5}),
    ]


def test_the_old_forms_send_what_they_sent(client: Pug, fake: FakePug) -> None:
    client.track("user_1", "ctx.a")
    client.track("user_1", "ctx.b", {"n": 1})
    client.track("user_1", "ctx.c", properties={"n": 2}, session_id=S_1)
    client.bind("user_2").track("ctx.d", {"n": 3})
    assert sent(fake) == [
        ("ctx.a", "user_1", {}),
        ("ctx.b", "user_1", {"n": 1}),
        ("ctx.c", "user_1", {"n": 2}),
        ("ctx.d", "user_2", {"n": 3}),
    ]


def test_a_distinct_id_given_twice_is_a_type_error(client: Pug) -> None:
    with pytest.raises(TypeError, match="distinct id twice"):
        client.track("user_1", "ctx.a", distinct_id="user_2")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="properties twice"):
        client.track("ctx.a", {"n": 1}, properties={"n": 2})  # type: ignore[call-overload]


# ---- no distinct id ----------------------------------------------------------------------


def test_no_distinct_id_outside_a_context_is_logged_and_dropped(
    client: Pug, fake: FakePug, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        client.track("ctx.orphan", {"n": 1})
        with pug.context(properties={"job": "nightly"}):  # a context without an id
            client.track("ctx.orphan")
    assert [r.getMessage() for r in caplog.records] == [NO_ID, NO_ID]
    client.track("user_1", "ctx.kept")
    assert sent(fake) == [("ctx.kept", "user_1", {})]
    client.close()
    assert client.stats().dropped_invalid == 2
    assert client.stats().enqueued == 1
    assert_stats_add_up(client)


def test_no_distinct_id_raises_under_strict(fake: FakePug) -> None:
    with Pug(api_key="prv_test", transport=fake, strict=True) as strict:
        with pytest.raises(PugValidationError, match="has no distinct id") as raised:
            strict.track("ctx.orphan")
        assert raised.value.field == "distinct_id"
        assert strict.stats().dropped_invalid == 1


# ---- nesting, merging, precedence ------------------------------------------------------


def test_inner_contexts_win_and_properties_merge(fake: FakePug) -> None:
    with Pug(
        api_key="prv_test", transport=fake, properties={"service": "checkout", "tier": "client"}
    ) as client:
        fake.attach(client)
        with pug.context(distinct_id="outer", session_id=S_OUTER, properties={"tier": "outer"}):
            with pug.context(properties={"region": "eu", "tier": "inner"}):
                client.track("ctx.a", {"region": "us"})  # the event's own win
                with pug.context(distinct_id="inner", session_id=S_INNER):
                    client.track("ctx.b")
                client.track("ctx.c")
            client.track("ctx.d")
        client.track("nobody", "ctx.e")
        events = fake.events()
    assert [(e.kind, e.distinct_id, e.session_id, e.properties) for e in events] == [
        ("ctx.a", "outer", S_OUTER, {"region": "us", "service": "checkout", "tier": "inner"}),
        ("ctx.b", "inner", S_INNER, {"service": "checkout", "tier": "inner", "region": "eu"}),
        ("ctx.c", "outer", S_OUTER, {"service": "checkout", "tier": "inner", "region": "eu"}),
        ("ctx.d", "outer", S_OUTER, {"service": "checkout", "tier": "outer"}),
        ("ctx.e", "nobody", client.session_id, {"service": "checkout", "tier": "client"}),
    ]


def test_an_explicit_session_id_wins_over_the_context(client: Pug, fake: FakePug) -> None:
    with pug.context(distinct_id="u", session_id=S_CTX):
        client.track("ctx.a", session_id=S_CALL)
        client.track("ctx.b")
    assert [e.session_id for e in fake.events()] == [S_CALL, S_CTX]


def test_a_typed_event_keeps_its_own_fields(client: Pug, fake: FakePug) -> None:
    """Added properties never fill a field the typed event left unset, by either path."""
    with pug.context(distinct_id="u", properties={"quantity": 7, "currency": "EUR", "x": 1}):
        client.track(Purchase(product_id="p1", amount=1.0, currency="USD"))
        client.track(Purchase(product_id="p2", amount=2.0), {"y": 2})
        client.track("purchase", {"product_id": "p3", "amount": 3.0})
    assert sent(fake) == [
        ("purchase", "u", {"productId": "p1", "amount": 1.0, "currency": "USD", "x": 1}),
        ("purchase", "u", {"x": 1, "y": 2, "productId": "p2", "amount": 2.0}),
        ("purchase", "u", {"x": 1, "productId": "p3", "amount": 3.0}),
    ]


def custom_keys_on_the_wire(transport: InMemoryTransport) -> list[list[bytes]]:
    """Each event's custom_properties keys as sent, repeats kept (a decoder's map would
    keep only the last)."""
    custom, events_field = EVENT_CUSTOM_PROPERTIES[0] >> 3, BATCH_CREATE_REQUEST_EVENTS[0] >> 3
    key_field = MAP_ENTRY_KEY[0] >> 3
    out = []
    for method, body in transport.requests:
        assert method == BATCH_CREATE
        for number, event in pb.read_fields(body):
            assert number == events_field and isinstance(event, bytes)
            keys = []
            for field, entry in pb.read_fields(event):
                if field == custom:
                    assert isinstance(entry, bytes)
                    keys += [k for n, k in pb.read_fields(entry) if n == key_field]
            out.append(keys)
    return out  # type: ignore[return-value]


def test_no_key_is_sent_twice() -> None:
    transport = InMemoryTransport()
    with Pug(api_key="prv_test", transport=transport, properties={"a": "client", "b": 1}) as c:
        with pug.context(distinct_id="u", properties={"b": 2, "c": 3.5}):
            c.track("ctx.x")
            c.track("ctx.y", {"c": "mine", "d": True})
            c.track("ctx.z", {"a": 0}, session_id=S_1)  # the checked path
        c.flush()
    assert [sorted(keys) for keys in custom_keys_on_the_wire(transport)] == [
        [b"a", b"b", b"c"],
        [b"a", b"b", b"c", b"d"],
        [b"a", b"b", b"c"],
    ]


def test_before_send_sees_the_added_properties(fake: FakePug) -> None:
    seen: list[dict[str, Any]] = []

    def hook(event: TrackedEvent) -> TrackedEvent:
        seen.append(dict(event.properties))
        event.properties.pop("secret", None)
        return event

    with Pug(api_key="prv_test", transport=fake, before_send=hook, properties={"s": 1}) as c:
        fake.attach(c)
        with pug.context(distinct_id="u", properties={"secret": "x"}):
            c.track("ctx.a", {"n": 1})
        assert seen == [{"s": 1, "secret": "x", "n": 1}]
        assert sent(fake) == [("ctx.a", "u", {"s": 1, "n": 1})]


def test_properties_that_cannot_be_sent(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(PugValidationError, match=r"'\$lib' starts with '\$'"):
        pug.context(properties={"$lib": "x"})
    with pytest.raises(PugValidationError, match="must be a mapping"):
        pug.context(properties=["a"])  # type: ignore[arg-type]
    with pytest.raises(PugValidationError, match=r"'\$x' starts with '\$'"):
        Pug(api_key="prv_test", transport=InMemoryTransport(), properties={"$x": 1})
    with caplog.at_level(logging.WARNING, logger="pug"):
        kept = pug.context(properties={"ok": 1, "odd": object()})
    assert kept.properties is not None and sorted(kept.properties.plain) == ["ok"]
    assert len(caplog.records) == 1 and "property 'odd' left out" in caplog.records[0].getMessage()


def test_an_invalid_context_id_drops_the_event_with_its_reason(
    client: Pug, fake: FakePug, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        with pug.context(distinct_id=""):
            client.track("ctx.a")
        with pug.context(distinct_id="u", session_id="not-a-uuid"):
            client.track("ctx.b")
    assert [r.getMessage() for r in caplog.records] == [
        "invalid event dropped: distinct_id must be a non-empty string",
        "invalid event dropped: session_id must be a UUID string",
    ]
    assert fake.events() == []


# ---- set_context, current_context -----------------------------------------------------


def test_set_context_changes_the_innermost_context_in_place(client: Pug, fake: FakePug) -> None:
    with pug.context(properties={"outer": 1}):
        with pug.context(session_id=S_1, properties={"inner": 1}):
            client.track("anon-1", "ctx.before")
            pug.set_context(distinct_id="user_42", properties={"inner": 2, "plan": "pro"})
            client.track("ctx.after")
            view = pug.current_context()
        assert pug.current_context() == pug.ContextView(None, None, {"outer": 1})
    assert view == pug.ContextView("user_42", S_1, {"outer": 1, "inner": 2, "plan": "pro"})
    assert [(e.kind, e.distinct_id, e.properties) for e in fake.events()] == [
        ("ctx.before", "anon-1", {"outer": 1, "inner": 1}),
        ("ctx.after", "user_42", {"outer": 1, "inner": 2, "plan": "pro"}),
    ]


def test_set_context_reaches_a_nested_context_entered_before(client: Pug, fake: FakePug) -> None:
    """A task started in a request keeps seeing the request's context as it changes."""

    async def main() -> None:
        async with pug.context(distinct_id="anon"):
            started = asyncio.Event()
            login = asyncio.Event()

            async def background() -> None:
                with pug.context(properties={"task": True}):
                    started.set()
                    await login.wait()
                    client.track("ctx.background")

            task = asyncio.create_task(background())
            await started.wait()
            pug.set_context(distinct_id="user_42")
            login.set()
            await task

    asyncio.run(main())
    assert sent(fake) == [("ctx.background", "user_42", {"task": True})]


def test_set_context_outside_any_context_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pug"):
        pug.set_context(distinct_id="user_42")
    assert [r.getMessage() for r in caplog.records] == [
        "pug.set_context() outside any pug.context(): nothing was changed"
    ]
    assert pug.current_context() is None


def test_current_context_is_read_only() -> None:
    given = {"plan": "pro"}
    with pug.context(distinct_id="u", properties=given):
        given["plan"] = "free"  # the context copied what it was given
        view = pug.current_context()
        assert view is not None
        with pytest.raises(TypeError):
            view.properties["plan"] = "x"  # type: ignore[index]
        with pytest.raises(AttributeError):
            view.distinct_id = "other"  # type: ignore[misc]
        assert view == pug.ContextView("u", None, {"plan": "pro"})


# ---- decorator, async with ------------------------------------------------------------


def test_decorator_on_sync_and_async_functions(client: Pug, fake: FakePug) -> None:
    nightly = pug.context(distinct_id="job", properties={"job": "nightly"})

    @nightly
    def sync_job(n: int) -> int:
        client.track("ctx.sync", {"n": n})
        return n * 2

    @nightly
    async def async_job(n: int) -> int:
        await asyncio.sleep(0)
        client.track("ctx.async", {"n": n})
        return n * 3

    @pug.context(distinct_id="failing")
    def failing() -> None:
        client.track("ctx.failing")
        raise KeyError("boom")

    assert sync_job(1) == 2
    assert asyncio.run(async_job(2)) == 6
    with pytest.raises(KeyError):
        failing()
    assert pug.current_context() is None  # each call left its context
    assert sync_job.__name__ == "sync_job" and async_job.__name__ == "async_job"
    assert sent(fake) == [
        ("ctx.sync", "job", {"n": 1, "job": "nightly"}),
        ("ctx.async", "job", {"n": 2, "job": "nightly"}),
        ("ctx.failing", "failing", {}),
    ]


def test_async_with_and_async_client(fake: FakePug) -> None:
    async def main() -> None:
        async with AsyncPug(api_key="prv_test", transport=fake, properties={"c": 1}) as client:
            async with pug.context(distinct_id="u", properties={"x": 1}) as entered:
                assert isinstance(entered, pug.Context)
                await asyncio.sleep(0)
                client.track("ctx.a")
            await client.flush()

    asyncio.run(main())
    assert sent(fake) == [("ctx.a", "u", {"c": 1, "x": 1})]


# ---- where a context goes, and where it does not -----------------------------------------


def test_a_context_follows_await_tasks_to_thread_and_copied_contexts(
    client: Pug, fake: FakePug
) -> None:
    def track(where: str) -> None:
        client.track(f"ctx.{where}")

    async def main() -> None:
        with pug.context(distinct_id="user_42"):
            await asyncio.sleep(0)
            track("await")
            await asyncio.create_task(asyncio.to_thread(track, "task_to_thread"))
            await asyncio.gather(*(asyncio.to_thread(track, "to_thread") for _ in range(2)))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, contextvars.copy_context().run, track, "executor")
            thread = threading.Thread(
                target=contextvars.copy_context().run, args=(track, "copied_thread")
            )
            thread.start()
            thread.join()

    asyncio.run(main())
    places = ["await", "task_to_thread", "to_thread", "to_thread", "executor", "copied_thread"]
    assert sorted(sent(fake)) == sorted((f"ctx.{where}", "user_42", {}) for where in places)


def test_a_context_does_not_reach_a_thread_started_without_it(
    client: Pug, fake: FakePug, caplog: pytest.LogCaptureFixture
) -> None:
    """Python starts a thread (and `run_in_executor` runs a function) in an empty context:
    no distinct id there, so the event is refused rather than sent for someone."""

    async def main() -> None:
        with pug.context(distinct_id="user_42"):
            await asyncio.get_running_loop().run_in_executor(None, client.track, "ctx.orphan")
            thread = threading.Thread(target=client.track, args=("ctx.orphan",))
            thread.start()
            thread.join()

    with caplog.at_level(logging.WARNING, logger="pug"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records] == [NO_ID, NO_ID]
    assert fake.events() == []


def test_8_threads_each_see_only_their_own_user(client: Pug, fake: FakePug) -> None:
    """All 8 are inside their contexts at once (a barrier) before any tracks, and again
    between each event: a context kept anywhere shared would show another's id."""
    barrier = threading.Barrier(8)
    seen: list[tuple[int, pug.ContextView | None]] = []

    def worker(n: int) -> None:
        with pug.context(distinct_id=f"user_{n}", properties={"worker": n}):
            for i in range(20):
                barrier.wait(timeout=10)
                client.track("ctx.thread", {"i": i})
            barrier.wait(timeout=10)
            seen.append((n, pug.current_context()))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = fake.events()
    assert len(events) == 160
    assert all(e.distinct_id == f"user_{e.properties['worker']}" for e in events)
    expected = [(n, pug.ContextView(f"user_{n}", None, {"worker": n})) for n in range(8)]
    assert sorted(seen, key=lambda pair: pair[0]) == expected


def test_100_concurrent_tasks_each_see_only_their_own_user(fake: FakePug) -> None:
    """100 requests in flight at once on one loop: each enters its context, then every
    one waits until all have entered, and they track in turns."""

    async def main() -> list[ReceivedEvent]:
        async with AsyncPug(api_key="prv_test", transport=fake) as client:
            all_in = asyncio.Event()
            entered = 0

            async def request(n: int) -> None:
                nonlocal entered
                async with pug.context(distinct_id=f"user_{n}", session_id=session(n)):
                    entered += 1
                    if entered == 100:
                        all_in.set()
                    await all_in.wait()
                    for i in range(3):
                        client.track("ctx.request", {"n": n, "i": i})
                        await asyncio.sleep(0)
                    assert pug.current_context() == pug.ContextView(f"user_{n}", session(n), {})

            await asyncio.gather(*(request(n) for n in range(100)))
            assert pug.current_context() is None
            await client.flush()
            return fake.events()

    events = asyncio.run(main())
    assert len(events) == 300
    assert all(
        (e.distinct_id, e.session_id) == (f"user_{e.properties['n']}", session(e.properties["n"]))
        for e in events
    )


def test_one_context_object_entered_by_many_tasks_at_once(client: Pug, fake: FakePug) -> None:
    shared = pug.context(properties={"shared": True})

    async def main() -> None:
        async def request(n: int) -> None:
            async with pug.context(distinct_id=f"user_{n}"):
                async with shared:
                    await asyncio.sleep(0)
                    client.track("ctx.shared")
                client.track("ctx.after")  # shared left, the task's own context kept

        await asyncio.gather(*(request(n) for n in range(10)))

    asyncio.run(main())
    events = fake.events()
    assert sorted((e.kind, e.distinct_id, e.properties) for e in events) == sorted(
        [("ctx.shared", f"user_{n}", {"shared": True}) for n in range(10)]
        + [("ctx.after", f"user_{n}", {}) for n in range(10)]
    )


def test_stats_add_up_with_contexts(client: Pug) -> None:
    with pug.context(distinct_id="u", properties={"p": 1}):
        for n in range(50):
            client.track("ctx.n", {"n": n})
        client.track("ctx.bad", {"$bad": 1})
    client.track("ctx.orphan")
    client.close()
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.dropped_invalid) == (50, 50, 2)
    assert_stats_add_up(client)
