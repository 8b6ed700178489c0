"""FakePug computes every insight type of InsightsService.Query from the events it received
through a real `Pug` client: trends with breakdowns, segmentation, session metrics,
funnels (with conversion windows and step timing), retention cohorts, user flows and top-k
rankings, with their time zones, granularities, empty ranges and `$others` buckets."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from fake_clients import client_over, new_fake
from pug import InvalidArgumentError, Pug
from pug.proto.common.v1 import EventFilter, PropertyValue, TimeRange
from pug.proto.sdk.events.v1 import BatchCreateRequest, Event
from pug.proto.shared.insights.v1 import (
    AggregationType,
    Breakdown,
    EventQuery,
    Granularity,
    InsightQuerySpec,
    InsightType,
    QueryResponse,
    SessionMetric,
    SessionQuery,
    TopKQuery,
    TopKQueryDimension,
    UserFlowQuery,
    UserFlowQueryNodeKind,
)
from pug.testing import FakePug
from pug.transports.base import BATCH_CREATE

UTC = datetime.UTC
MIDNIGHT = datetime.datetime(2024, 5, 6, tzinfo=UTC)  # a Monday
T0 = MIDNIGHT + datetime.timedelta(hours=12)
Agg = AggregationType


fake = pytest.fixture(new_fake, name="fake")
client = pytest.fixture(client_over, name="client")


def at(days: float = 0, minutes: float = 0, base: datetime.datetime = T0) -> datetime.datetime:
    return base + datetime.timedelta(days=days, minutes=minutes)


def days(first: int, last: int) -> TimeRange:
    """From midnight of day `first` to midnight of day `last` (UTC)."""
    return TimeRange(from_=at(first, base=MIDNIGHT), to=at(last, base=MIDNIGHT))


def of(kind: str, aggregation: AggregationType | None = None, prop: str = "") -> EventQuery:
    return EventQuery(
        event=EventFilter(kind=kind), aggregation=aggregation, aggregation_property=prop or None
    )


def ask(
    client: Pug,
    insight_type: InsightType,
    *events: EventQuery,
    time_range: TimeRange | None = None,
    granularity: Granularity = Granularity.DAY,
    timezone: str | None = None,
    **spec: Any,
) -> QueryResponse:
    client.flush()
    return client.insights.query(
        spec=InsightQuerySpec(insight_type=insight_type, events=list(events), **spec),
        time_range=time_range or days(0, 2),
        granularity=granularity,
        timezone=timezone,
    )


def points(series: Any) -> list[float | None]:
    return [p.value for p in series.points]


# ---- trends with breakdowns ---------------------------------------------------------------


@pytest.fixture
def views(client: Pug) -> Pug:
    """Page views over two days: "/" 4 times, "/pricing" twice, "/docs" and no path once."""
    for minute, (user, path, day) in enumerate([
        ("u1", "/", 0), ("u1", "/", 0), ("u1", "/", 0), ("u2", "/", 1),
        ("u1", "/pricing", 0), ("u2", "/pricing", 0), ("u3", "/docs", 1), ("u3", None, 0),
    ]):  # fmt: skip
        props = {"path": path} if path else {}
        client.track(user, "page_view", props, timestamp=at(day, minute))
    return client


def _series(response: QueryResponse) -> list[tuple[str, dict[str, str], list[float | None]]]:
    assert response.trends is not None
    return [(s.event_kind, dict(s.breakdown), points(s)) for s in response.trends.series]


def test_trends_break_down_by_a_property_heaviest_first(views: Pug) -> None:
    by_path = [Breakdown(property="path")]
    answer = ask(views, InsightType.TRENDS, of("page_view"), breakdowns=by_path)
    assert _series(answer) == [
        ("page_view", {"path": "/"}, [3.0, 1.0]),
        ("page_view", {"path": "/pricing"}, [2.0, 0.0]),
        ("page_view", {"path": ""}, [1.0, 0.0]),  # ties: by value, "" first
        ("page_view", {"path": "/docs"}, [0.0, 1.0]),
    ]
    top_two = ask(views, InsightType.TRENDS, of("page_view"), breakdowns=by_path, breakdown_limit=2)
    assert _series(top_two)[2] == ("page_view", {"path": "$others"}, [1.0, 1.0])
    assert len(_series(top_two)) == 3
    users = ask(
        views,
        InsightType.TRENDS,
        of("page_view", Agg.UNIQUE_USERS),
        breakdowns=by_path,
        breakdown_limit=1,
    )
    # $others is computed over its events, not summed: u1, u2 and u3 on day 0.
    assert _series(users) == [
        ("page_view", {"path": "/"}, [1.0, 1.0]),
        ("page_view", {"path": "$others"}, [3.0, 1.0]),
    ]


def test_trends_break_down_by_several_properties(views: Pug) -> None:
    answer = ask(
        views,
        InsightType.TRENDS,
        of("page_view"),
        of("purchase"),
        breakdowns=[Breakdown(property="path"), Breakdown(property="$lib")],
        breakdown_limit=1,
    )
    assert _series(answer) == [
        ("page_view", {"path": "/", "$lib": "pug-python"}, [3.0, 1.0]),
        ("page_view", {"path": "$others", "$lib": "$others"}, [3.0, 1.0]),
    ]  # no purchase: no series to break down


def test_trend_buckets_follow_the_timezone(client: Pug) -> None:
    for when in ["2024-05-06T14:59", "2024-05-06T15:00", "2024-05-07T14:59:59", "2024-05-07T15:00"]:
        client.track("u1", "login", timestamp=datetime.datetime.fromisoformat(when + "+00:00"))
    tokyo_days = TimeRange(
        from_=datetime.datetime(2024, 5, 6, 15, tzinfo=UTC),
        to=datetime.datetime(2024, 5, 8, 15, tzinfo=UTC),
    )  # May 7 and 8, Asia/Tokyo (UTC+9)
    answer = ask(
        client, InsightType.TRENDS, of("login"), time_range=tokyo_days, timezone="Asia/Tokyo"
    )
    assert answer.trends is not None
    (series,) = answer.trends.series
    assert [(p.time, p.value) for p in series.points] == [
        (datetime.datetime(2024, 5, 6, 15, tzinfo=UTC), 2.0),
        (datetime.datetime(2024, 5, 7, 15, tzinfo=UTC), 1.0),
    ]
    (utc_days,) = _series(ask(client, InsightType.TRENDS, of("login"), time_range=days(0, 2)))
    assert utc_days[2] == [2.0, 2.0]
    # No event query: every event, counted.
    assert _series(ask(client, InsightType.TRENDS, time_range=days(0, 2))) == [("", {}, [2.0, 2.0])]


def test_month_buckets_follow_the_local_calendar(client: Pug) -> None:
    client.track("u1", "login", timestamp=datetime.datetime(2024, 6, 1, 2, tzinfo=UTC))
    new_york = TimeRange(  # May and June in America/New_York (UTC-4)
        from_=datetime.datetime(2024, 5, 1, 4, tzinfo=UTC),
        to=datetime.datetime(2024, 7, 1, 4, tzinfo=UTC),
    )
    local = ask(
        client, InsightType.TRENDS, of("login"), time_range=new_york,
        granularity=Granularity.MONTH, timezone="America/New_York",
    )  # fmt: skip
    assert _series(local) == [("login", {}, [1.0, 0.0])]  # May 31, 22:00 there
    utc_months = TimeRange(from_=at(-5, base=MIDNIGHT), to=at(56, base=MIDNIGHT))
    in_utc = ask(
        client, InsightType.TRENDS, of("login"), time_range=utc_months,
        granularity=Granularity.MONTH,
    )  # fmt: skip
    assert _series(in_utc) == [("login", {}, [0.0, 1.0])]
    by_path = ask(
        client, InsightType.TRENDS, of("login"), time_range=days(3, 4),
        breakdowns=[Breakdown(property="path")],
    )  # fmt: skip
    assert _series(by_path) == []  # nothing to break down


def test_trend_buckets_across_a_daylight_saving_change(client: Pug) -> None:
    # Europe/Paris moves from UTC+1 to UTC+2 at 2024-03-31T01:00Z.
    switch = datetime.datetime(2024, 3, 31, 1, tzinfo=UTC)
    for minutes in (-30, 30, 90):
        client.track("u1", "login", timestamp=switch + datetime.timedelta(minutes=minutes))
    hours = TimeRange(
        from_=switch - datetime.timedelta(hours=1), to=switch + datetime.timedelta(hours=2)
    )
    answer = ask(
        client,
        InsightType.TRENDS,
        of("login"),
        time_range=hours,
        granularity=Granularity.HOUR,
        timezone="Europe/Paris",
    )
    assert answer.trends is not None
    (series,) = answer.trends.series
    hour = datetime.timedelta(hours=1)
    assert [(p.time, p.value) for p in series.points] == [
        (switch - hour, 1.0), (switch, 1.0), (switch + hour, 1.0)
    ]  # fmt: skip
    local_days = TimeRange(
        from_=datetime.datetime(2024, 3, 30, 23, tzinfo=UTC),  # March 31, 00:00 +01:00
        to=datetime.datetime(2024, 4, 1, 22, tzinfo=UTC),  # April 2, 00:00 +02:00
    )
    answer = ask(
        client, InsightType.TRENDS, of("login"), time_range=local_days, timezone="Europe/Paris"
    )
    assert answer.trends is not None
    assert [(p.time, p.value) for p in answer.trends.series[0].points] == [
        (datetime.datetime(2024, 3, 30, 23, tzinfo=UTC), 3.0),  # a 23-hour day
        (datetime.datetime(2024, 3, 31, 22, tzinfo=UTC), 0.0),
    ]


# ---- segmentation -------------------------------------------------------------------------


def _cookieless(fake: FakePug, kind: str, when: datetime.datetime) -> None:
    event = Event(
        event_id=str(uuid.uuid4()),
        kind=kind,
        occur_time=when,
        cookieless=True,
        custom_properties={"amount": PropertyValue(double_value=1000.0)},
    )
    fake.handle(BATCH_CREATE, bytes(BatchCreateRequest(events=[event])))


def test_segmentation_aggregates_every_matching_event(fake: FakePug, client: Pug) -> None:
    client.track("u1", "order", {"amount": 49.5}, timestamp=at(0))
    client.track("u1", "order", {"amount": 10}, timestamp=at(1))
    client.track("u2", "order", {"amount": "20"}, timestamp=at(1))
    client.track("u2", "signup", timestamp=at(0))
    client.track("u3", "order", {"amount": 1}, timestamp=at(2))  # after the range
    _cookieless(fake, "order", at(0))

    def total(*events: EventQuery, **spec: Any) -> float | None:
        answer = ask(client, InsightType.SEGMENTATION, *events, **spec)
        assert answer.segmentation is not None
        return answer.segmentation.total

    assert total(of("order")) == 3.0
    assert total(of("order"), include_cookieless=True) == 4.0
    assert total(of("order", Agg.UNIQUE_USERS)) == 2.0
    assert total(of("order", Agg.PER_USER_AVG)) == 1.5
    assert total(of("order", Agg.SUM, "amount")) == 79.5  # "20" is a number too
    assert total(of("order", Agg.MAX, "amount")) == 49.5
    # Several events: any of them, aggregated as the first one says.
    assert total(of("order", Agg.UNIQUE_USERS), of("signup")) == 2.0
    assert total(of("signup"), of("order")) == 4.0
    assert total() == 4.0  # every event
    assert total(of("order"), time_range=days(5, 6)) == 0.0  # nothing in the range
    assert total(of("order", Agg.AVG, "amount"), time_range=days(5, 6)) == 0.0


# ---- session metrics ----------------------------------------------------------------------

S1, S2, S3, S4 = (str(uuid.UUID(int=n)) for n in range(1, 5))


@pytest.fixture
def sessions(client: Pug) -> Pug:
    """S1 (day 0): 3 events over 180 s; S2 (day 0): a bounce; S3 (day 1): 2 events over
    120 s, the second after the range's end; S4 starts before the range."""
    for user, session, when, kind, path in [
        ("u1", S1, at(0), "page_view", "/"),
        ("u1", S1, at(0, 1), "page_view", "/pricing"),
        ("u1", S1, at(0, 3), "purchase", None),
        ("u2", S2, at(0, 10), "page_view", "/docs"),
        ("u1", S3, at(2, -2, MIDNIGHT), "page_view", "/"),
        ("u1", S3, at(2, 0, MIDNIGHT), "page_view", "/docs"),
        ("u3", S4, at(0, -1, MIDNIGHT), "page_view", "/"),
        ("u3", S4, at(0, 1, MIDNIGHT), "page_view", "/"),
    ]:
        client.track(user, kind, {"path": path} if path else {}, timestamp=when, session_id=session)
    return client


def test_session_metrics_as_segmentation(sessions: Pug) -> None:
    def total(metric: SessionMetric, scope: EventFilter | None = None) -> float | None:
        session = SessionQuery(metric=metric, scope=scope)
        answer = ask(sessions, InsightType.SEGMENTATION, session=session)
        assert answer.segmentation is not None
        return answer.segmentation.total

    assert total(SessionMetric.SESSIONS) == 3.0  # S4 started before the range
    assert total(SessionMetric.AVG_DURATION) == 100.0  # (180 + 0 + 120) / 3
    assert total(SessionMetric.BOUNCE_RATE) == 100.0 / 3
    assert total(SessionMetric.AVG_EVENTS_PER_SESSION) == 2.0
    assert total(SessionMetric.AVG_DURATION, EventFilter(kind="page_view")) == 60.0
    assert total(SessionMetric.SESSIONS, EventFilter(kind="signup")) == 0.0


def test_session_metrics_as_trends(sessions: Pug) -> None:
    def trend(metric: SessionMetric, scope: EventFilter | None = None, **spec: Any) -> Any:
        session = SessionQuery(metric=metric, scope=scope)
        return _series(ask(sessions, InsightType.TRENDS, session=session, **spec))

    assert trend(SessionMetric.SESSIONS) == [("$session", {}, [2.0, 1.0])]
    page_views = EventFilter(kind="page_view")
    by_path = [Breakdown(property="path")]
    assert trend(SessionMetric.ENTRY, page_views, breakdowns=by_path) == [
        ("page_view", {"path": "/"}, [1.0, 1.0]),
        ("page_view", {"path": "/docs"}, [1.0, 0.0]),
    ]
    assert trend(SessionMetric.EXIT, page_views, breakdowns=by_path) == [
        ("page_view", {"path": "/docs"}, [1.0, 1.0]),
        ("page_view", {"path": "/pricing"}, [1.0, 0.0]),
    ]
    assert trend(SessionMetric.SESSIONS, time_range=days(7, 8)) == [("$session", {}, [0.0])]


# ---- funnels ------------------------------------------------------------------------------

STEPS = (of("signup"), of("page_view"), of("order"))


@pytest.fixture
def journeys(client: Pug) -> Pug:
    """u1 goes all the way in 2 h; u2 orders before viewing (so stops at the view); u3
    never signs up; u4 only signs up."""
    for user, kind, minutes, plan in [
        ("u1", "signup", 0, "pro"), ("u1", "page_view", 60, None), ("u1", "order", 120, None),
        ("u2", "signup", 0, "free"), ("u2", "order", 30, None), ("u2", "page_view", 180, None),
        ("u3", "page_view", 0, None), ("u3", "order", 5, None),
        ("u4", "signup", 10, "pro"),
    ]:  # fmt: skip
        client.track(user, kind, {"plan": plan} if plan else {}, timestamp=at(0, minutes))
    return client


def _funnel(response: QueryResponse) -> list[tuple[dict[str, str], list[tuple[str, float]]]]:
    assert response.funnel is not None
    return [
        (dict(s.breakdown), [(step.event_kind or "", step.total or 0.0) for step in s.steps])
        for s in response.funnel.series
    ]


def test_funnel_counts_the_users_reaching_each_step_in_order(journeys: Pug) -> None:
    answer = ask(journeys, InsightType.FUNNEL, *STEPS)
    assert _funnel(answer) == [({}, [("signup", 3.0), ("page_view", 2.0), ("order", 1.0)])]
    within = ask(
        journeys, InsightType.FUNNEL, *STEPS, conversion_window=datetime.timedelta(minutes=90)
    )
    assert _funnel(within) == [({}, [("signup", 3.0), ("page_view", 1.0), ("order", 0.0)])]
    nothing = ask(journeys, InsightType.FUNNEL, *STEPS, time_range=days(3, 4))
    assert _funnel(nothing) == [({}, [("signup", 0.0), ("page_view", 0.0), ("order", 0.0)])]


def test_a_funnel_starts_again_from_a_later_first_step(client: Pug) -> None:
    client.track("u1", "signup", timestamp=at(0))
    client.track("u1", "signup", timestamp=at(1))
    client.track("u1", "page_view", timestamp=at(1, 10))
    hour = datetime.timedelta(hours=1)
    answer = ask(client, InsightType.FUNNEL, *STEPS[:2], conversion_window=hour)
    assert _funnel(answer) == [({}, [("signup", 1.0), ("page_view", 1.0)])]
    # The same kind twice: two events of it, in order.
    twice = ask(client, InsightType.FUNNEL, of("signup"), of("signup"), of("signup"))
    assert _funnel(twice) == [({}, [("signup", 1.0), ("signup", 1.0), ("signup", 0.0)])]


def test_funnel_step_timing(journeys: Pug) -> None:
    answer = ask(journeys, InsightType.FUNNEL, *STEPS, include_step_timing=True)
    assert answer.funnel is not None
    first, view, order = answer.funnel.series[0].steps
    assert first.timing is None
    assert view.timing is not None and order.timing is not None
    hour = datetime.timedelta(hours=1)
    # page_view: u1 after 1 h, u2 after 3 h; order: u1 1 h after the view.
    assert (view.timing.avg, view.timing.median, view.timing.p95) == (2 * hour, 2 * hour, 3 * hour)
    assert (order.timing.avg, order.timing.median, order.timing.p95) == (hour, hour, hour)
    assert [(b.label, b.upper_bound, b.count) for b in view.timing.distribution] == [
        ("0-30s", datetime.timedelta(seconds=30), 0),
        ("30s-2m", datetime.timedelta(minutes=2), 0),
        ("2-5m", datetime.timedelta(minutes=5), 0),
        ("5-15m", datetime.timedelta(minutes=15), 0),
        ("15-60m", hour, 0),
        ("1-6h", 6 * hour, 2),  # upper bounds are exclusive: 1 h counts here
        ("6-24h", 24 * hour, 0),
        ("24h+", None, 0),
    ]


def test_funnel_breaks_down_by_the_first_step_matching_event(journeys: Pug) -> None:
    by_plan = [Breakdown(property="plan")]
    answer = ask(journeys, InsightType.FUNNEL, *STEPS, breakdowns=by_plan)
    assert _funnel(answer) == [
        ({"plan": "pro"}, [("signup", 2.0), ("page_view", 1.0), ("order", 1.0)]),
        ({"plan": "free"}, [("signup", 1.0), ("page_view", 1.0), ("order", 0.0)]),
    ]
    top_one = ask(journeys, InsightType.FUNNEL, *STEPS, breakdowns=by_plan, breakdown_limit=1)
    assert _funnel(top_one)[1] == (
        {"plan": "$others"}, [("signup", 1.0), ("page_view", 1.0), ("order", 0.0)]
    )  # fmt: skip
    nobody = ask(journeys, InsightType.FUNNEL, *STEPS, breakdowns=by_plan, time_range=days(3, 4))
    assert _funnel(nobody) == [
        ({"plan": ""}, [("signup", 0.0), ("page_view", 0.0), ("order", 0.0)])
    ]


# ---- retention ----------------------------------------------------------------------------


@pytest.fixture
def cohorts(client: Pug) -> Pug:
    """Day-0 signups u1 (returns days 1 and 2) and u2 (day 2); day-1 signups u3 (returns
    days 1 and 2) and u5 (logged in that day before signing up); u4 never signs up."""
    for user, kind, day, minutes, plan in [
        ("u1", "signup", 0, 0, "pro"), ("u1", "login", 1, 0, None), ("u1", "login", 2, 0, None),
        ("u2", "signup", 0, 0, "free"), ("u2", "login", 2, 0, None),
        ("u3", "signup", 1, 0, "pro"), ("u3", "login", 1, 5, None), ("u3", "login", 2, 0, None),
        ("u5", "login", 1, -120, None), ("u5", "signup", 1, 0, "pro"),
        ("u4", "login", 0, 0, None),
    ]:  # fmt: skip
        client.track(user, kind, {"plan": plan} if plan else {}, timestamp=at(day, minutes))
    return client


def _cohorts(response: QueryResponse) -> list[tuple[dict[str, str], list[Any]]]:
    assert response.retention is not None
    return [
        (dict(s.breakdown), [(c.cohort, c.cohort_size, points(c)) for c in s.cohorts])
        for s in response.retention.series
    ]


def test_retention_cohorts_by_first_start_event(cohorts: Pug) -> None:
    answer = ask(cohorts, InsightType.RETENTION, of("signup"), of("login"), time_range=days(0, 3))
    assert _cohorts(answer) == [
        ({}, [
            ("2024-05-06T00:00:00Z", 2.0, [0.0, 50.0, 100.0]),
            ("2024-05-07T00:00:00Z", 2.0, [50.0, 50.0]),  # u5's earlier login does not count
        ])
    ]  # fmt: skip
    assert answer.retention is not None
    assert [p.time for p in answer.retention.series[0].cohorts[1].points] == [
        at(1, base=MIDNIGHT), at(2, base=MIDNIGHT)
    ]  # fmt: skip
    # One event: it is the start and the return event, so the cohort's own bucket is 100%.
    alone = ask(cohorts, InsightType.RETENTION, of("signup"), time_range=days(0, 3))
    assert _cohorts(alone)[0][1][0] == ("2024-05-06T00:00:00Z", 2.0, [100.0, 0.0, 0.0])
    empty = ask(cohorts, InsightType.RETENTION, of("signup"), time_range=days(5, 7))
    assert _cohorts(empty) == []


def test_retention_breaks_down_and_buckets_in_the_timezone(cohorts: Pug) -> None:
    by_plan = [Breakdown(property="plan")]
    answer = ask(
        cohorts, InsightType.RETENTION, of("signup"), of("login"),
        time_range=days(0, 3), breakdowns=by_plan,
    )  # fmt: skip
    assert _cohorts(answer) == [
        ({"plan": "pro"}, [
            ("2024-05-06T00:00:00Z", 1.0, [0.0, 100.0, 100.0]),
            ("2024-05-07T00:00:00Z", 2.0, [50.0, 50.0]),
        ]),
        ({"plan": "free"}, [("2024-05-06T00:00:00Z", 1.0, [0.0, 0.0, 100.0])]),
    ]  # fmt: skip
    # In New York (UTC-4) noon UTC is 08:00 the same day; weeks start on Monday.
    weekly = ask(
        cohorts, InsightType.RETENTION, of("signup"), of("login"), time_range=days(0, 3),
        granularity=Granularity.WEEK, timezone="America/New_York",
    )  # fmt: skip
    assert _cohorts(weekly) == [({}, [("2024-05-06T00:00:00-04:00", 4.0, [75.0])])]


# ---- user flow ----------------------------------------------------------------------------


@pytest.fixture
def flows(client: Pug) -> Pug:
    for n, kinds in enumerate([
        ["page_view", "signup", "order"],
        ["page_view", "signup"],
        ["page_view", "login"],
        ["login"],
        ["page_view", "tour"],
    ]):  # fmt: skip
        session = str(uuid.UUID(int=100 + n))
        for minute, kind in enumerate(kinds):
            client.track(
                f"u{n}", kind, {"path": f"/{kind}"}, timestamp=at(0, minute), session_id=session
            )
    return client


def _flow(client: Pug, **flow: Any) -> tuple[list[tuple[str, bool]], list[tuple[str, str, int]]]:
    answer = ask(client, InsightType.USER_FLOW, user_flow=UserFlowQuery(**flow))
    assert answer.user_flow is not None
    nodes = [(n.id or "", bool(n.is_others)) for n in answer.user_flow.nodes]
    links = [(k.source or "", k.target or "", k.value or 0) for k in answer.user_flow.links]
    return nodes, links


def test_user_flow_links_steps_of_sessions(flows: Pug) -> None:
    nodes, links = _flow(flows)
    assert links == [
        ("0:page_view", "1:signup", 2),
        ("0:page_view", "1:login", 1),
        ("0:page_view", "1:tour", 1),
        ("1:signup", "2:order", 1),
    ]
    assert nodes == [
        ("0:page_view", False), ("1:signup", False), ("1:login", False), ("1:tour", False),
        ("2:order", False),
    ]  # fmt: skip


def test_user_flow_limits_nodes_hops_and_links(flows: Pug) -> None:
    nodes, links = _flow(flows, max_nodes=2)
    assert links == [
        ("0:page_view", "1:signup", 2),
        ("0:page_view", "1:$others", 1),  # tour: tied with login, after it by name
        ("0:page_view", "1:login", 1),
        ("1:signup", "2:order", 1),
    ]
    assert ("1:$others", True) in nodes
    assert _flow(flows, max_hops=1)[1] == [
        ("0:page_view", "1:signup", 2), ("0:page_view", "1:login", 1),
        ("0:page_view", "1:tour", 1),
    ]  # fmt: skip
    assert _flow(flows, max_links=1) == ([("0:page_view", False), ("1:signup", False)],
                                         [("0:page_view", "1:signup", 2)])  # fmt: skip
    scoped = _flow(flows, scope=EventFilter(kind="page_view"))
    assert scoped == ([], [])  # one page view per session: no step


def test_user_flow_by_property(flows: Pug) -> None:
    _, links = _flow(flows, node_kind=UserFlowQueryNodeKind.PROPERTY, node_property="path")
    assert links[0] == ("0:/page_view", "1:/signup", 2)


# ---- top k --------------------------------------------------------------------------------


@pytest.fixture
def ranked(client: Pug) -> Pug:
    for user, kind, props in [
        ("u1", "page_view", {"path": "/"}), ("u1", "page_view", {"path": "/"}),
        ("u2", "page_view", {"path": "/docs"}), ("u3", "page_view", {}),
        ("u1", "order", {"amount": 49}), ("u2", "order", {"amount": 20}),
        ("u3", "signup", {}), ("u1", "login", {}),
    ]:  # fmt: skip
        client.track(user, kind, props, timestamp=at(0))
    client.identify("u1", {"plan": "pro"})
    return client


def _rows(
    client: Pug, time_range: TimeRange | None = None, **top_k: Any
) -> list[tuple[str, float | None, bool]]:
    answer = ask(client, InsightType.TOP_K, top_k=TopKQuery(**top_k), time_range=time_range)
    assert answer.top_k is not None
    return [(r.dimension_value or "", r.value, bool(r.is_others)) for r in answer.top_k.rows]


def test_top_k_ranks_event_kinds_and_properties(ranked: Pug) -> None:
    kinds = TopKQueryDimension.EVENT_KIND
    assert _rows(ranked, dimension=kinds, limit=2) == [
        ("page_view", 4.0, False), ("order", 2.0, False), ("$others", 2.0, True)
    ]  # fmt: skip
    assert _rows(ranked, dimension=kinds, limit=2, omit_others=True) == [
        ("page_view", 4.0, False), ("order", 2.0, False)
    ]  # fmt: skip
    assert _rows(ranked, dimension=kinds, metric=Agg.UNIQUE_USERS) == [
        ("page_view", 3.0, False), ("order", 2.0, False),
        ("login", 1.0, False), ("signup", 1.0, False),  # ties: by value
    ]  # fmt: skip
    paths = _rows(
        ranked, dimension=TopKQueryDimension.PROPERTY, property="path",
        scope=EventFilter(kind="page_view"),
    )  # fmt: skip
    assert paths == [("/", 2.0, False), ("", 1.0, False), ("/docs", 1.0, False)]
    assert _rows(ranked, dimension=kinds, time_range=days(4, 5)) == []


def test_top_k_ranks_users_with_their_profiles(ranked: Pug, fake: FakePug) -> None:
    by_amount = TopKQuery(
        dimension=TopKQueryDimension.USER, metric=Agg.SUM, metric_property="amount", limit=2
    )
    answer = ask(ranked, InsightType.TOP_K, top_k=by_amount)
    assert answer.top_k is not None
    first, second, others = answer.top_k.rows
    u1, u2 = fake.profile("u1"), fake.profile("u2")
    assert (first.dimension_value, first.value, second.dimension_value, second.value) == (
        u1.id, 49.0, u2.id, 20.0
    )  # fmt: skip
    assert first.profile is not None and first.profile.properties is not None
    assert (first.profile.id, first.profile.external_id) == (u1.id, "u1")
    assert first.profile.properties.to_dict() == {"plan": "pro"}
    assert (others.dimension_value, others.value, others.is_others, others.profile) == (
        "$others", 0.0, True, None
    )  # fmt: skip  # u3 has no amount


# ---- invalid queries keep the server's answer ---------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (InsightQuerySpec(insight_type=InsightType.FUNNEL),
         "spec: funnel and retention insight types require at least one event"),
        (InsightQuerySpec(insight_type=InsightType.TOP_K),
         "spec: top k insight type requires top_k"),
        (InsightQuerySpec(insight_type=InsightType.USER_FLOW,
                          user_flow=UserFlowQuery(max_nodes=1)),
         "spec: max_nodes must be between 2 and 50 when set"),
        (InsightQuerySpec(insight_type=InsightType.SEGMENTATION,
                          breakdowns=[Breakdown(property="plan")]),
         "spec: breakdowns are not supported for segmentation insight type"),
    ],
)  # fmt: skip
def test_invalid_queries_are_still_invalid_argument(
    client: Pug, spec: InsightQuerySpec, message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        client.insights.query(spec=spec, time_range=days(0, 1), granularity=Granularity.DAY)
    assert raised.value.message == message
