"""The read API facade: every read RPC is reachable, sync and async, typed."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pug.resources
import pytest
from google.protobuf import descriptor_pb2
from pug import AsyncPug, NotFoundError, Pug
from pug.proto.shared.activity.v1 import ActivityEvent, GetActivityFeedResponse
from pug.proto.shared.profiles.v1 import GetResponse, ListResponse, Profile
from pug.testing import InMemoryTransport

READ_PACKAGES = ("shared.profiles.v1", "shared.activity.v1", "shared.insights.v1")
RESOURCES = {
    "shared.profiles.v1.ProfilesService": "profiles",
    "shared.activity.v1.ActivityService": "activity",
    "shared.insights.v1.InsightsService": "insights",
}


def read_rpcs(descriptors: descriptor_pb2.FileDescriptorSet) -> list[tuple[str, str, bool]]:
    """(service, method, server_streaming) for every RPC of the read services."""
    return [
        (f"{f.package}.{s.name}", m.name, m.server_streaming)
        for f in descriptors.file
        if f.package in READ_PACKAGES
        for s in f.service
        for m in s.method
    ]


def test_every_read_rpc_has_a_facade_method_on_both_clients(
    proto_descriptor_set: descriptor_pb2.FileDescriptorSet,
) -> None:
    rpcs = read_rpcs(proto_descriptor_set)
    assert len(rpcs) == 16
    sources = {
        cls: inspect.getsource(cls)
        for cls in (getattr(pug.resources, n) for n in pug.resources.__all__)
    }
    for service, method, streaming in rpcs:
        path = f'"{service}/{method}"'
        resource = RESOURCES[service].capitalize()
        for cls_name in (resource, "Async" + resource):
            cls = getattr(pug.resources, cls_name)
            calling = [
                name
                for name, fn in inspect.getmembers(cls, inspect.isfunction)
                if path in inspect.getsource(fn)
            ]
            assert calling, f"{cls_name} has no method calling {service}/{method}"
            assert path in sources[cls]
            for name in calling:
                fn = getattr(cls, name)
                if streaming:
                    want = (
                        inspect.isasyncgenfunction
                        if cls_name.startswith("Async")
                        else (inspect.isgeneratorfunction)
                    )
                    assert want(fn), f"{cls_name}.{name} should iterate the stream"
                elif cls_name.startswith("Async"):
                    assert inspect.iscoroutinefunction(fn), f"{cls_name}.{name} is not async"
                assert fn.__doc__ and "Returns" in fn.__doc__ and "Raises" in fn.__doc__


def test_short_names_users_expect() -> None:
    expected = {
        "Profiles": {"get", "get_by_external_id", "list", "delete", "delete_data_subject",
                     "get_deletion_request"},
        "Activity": {"feed", "event_explorer", "heatmap", "profile_stats", "filter_schema",
                     "property_values", "iter_feed", "iter_event_explorer"},
        "Insights": {"query", "segment_users", "filter_schema", "property_values",
                     "iter_segment_users"},
    }  # fmt: skip
    for name, methods in expected.items():
        for cls in (getattr(pug.resources, name), getattr(pug.resources, "Async" + name)):
            public = {m for m in vars(cls) if not m.startswith("_")}
            assert public == methods, cls.__name__


def profile_server() -> InMemoryTransport:
    def answer(method: str, body: bytes) -> bytes:
        if method.endswith("/GetActivityFeed"):
            from pug.proto.shared.activity.v1 import GetActivityFeedRequest

            token = GetActivityFeedRequest.parse(body).page_token or ""
            page = int(token or 0)
            events = [ActivityEvent(event_id=f"e{page}{i}") for i in range(2)]
            next_token = str(page + 1) if page < 2 else ""
            return bytes(GetActivityFeedResponse(events=events, next_page_token=next_token))
        return bytes(GetResponse(profile=Profile(id="p1", external_id="user_1")))

    def pages(method: str, body: bytes) -> list[bytes]:
        return [
            bytes(ListResponse(profiles=[Profile(id=f"p{page}{i}") for i in range(2)]))
            for page in range(3)
        ]

    return InMemoryTransport(handler=answer, stream_handler=pages)


def test_sync_reads_unwrap_iterate_and_paginate() -> None:
    with Pug(api_key="prv_test", transport=profile_server()) as client:
        assert client.profiles.get("p1") == Profile(id="p1", external_id="user_1")
        assert [p.id for p in client.profiles.list()] == ["p00", "p01", "p10", "p11", "p20", "p21"]
        assert [e.event_id for e in client.activity.iter_feed(distinct_id="user_1")] == [
            "e00", "e01", "e10", "e11", "e20", "e21"
        ]  # fmt: skip


def test_read_errors_are_typed() -> None:
    transport = profile_server()
    transport.fail("not_found", message="profile p9 not found")
    with (
        Pug(api_key="prv_test", transport=transport) as client,
        pytest.raises(NotFoundError) as info,
    ):
        client.profiles.get("p9")
    assert info.value.code == "not_found"
    assert info.value.message == "profile p9 not found"


def test_async_reads_do_not_block_the_loop() -> None:
    transport = profile_server()
    transport.latency = 0.2  # each read takes 200 ms on the worker loop

    async def main() -> tuple[Profile, list[str], int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        async with AsyncPug(api_key="prv_test", transport=transport) as client:
            profile = await client.profiles.get("p1")
            ids = [p.id async for p in client.profiles.list()]
        done.set()
        await task
        return profile, ids, ticks

    profile, ids, ticks = asyncio.run(main())
    assert profile.external_id == "user_1"
    assert ids == ["p00", "p01", "p10", "p11", "p20", "p21"]
    assert ticks >= 10  # the caller's loop kept running during ~400 ms of reads


def test_sample_program_calling_each_resource_passes_mypy_strict(
    tmp_path: Path, mypy_cache_dir: Path
) -> None:
    program = tmp_path / "reads.py"
    program.write_text(
        textwrap.dedent(
            """
            import datetime

            from pug import AsyncPug, Pug
            from pug.proto.common.v1 import TimeRange
            from pug.proto.shared.insights.v1 import InsightQuerySpec, InsightType
            from pug.proto.shared.profiles.v1 import Profile


            def report(client: Pug) -> list[str]:
                profile: Profile = client.profiles.get("p1")
                names = [p.external_id or "" for p in client.profiles.list()]
                now = datetime.datetime.now(datetime.UTC)
                week = TimeRange(from_=now - datetime.timedelta(days=7), to=now)
                feed = client.activity.feed(distinct_id="user_1", time_range=week, page_size=50)
                events = [e.kind or "" for e in client.activity.iter_feed(distinct_id="user_1")]
                spec = InsightQuerySpec(insight_type=InsightType.TRENDS)
                result = client.insights.query(spec=spec, time_range=week)
                users = list(client.insights.iter_segment_users(time_range=week))
                return [profile.id or "", *names, *events, str(feed), str(result), *users]


            async def report_async(client: AsyncPug) -> int:
                profile = await client.profiles.get_by_external_id("user_1")
                count = 0
                async for _ in client.profiles.list():
                    count += 1
                deletion = await client.profiles.delete_data_subject("user_1")
                stats = await client.activity.profile_stats(distinct_id="user_1")
                return count + len(profile.id or "") + len(str(deletion)) + len(str(stats))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", mypy_cache_dir, program],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
