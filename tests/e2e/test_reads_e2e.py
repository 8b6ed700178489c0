"""End-to-end tests of the read API (`client.profiles`, `.activity`, `.insights`) against
independent servers, over Connect and gRPC.

The servers are those of tests/support/servers.py: `connectrpc` under uvicorn (Connect over
HTTP/1.1) and Google's `grpcio` (gRPC over h2c). They decode requests and encode the
responses a test queues with Google protobuf classes compiled from catalog/proto, so
what the SDK decodes was encoded by someone else, and what it sent is checked on an
independent decoding.

Nothing here sleeps to synchronize: sync reads return when the server has answered, and
the only timing is the server's scripted slowness and bounds on how long a failure takes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import gc
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from protoc_helpers import GoogleMessages
from pug import AsyncPug, Pug, PugError
from pug.errors import DeadlineExceededError, InvalidArgumentError, NotFoundError
from pug.proto.common.v1 import (
    EventFilter,
    FilterOperator,
    LogicalOperator,
    PropertyFilter,
    PropertySource,
    TimeRange,
)
from pug.proto.shared.insights.v1 import (
    AggregationType,
    EventQuery,
    Granularity,
    InsightQuerySpec,
    InsightType,
)
from pug.proto.shared.profiles.v1 import ComplianceRequestStatus, FilterGroup
from servers import (
    ACTIVITY_FEED,
    DELETE_DATA_SUBJECT,
    GET,
    GET_BY_EXTERNAL_ID,
    INSIGHTS_QUERY,
    LIST,
    BadRequest,
    FakePug,
)

API_KEY = "prv_test_key"
UTC = datetime.UTC
BOTH = ["connect", "grpc"]
# A timed-out read must fail about when its 0.3 s are up; this bounds "quickly" generously.
FAILS_WITHIN = 3.0
SLOW_SERVER = 0.3  # seconds a "slow" server takes to answer

# --- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a test reads from: the protocol (the `transport=` name), URL and `FakePug`."""

    protocol: str  # "connect" or "grpc"
    url: str
    fake: FakePug


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Target:
    """The server named by the test's parameter, with a clean record and script."""
    server: Any = request.getfixturevalue(f"{request.param}_server")
    server.fake.reset()
    return Target(request.param, server.url, server.fake)


MakeClient = Callable[..., Pug]


@pytest.fixture
def make_client(target: Target) -> Iterator[MakeClient]:
    """Sync clients for the target's server; all closed when the test ends."""
    made: list[Pug] = []

    def make(**options: Any) -> Pug:
        client = Pug(api_key=API_KEY, base_url=target.url, transport=target.protocol, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(1.0)


def async_client(target: Target, **options: Any) -> AsyncPug:
    """Made inside the running loop of the test (AsyncPug awaits on the caller's loop)."""
    return AsyncPug(api_key=API_KEY, base_url=target.url, transport=target.protocol, **options)


# --- what the server answers (Google protobuf, built here) -----------------------------------


def google_timestamp(pb2: GoogleMessages, when: datetime.datetime) -> Message:
    timestamp = pb2["google.protobuf.Timestamp"]()
    timestamp.FromDatetime(when)
    return timestamp


def google_struct(pb2: GoogleMessages, values: dict[str, Any]) -> Message:
    struct = pb2["google.protobuf.Struct"]()
    struct.update(values)
    return struct


def google_profile(pb2: GoogleMessages, profile_id: str, **fields: Any) -> Message:
    return pb2["shared.profiles.v1.Profile"](
        id=profile_id, external_id=f"user-{profile_id}", project_id="proj", **fields
    )


def list_pages(pb2: GoogleMessages) -> list[Message]:
    """Three stream messages of two profiles each: p0-0, p0-1, p1-0, ... p2-1."""
    response = pb2["shared.profiles.v1.ListResponse"]
    return [
        response(profiles=[google_profile(pb2, f"p{page}-{n}") for n in range(2)])
        for page in range(3)
    ]


def feed_page(pb2: GoogleMessages, page: int, next_token: str) -> Message:
    """Two events per page (`e<page>-<n>`), one second apart from 2024-05-06 10:00 UTC."""
    event = pb2["shared.activity.v1.ActivityEvent"]
    events = [
        event(
            event_id=f"e{page}-{n}",
            kind="page_viewed",
            distinct_id="u1",
            occur_time=google_timestamp(pb2, feed_time(page, n)),
            custom_properties=google_struct(pb2, {"path": f"/page/{page}/{n}"}),
        )
        for n in range(2)
    ]
    return pb2["shared.activity.v1.GetActivityFeedResponse"](
        events=events, next_page_token=next_token
    )


def feed_time(page: int, n: int) -> datetime.datetime:
    return datetime.datetime(2024, 5, 6, 10, 0, 2 * page + n, tzinfo=UTC)


def as_dict(message: Message | None) -> dict[str, Any]:
    """A request as the server decoded it, in proto JSON (enum names, camelCase)."""
    assert message is not None
    return json_format.MessageToDict(message)


# --- reads, by name (for tests that run the same way over several of them) ------------------


def read_get(client: Pug, **options: Any) -> Any:
    return client.profiles.get("p1", **options)


def read_list(client: Pug, **options: Any) -> Any:
    return list(client.profiles.list(**options))


def read_feed(client: Pug, **options: Any) -> Any:
    return list(client.activity.iter_feed(distinct_id="u1", **options))


SYNC_READS: dict[str, Callable[..., Any]] = {
    "get": read_get,
    "list": read_list,
    "iter_feed": read_feed,
}


async def aread_get(client: AsyncPug) -> Any:
    return await client.profiles.get("p1")


async def aread_list(client: AsyncPug) -> Any:
    return [profile async for profile in client.profiles.list()]


async def aread_feed(client: AsyncPug) -> Any:
    return [event async for event in client.activity.iter_feed(distinct_id="u1")]


ASYNC_READS = (aread_get, aread_list, aread_feed)


# === 1. unary reads decode what the server sent ==============================================


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_get_returns_the_profile_with_every_field_decoded(
    target: Target, make_client: MakeClient, google_pb2: GoogleMessages
) -> None:
    created = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    updated = datetime.datetime(2024, 6, 1, 0, 0, 0, tzinfo=UTC)
    activity = google_pb2["shared.profiles.v1.ProfileActivitySummary"](
        total_events=42, country="FR", last_seen=google_timestamp(google_pb2, updated)
    )
    profile = google_profile(
        google_pb2,
        "p1",
        create_time=google_timestamp(google_pb2, created),
        update_time=google_timestamp(google_pb2, updated),
        properties=google_struct(
            google_pb2,
            {
                "plan": "pro",
                "seats": 3,
                "trial": False,
                "tags": ["a", "b"],
                "address": {"city": "Paris"},
                "churned_at": None,
            },
        ),
        activity=activity,
    )
    target.fake.answer_next(GET, google_pb2["shared.profiles.v1.GetResponse"](profile=profile))

    got = make_client().profiles.get("p1")

    assert (got.id, got.external_id, got.project_id) == ("p1", "user-p1", "proj")
    # Aware UTC datetimes, to the microsecond.
    assert got.create_time == created
    assert got.update_time == updated
    assert got.create_time is not None and got.create_time.utcoffset() == datetime.timedelta(0)
    # A Struct keeps its JSON shape; its numbers are doubles.
    assert got.properties is not None
    assert got.properties.to_dict() == {
        "plan": "pro",
        "seats": 3.0,
        "trial": False,
        "tags": ["a", "b"],
        "address": {"city": "Paris"},
        "churned_at": None,
    }
    assert got.activity is not None
    assert (got.activity.total_events, got.activity.country) == (42, "FR")
    assert got.activity.last_seen == updated
    (call,) = target.fake.calls(GET)
    assert as_dict(call.request) == {"id": "p1"}
    assert call.headers["x-api-key"] == API_KEY


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_get_by_external_id_delete_data_subject_and_query(
    target: Target, make_client: MakeClient, google_pb2: GoogleMessages
) -> None:
    pb2 = google_pb2
    target.fake.answer_next(
        GET_BY_EXTERNAL_ID,
        pb2["shared.profiles.v1.GetByExternalIdResponse"](profile=google_profile(pb2, "p7")),
    )
    target.fake.answer_next(
        DELETE_DATA_SUBJECT,
        pb2["shared.profiles.v1.DeleteDataSubjectResponse"](
            request_id="del-1", status="COMPLIANCE_REQUEST_STATUS_PENDING"
        ),
    )
    point = pb2["shared.insights.v1.DataPoint"](
        time=google_timestamp(pb2, datetime.datetime(2024, 5, 1, tzinfo=UTC)), value=12.5
    )
    series = pb2["shared.insights.v1.TrendSeries"](
        event_kind="signed_up", breakdown={"plan": "pro"}, points=[point]
    )
    target.fake.answer_next(
        INSIGHTS_QUERY,
        pb2["shared.insights.v1.QueryResponse"](
            trends=pb2["shared.insights.v1.TrendsResult"](series=[series])
        ),
    )
    client = make_client()

    profile = client.profiles.get_by_external_id("user-p7")
    deletion = client.profiles.delete_data_subject("user-p7")
    result = client.insights.query(
        spec=InsightQuerySpec(
            insight_type=InsightType.TRENDS,
            events=[
                EventQuery(
                    event=EventFilter(kind="signed_up"), aggregation=AggregationType.UNIQUE_USERS
                )
            ],
        ),
        time_range=TimeRange(
            from_=datetime.datetime(2024, 5, 1, tzinfo=UTC),
            to=datetime.datetime(2024, 5, 8, tzinfo=UTC),
        ),
        granularity=Granularity.DAY,
        timezone="Europe/Paris",
    )

    assert (profile.id, profile.external_id) == ("p7", "user-p7")
    assert (deletion.request_id, deletion.status) == ("del-1", ComplianceRequestStatus.PENDING)
    assert result.trends is not None
    (got_series,) = result.trends.series
    assert (got_series.event_kind, got_series.breakdown) == ("signed_up", {"plan": "pro"})
    (got_point,) = got_series.points
    assert got_point.time == datetime.datetime(2024, 5, 1, tzinfo=UTC)
    assert got_point.value == 12.5

    # What the server decoded from each request.
    assert as_dict(target.fake.calls(GET_BY_EXTERNAL_ID)[0].request) == {"externalId": "user-p7"}
    assert as_dict(target.fake.calls(DELETE_DATA_SUBJECT)[0].request) == {"externalId": "user-p7"}
    assert as_dict(target.fake.calls(INSIGHTS_QUERY)[0].request) == {
        "spec": {
            "insightType": "INSIGHT_TYPE_TRENDS",
            "events": [
                {"event": {"kind": "signed_up"}, "aggregation": "AGGREGATION_TYPE_UNIQUE_USERS"}
            ],
        },
        "timeRange": {"from": "2024-05-01T00:00:00Z", "to": "2024-05-08T00:00:00Z"},
        "granularity": "GRANULARITY_DAY",
        "timezone": "Europe/Paris",
    }


# === 2. not found ============================================================================


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_not_found_raises_not_found_error_with_the_servers_message(
    target: Target, make_client: MakeClient
) -> None:
    target.fake.fail_next(1, "not_found", "profile p404 not found")

    with pytest.raises(NotFoundError) as raised:
        make_client().profiles.get("p404")

    assert raised.value.code == "not_found"
    assert raised.value.message == "profile p404 not found"
    assert raised.value.details == []
    (call,) = target.fake.calls(GET)
    assert as_dict(call.request) == {"id": "p404"}


# === 3. the List stream ======================================================================


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_list_yields_every_profile_of_every_stream_message_and_sends_the_filters(
    target: Target, make_client: MakeClient, google_pb2: GoogleMessages
) -> None:
    target.fake.list_pages = list_pages(google_pb2)
    pro_in_france = FilterGroup(
        filters=[
            PropertyFilter(
                property="plan",
                operator=FilterOperator.EQUALS,
                value="pro",
                source=PropertySource.PROFILE,
            ),
            PropertyFilter(property="country", operator=FilterOperator.IN, values=["FR", "BE"]),
        ],
        operator=LogicalOperator.AND,
    )
    recent = FilterGroup(
        filters=[PropertyFilter(property="last_seen", operator=FilterOperator.IS_SET)]
    )

    profiles = list(
        make_client().profiles.list(
            filter_groups=[pro_in_france, recent], filter_groups_operator=LogicalOperator.OR
        )
    )

    assert [p.id for p in profiles] == ["p0-0", "p0-1", "p1-0", "p1-1", "p2-0", "p2-1"]
    assert [p.external_id for p in profiles] == [f"user-{p.id}" for p in profiles]
    (call,) = target.fake.calls(LIST)
    assert as_dict(call.request) == {
        "filterGroups": [
            {
                "filters": [
                    {
                        "property": "plan",
                        "operator": "FILTER_OPERATOR_EQUALS",
                        "value": "pro",
                        "source": "PROPERTY_SOURCE_PROFILE",
                    },
                    {
                        "property": "country",
                        "operator": "FILTER_OPERATOR_IN",
                        "values": ["FR", "BE"],
                    },
                ],
                "operator": "LOGICAL_OPERATOR_AND",
            },
            {"filters": [{"property": "last_seen", "operator": "FILTER_OPERATOR_IS_SET"}]},
        ],
        "filterGroupsOperator": "LOGICAL_OPERATOR_OR",
    }


# === 4. invalid_argument with error details ==================================================


def bad_request() -> Message:
    """The google.rpc.BadRequest detail a server attaches to an invalid query."""
    detail = BadRequest()
    detail.field_violations.add(
        field="spec.events", description="a trends query needs at least one event"
    )
    return detail


def fail_query_with_details(target: Target) -> Message:
    """The next call fails with invalid_argument and a BadRequest detail (returned)."""
    detail = bad_request()
    target.fake.fail_next(
        1, "invalid_argument", "the query is invalid: see details", details=(detail,)
    )
    return detail


def connect_detail(detail: object) -> tuple[str, bytes]:
    """(type name, message bytes) of a detail as the SDK exposes it: the entry of the
    Connect error JSON, {"type": "google.rpc.BadRequest", "value": unpadded base64}."""
    assert isinstance(detail, dict)
    value: str = detail["value"]
    return detail["type"], base64.b64decode(value + "=" * (-len(value) % 4))


def query_trends(client: Pug) -> Any:
    return client.insights.query(spec=InsightQuerySpec(insight_type=InsightType.TRENDS))


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_invalid_argument_raises_invalid_argument_error_with_code_and_message(
    target: Target, make_client: MakeClient
) -> None:
    # The server attaches a BadRequest detail too; the next test checks how it is exposed.
    fail_query_with_details(target)

    with pytest.raises(InvalidArgumentError) as raised:
        query_trends(make_client())

    assert raised.value.code == "invalid_argument"
    assert raised.value.message == "the query is invalid: see details"
    (call,) = target.fake.calls(INSIGHTS_QUERY)
    assert call.outcome == "invalid_argument"


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_invalid_argument_exposes_the_error_details(
    target: Target, make_client: MakeClient
) -> None:
    # Connect sends details in the error JSON and the SDK passes that list through
    # unchanged. gRPC sends them as a google.rpc.Status in the grpc-status-details-bin
    # trailer; the SDK should expose them in the same shape, whatever the transport.
    sent = fail_query_with_details(target)

    with pytest.raises(InvalidArgumentError) as raised:
        query_trends(make_client())

    assert len(raised.value.details) == 1
    type_name, value = connect_detail(raised.value.details[0])
    assert type_name == "google.rpc.BadRequest"
    assert BadRequest.FromString(value) == sent


# === 5. timeouts =============================================================================


@pytest.mark.parametrize("read", ["get", "list"])
@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_per_call_timeout_overrides_the_clients_and_fails_quickly(
    target: Target, make_client: MakeClient, google_pb2: GoogleMessages, read: str
) -> None:
    target.fake.stall_next(1)
    get_response = google_pb2["shared.profiles.v1.GetResponse"]
    target.fake.answer_next(GET, get_response(profile=google_profile(google_pb2, "p1")))
    client = make_client(timeout=5.0)

    started = time.monotonic()
    with pytest.raises(DeadlineExceededError) as raised:
        SYNC_READS[read](client, timeout=0.3)
    took = time.monotonic() - started

    assert raised.value.code == "deadline_exceeded"
    assert took < FAILS_WITHIN  # the 0.3 s of the call, not the client's 5 s
    stalled, *_ = target.fake.calls()
    assert stalled.outcome == "stall"
    assert stalled.timeout is not None and 0 < stalled.timeout <= 0.3

    # Without a per-call timeout the client's own applies again (and reads succeed).
    SYNC_READS[read](client)
    _, answered = target.fake.calls()
    assert answered.outcome == "ok"
    assert answered.timeout is not None and 1.0 < answered.timeout <= 5.0


# === 6. auto-pagination ======================================================================


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_iter_feed_follows_next_page_token_to_the_last_page(
    target: Target, make_client: MakeClient, google_pb2: GoogleMessages
) -> None:
    target.fake.answer_next(
        ACTIVITY_FEED,
        feed_page(google_pb2, 0, next_token="t1"),
        feed_page(google_pb2, 1, next_token="t2"),
        feed_page(google_pb2, 2, next_token=""),  # the last page
    )

    events = list(make_client().activity.iter_feed(distinct_id="u1", page_size=2))

    assert [e.event_id for e in events] == ["e0-0", "e0-1", "e1-0", "e1-1", "e2-0", "e2-1"]
    assert [e.occur_time for e in events] == [feed_time(p, n) for p in range(3) for n in range(2)]
    assert events[3].custom_properties is not None
    assert events[3].custom_properties.to_dict() == {"path": "/page/1/1"}
    requests = [call.request for call in target.fake.calls(ACTIVITY_FEED)]
    assert [r.page_token for r in requests] == ["", "t1", "t2"]  # type: ignore[union-attr]
    # Every page asks with the same filters; the first sends no token at all (not "").
    assert [as_dict(r) for r in requests] == [
        {"distinctId": "u1", "pageSize": 2},
        {"distinctId": "u1", "pageSize": 2, "pageToken": "t1"},
        {"distinctId": "u1", "pageSize": 2, "pageToken": "t2"},
    ]


# === 7. AsyncPug does not block the caller's loop ============================================


class Ticker:
    """A task of the caller's loop that counts its turns: a blocked loop stops counting."""

    def __init__(self) -> None:
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.ticks += 1
            await asyncio.sleep(0.01)

    async def ticks_during(self, read: Callable[[], Any]) -> tuple[Any, int]:
        """The read's result and how often the ticker ran while it was awaited."""
        before = self.ticks
        result = await read()
        return result, self.ticks - before

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_async_reads_of_a_slow_server_leave_the_loop_running(
    target: Target, google_pb2: GoogleMessages
) -> None:
    target.fake.delay_next(2, SLOW_SERVER)
    target.fake.answer_next(
        GET, google_pb2["shared.profiles.v1.GetResponse"](profile=google_profile(google_pb2, "p1"))
    )
    target.fake.list_pages = list_pages(google_pb2)

    async def main() -> tuple[Any, int, list[Any], int]:
        ticker = Ticker()
        async with async_client(target) as client:
            profile, get_ticks = await ticker.ticks_during(lambda: client.profiles.get("p1"))
            profiles, list_ticks = await ticker.ticks_during(
                lambda: collect(client.profiles.list())
            )
        await ticker.stop()
        return profile, get_ticks, profiles, list_ticks

    profile, get_ticks, profiles, list_ticks = asyncio.run(main())

    assert profile.external_id == "user-p1"
    assert [p.id for p in profiles] == ["p0-0", "p0-1", "p1-0", "p1-1", "p2-0", "p2-1"]
    # ~30 turns of 10 ms fit in each 0.3 s wait; a blocked loop would manage at most one.
    assert get_ticks >= 5
    assert list_ticks >= 5
    assert [c.outcome for c in target.fake.calls()] == ["ok", "ok"]


# === 8. reads after close ====================================================================


def error_of(read: Callable[[Pug], Any], client: Pug) -> PugError:
    with pytest.raises(PugError) as raised:
        read(client)
    return raised.value


# The coroutines these reads leave behind are the bug of the test after this one.
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_reads_after_close_raise_failed_precondition(
    target: Target, make_client: MakeClient
) -> None:
    client = make_client()
    client.close()

    codes = {name: error_of(read, client).code for name, read in SYNC_READS.items()}
    assert codes == dict.fromkeys(SYNC_READS, "failed_precondition")

    async def main() -> list[str]:
        client = async_client(target)
        await client.close()
        codes = []
        for read in ASYNC_READS:
            try:
                await read(client)
            except PugError as error:
                codes.append(error.code)
        return codes

    assert asyncio.run(main()) == ["failed_precondition"] * len(ASYNC_READS)
    assert target.fake.calls() == []  # refused in the client, never sent


def unawaited_coroutines(run_reads: Callable[[], None]) -> list[str]:
    """The "coroutine ... was never awaited" warnings raised while `run_reads` runs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_reads()
        gc.collect()  # a coroutine warns when it is collected
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, RuntimeWarning) and "never awaited" in str(w.message)
    ]


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_reads_after_close_leave_no_unawaited_coroutine(
    target: Target, make_client: MakeClient
) -> None:
    client = make_client()
    client.close()

    def sync_reads() -> None:
        for read in SYNC_READS.values():
            with contextlib.suppress(PugError):
                read(client)

    def async_reads() -> None:
        async def main() -> None:
            client = async_client(target)
            await client.close()
            for read in ASYNC_READS:
                with contextlib.suppress(PugError):
                    await read(client)

        asyncio.run(main())

    assert unawaited_coroutines(sync_reads) + unawaited_coroutines(async_reads) == []
