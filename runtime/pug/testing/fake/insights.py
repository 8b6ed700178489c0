"""What FakePug answers to InsightsService.Query, computed from the stored events: trends
(with breakdowns), segmentation, funnels, retention, user flows, top-k and session metrics.

`answer` takes a request already checked by the server's rules (`server.py`). Where the
server's semantics are not pinned down by the wire contract, the choices are listed in
`pug.testing.fake.server`'s docstring.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import math
import statistics
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from pug.errors import error_for
from pug.proto.common.v1 import EventFilter, TimeRange
from pug.proto.shared.insights import v1 as insights_v1
from pug.testing.fake.values import (
    UTC,
    Granularity,
    StoredEvent,
    StoredProfile,
    as_number,
    as_text,
    event_lookup,
    event_matches,
    event_property,
    groups_match,
    in_time_range,
    to_struct,
    utc,
)

_Type = insights_v1.InsightType
_Agg = insights_v1.AggregationType
_Metric = insights_v1.SessionMetric
_Dimension = insights_v1.TopKQueryDimension
_NodeKind = insights_v1.UserFlowQueryNodeKind

OTHERS = "$others"  # the value naming everything outside a top N (flagged is_others too)
SESSION_SERIES = "$session"  # event_kind of a session series without a scope kind
DEFAULT_BREAKDOWN_LIMIT = 10
DEFAULT_TOP_K_LIMIT = 10
DEFAULT_MAX_HOPS, DEFAULT_MAX_NODES, DEFAULT_MAX_LINKS = 5, 20, 250
# Funnel step timing: each bucket's label and exclusive upper bound in seconds (None: open).
TIMING_BUCKETS: tuple[tuple[str, int | None], ...] = (
    ("0-30s", 30), ("30s-2m", 120), ("2-5m", 300), ("5-15m", 900),
    ("15-60m", 3600), ("1-6h", 21600), ("6-24h", 86400), ("24h+", None),
)  # fmt: skip

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
Key = tuple[str, ...]  # breakdown values, in the order of spec.breakdowns


# ---- time buckets -------------------------------------------------------------------------


def _zone(name: str | None) -> datetime.tzinfo:
    """The request's time zone. A name the rules let through (`^[A-Za-z0-9_+/-]*$`) but
    naming no zone is refused by the server's handler, not by a rule: invalid_argument
    without violations, in its words. ZoneInfo raises KeyError for an unknown name,
    ValueError for one like "Europe/" and IsADirectoryError for one like "America"."""
    if not name or name == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        raise error_for("invalid_argument", f'invalid timezone "{name}"') from None


def _bucket_start(
    when: datetime.datetime, granularity: Granularity, tz: datetime.tzinfo
) -> datetime.datetime:
    local = when.astimezone(tz)
    if granularity == Granularity.MINUTE:
        return local.replace(second=0, microsecond=0)
    if granularity == Granularity.HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == Granularity.WEEK:
        return day - datetime.timedelta(days=day.weekday())
    if granularity == Granularity.MONTH:
        return day.replace(day=1)
    return day


def _next_bucket(
    start: datetime.datetime, granularity: Granularity, tz: datetime.tzinfo
) -> datetime.datetime:
    # Minutes and hours step in real time; days, weeks and months by the local calendar
    # (aware datetime arithmetic in Python is wall-clock arithmetic).
    if granularity == Granularity.MINUTE:
        return (start.astimezone(UTC) + datetime.timedelta(minutes=1)).astimezone(tz)
    if granularity == Granularity.HOUR:
        return (start.astimezone(UTC) + datetime.timedelta(hours=1)).astimezone(tz)
    if granularity == Granularity.WEEK:
        return start + datetime.timedelta(days=7)
    if granularity == Granularity.MONTH:
        year, month = divmod(start.month, 12)
        return start.replace(year=start.year + year, month=month + 1)
    return start + datetime.timedelta(days=1)


def _buckets(
    time_range: TimeRange, granularity: Granularity, tz: datetime.tzinfo
) -> list[datetime.datetime]:
    """Start of every bucket that overlaps the time range."""
    start, end = utc(time_range.from_), utc(time_range.to)
    current = _bucket_start(start, granularity, tz)
    out = []
    while current < end:
        out.append(current)
        current = _next_bucket(current, granularity, tz)
    return out


def _rfc3339(when: datetime.datetime) -> str:
    """A bucket start as RFC 3339 in its own zone (`Z` for UTC)."""
    return when.isoformat().replace("+00:00", "Z")


# ---- the request as the computations read it ----------------------------------------------


@dataclass(frozen=True)
class _Query:
    spec: insights_v1.InsightQuerySpec
    time_range: TimeRange
    granularity: Granularity
    tz: datetime.tzinfo
    profiles: Mapping[str, StoredProfile]
    scoped: list[StoredEvent]  # any time; cookieless rule and filter groups applied; in order

    @functools.cached_property
    def events(self) -> list[StoredEvent]:
        """The scoped events inside the time range."""
        return [e for e in self.scoped if in_time_range(e.occur_time, self.time_range)]

    def matches(self, event: StoredEvent, event_filter: EventFilter | None) -> bool:
        return event_filter is None or event_matches(event, event_filter, self.profiles)

    @functools.cached_property
    def buckets(self) -> list[datetime.datetime]:
        return _buckets(self.time_range, self.granularity, self.tz)

    def bucket(self, when: datetime.datetime) -> datetime.datetime:
        return _bucket_start(when, self.granularity, self.tz)

    def breakdown_properties(self) -> list[str]:
        return [b.property or "" for b in self.spec.breakdowns]

    def breakdown_limit(self) -> int:
        return self.spec.breakdown_limit or DEFAULT_BREAKDOWN_LIMIT


def answer(
    request: insights_v1.QueryRequest,
    events: Sequence[StoredEvent],
    profiles: Mapping[str, StoredProfile],
) -> insights_v1.QueryResponse:
    spec, time_range, granularity = request.spec, request.time_range, request.granularity
    assert spec is not None and time_range is not None and granularity is not None
    tz = _zone(request.timezone)
    scoped = sorted(
        (
            e
            for e in events
            if (spec.include_cookieless or not e.cookieless)
            and groups_match(
                spec.filter_groups, spec.filter_groups_operator, event_lookup(e, profiles)
            )
        ),
        key=lambda e: (e.occur_time, e.seq),
    )
    q = _Query(spec, time_range, granularity, tz, profiles, scoped)
    kind = spec.insight_type
    if kind == _Type.TRENDS:
        series = _session_trends(q) if spec.session is not None else _trends(q)
        return insights_v1.QueryResponse(trends=insights_v1.TrendsResult(series=series))
    if kind == _Type.SEGMENTATION:
        total = _session_total(q) if spec.session is not None else _segmentation(q)
        return insights_v1.QueryResponse(segmentation=insights_v1.SegmentationResult(total=total))
    if kind == _Type.FUNNEL:
        return insights_v1.QueryResponse(funnel=insights_v1.FunnelResult(series=_funnel(q)))
    if kind == _Type.RETENTION:
        retention = insights_v1.RetentionResult(series=_retention(q))
        return insights_v1.QueryResponse(retention=retention)
    if kind == _Type.USER_FLOW:
        return insights_v1.QueryResponse(user_flow=_user_flow(q))
    return insights_v1.QueryResponse(top_k=_top_k(q))  # the rules allow no other type


# ---- shared pieces ------------------------------------------------------------------------


def _aggregate(
    aggregation: insights_v1.AggregationType | None, prop: str | None, events: Sequence[StoredEvent]
) -> float:
    """One number for `events`: their count (TOTAL, the default), their users, events per
    user, or SUM/AVG/MIN/MAX of a numeric property (0 when no event has a number)."""
    users = {e.owner for e in events if e.owner}
    if aggregation in (None, _Agg.UNSPECIFIED, _Agg.TOTAL):
        return float(len(events))
    if aggregation == _Agg.UNIQUE_USERS:
        return float(len(users))
    if aggregation == _Agg.PER_USER_AVG:
        return len(events) / len(users) if users else 0.0
    key = prop or ""
    numbers = [n for n in (as_number(event_property(e, key)[1]) for e in events) if n is not None]
    if not numbers:
        return 0.0
    if aggregation == _Agg.SUM:
        return math.fsum(numbers)
    if aggregation == _Agg.AVG:
        return math.fsum(numbers) / len(numbers)
    return min(numbers) if aggregation == _Agg.MIN else max(numbers)


def _kind_of(event_filter: EventFilter | None) -> str:
    return (event_filter or EventFilter()).kind or ""


def _breakdown_key(event: StoredEvent | None, properties: Sequence[str]) -> Key:
    """An event's breakdown values as text ("" where the property is not set)."""
    if event is None:
        return ("",) * len(properties)
    return tuple(as_text(event_property(event, p)[1]) for p in properties)


def _group(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    groups: dict[K, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)


def _top(
    groups: Mapping[Key, list[T]], weight: Callable[[list[T]], float], limit: int
) -> list[tuple[Key, list[T]]]:
    """The `limit` heaviest groups (ties by their values, ascending), then one `$others`
    group holding the members of all the rest."""
    ranked = sorted(groups, key=lambda k: (-weight(groups[k]), k))
    kept = [(key, groups[key]) for key in ranked[:limit]]
    rest = [member for key in ranked[limit:] for member in groups[key]]
    if rest:
        kept.append(((OTHERS,) * len(ranked[0]), rest))
    return kept


def _breakdown(properties: Sequence[str], key: Key) -> dict[str, str]:
    return dict(zip(properties, key, strict=True))


# ---- trends and segmentation --------------------------------------------------------------


def _points(
    q: _Query,
    members: Sequence[T],
    when: Callable[[T], datetime.datetime],
    value: Callable[[list[T]], float],
) -> list[insights_v1.DataPoint]:
    """One point per bucket of the range (0 where nothing happened)."""
    by_bucket = _group(members, lambda m: q.bucket(when(m)))
    return [
        insights_v1.DataPoint(time=start.astimezone(UTC), value=value(by_bucket.get(start, [])))
        for start in q.buckets
    ]


def _series(
    q: _Query,
    event_kind: str,
    members: Sequence[T],
    when: Callable[[T], datetime.datetime],
    value: Callable[[list[T]], float],
    carrier: Callable[[T], StoredEvent],
) -> list[insights_v1.TrendSeries]:
    """The series of one event query (or session metric): one without breakdowns, else one
    per combination of breakdown values (those of each member's `carrier` event), the top
    `breakdown_limit` by their sum, then `$others`."""
    properties = q.breakdown_properties()
    if not properties:
        points = _points(q, members, when, value)
        return [insights_v1.TrendSeries(event_kind=event_kind, points=points)]
    groups = _group(members, lambda m: _breakdown_key(carrier(m), properties))

    def total(group: list[T]) -> float:
        return math.fsum(p.value or 0.0 for p in _points(q, group, when, value))

    return [
        insights_v1.TrendSeries(
            event_kind=event_kind,
            breakdown=_breakdown(properties, key),
            points=_points(q, group, when, value),
        )
        for key, group in _top(groups, total, q.breakdown_limit())
    ]


def _trends(q: _Query) -> list[insights_v1.TrendSeries]:
    series: list[insights_v1.TrendSeries] = []
    in_range = q.events
    for query in q.spec.events or [insights_v1.EventQuery()]:  # none: every event, counted
        chosen = [e for e in in_range if q.matches(e, query.event)]
        value = functools.partial(_aggregate, query.aggregation, query.aggregation_property)
        kind = _kind_of(query.event)
        series.extend(_series(q, kind, chosen, lambda e: e.occur_time, value, lambda e: e))
    return series


def _segmentation(q: _Query) -> float:
    """The first event query's aggregation over every event matching any of them (every
    event when none is given)."""
    queries = q.spec.events
    chosen = [
        e for e in q.events if not queries or any(q.matches(e, query.event) for query in queries)
    ]
    first = queries[0] if queries else insights_v1.EventQuery()
    return _aggregate(first.aggregation, first.aggregation_property, chosen)


# ---- sessions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Session:
    events: list[StoredEvent]  # in time order
    breakdown_event: StoredEvent  # its entry event (its exit event for the EXIT metric)

    @property
    def start(self) -> datetime.datetime:
        return self.events[0].occur_time

    @property
    def seconds(self) -> float:
        return (self.events[-1].occur_time - self.events[0].occur_time).total_seconds()


def _sessions(q: _Query) -> list[_Session]:
    """The sessions that start inside the time range, each with all its events in scope
    (also those past the range's end)."""
    session = q.spec.session
    assert session is not None
    exit_metric = session.metric == _Metric.EXIT
    chosen = [e for e in q.scoped if e.session_id and q.matches(e, session.scope)]
    out = []
    for events in _group(chosen, lambda e: e.session_id).values():
        if in_time_range(events[0].occur_time, q.time_range):
            out.append(_Session(events, events[-1] if exit_metric else events[0]))
    return out


def _carrier(session: _Session) -> StoredEvent:
    return session.breakdown_event


def _session_metric(metric: insights_v1.SessionMetric | None) -> Callable[[list[_Session]], float]:
    def value(sessions: list[_Session]) -> float:
        if not sessions:
            return 0.0
        if metric == _Metric.AVG_DURATION:
            return statistics.fmean(s.seconds for s in sessions)
        if metric == _Metric.BOUNCE_RATE:
            return 100.0 * sum(len(s.events) == 1 for s in sessions) / len(sessions)
        if metric == _Metric.AVG_EVENTS_PER_SESSION:
            return statistics.fmean(len(s.events) for s in sessions)
        return float(len(sessions))  # SESSIONS, ENTRY, EXIT

    return value


def _session_trends(q: _Query) -> list[insights_v1.TrendSeries]:
    session = q.spec.session
    assert session is not None
    kind = _kind_of(session.scope) or SESSION_SERIES
    value = _session_metric(session.metric)
    return _series(q, kind, _sessions(q), lambda s: s.start, value, _carrier)


def _session_total(q: _Query) -> float:
    assert q.spec.session is not None
    return _session_metric(q.spec.session.metric)(_sessions(q))


# ---- funnels ------------------------------------------------------------------------------


class _Journey(NamedTuple):
    """How far one user went: the time each step was reached, and their breakdown."""

    times: list[datetime.datetime]
    key: Key


def _window(q: _Query) -> datetime.timedelta:
    if q.spec.conversion_window:
        return q.spec.conversion_window
    return utc(q.time_range.to) - utc(q.time_range.from_)


def _furthest(
    steps_of: Sequence[tuple[datetime.datetime, set[int]]], steps: int, window: datetime.timedelta
) -> list[datetime.datetime]:
    """The longest chain of steps in order, each event used once, within `window` of the
    first step (the earliest such chain on ties); [] if step 0 never happened."""
    best: list[datetime.datetime] = []
    for i, (start, matched) in enumerate(steps_of):
        if 0 not in matched:
            continue
        chain = [start]
        for when, later in steps_of[i + 1 :]:
            if len(chain) == steps or when - start > window:
                break
            if len(chain) in later:
                chain.append(when)
        if len(chain) > len(best):
            best = chain
    return best


def _funnel(q: _Query) -> list[insights_v1.FunnelSeries]:
    steps = q.spec.events
    properties, window = q.breakdown_properties(), _window(q)
    journeys = []
    for events in _group((e for e in q.events if e.owner), lambda e: e.owner).values():
        steps_of = [
            (e.occur_time, {i for i, s in enumerate(steps) if q.matches(e, s.event)})
            for e in events
        ]
        times = _furthest([s for s in steps_of if s[1]], len(steps), window)
        if times:
            first_touch = next(e for e, (_, m) in zip(events, steps_of, strict=True) if m)
            journeys.append(_Journey(times, _breakdown_key(first_touch, properties)))
    groups = _group(journeys, lambda j: j.key) or {_breakdown_key(None, properties): []}
    return [
        insights_v1.FunnelSeries(
            breakdown=_breakdown(properties, key), steps=_funnel_steps(q, members)
        )
        for key, members in _top(groups, len, q.breakdown_limit())
    ]


def _funnel_steps(q: _Query, journeys: Sequence[_Journey]) -> list[insights_v1.FunnelStep]:
    out = []
    for i, step in enumerate(q.spec.events):
        reached = [j.times for j in journeys if len(j.times) > i]
        funnel_step = insights_v1.FunnelStep(
            event_kind=_kind_of(step.event), total=float(len(reached))
        )
        if q.spec.include_step_timing and i > 0:
            funnel_step.timing = _timing([(t[i] - t[i - 1]).total_seconds() for t in reached])
        out.append(funnel_step)
    return out


def _timing(seconds: list[float]) -> insights_v1.StepTiming:
    """Time from the previous step: mean, median, 95th percentile (nearest rank) and how
    many users fall in each of TIMING_BUCKETS."""
    ordered = sorted(seconds)
    p95 = ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)] if ordered else 0.0
    counts = Counter(
        next(i for i, (_, upper) in enumerate(TIMING_BUCKETS) if upper is None or s < upper)
        for s in ordered
    )
    return insights_v1.StepTiming(
        avg=datetime.timedelta(seconds=statistics.fmean(ordered) if ordered else 0.0),
        median=datetime.timedelta(seconds=statistics.median(ordered) if ordered else 0.0),
        p95=datetime.timedelta(seconds=p95),
        distribution=[
            insights_v1.DistributionBucket(
                label=label,
                upper_bound=None if upper is None else datetime.timedelta(seconds=upper),
                count=counts[i],
            )
            for i, (label, upper) in enumerate(TIMING_BUCKETS)
        ],
    )


# ---- retention ----------------------------------------------------------------------------


class _Cohort(NamedTuple):
    """One user's cohort (the bucket of their first start event) and the buckets they
    returned in."""

    start: datetime.datetime
    returned: set[datetime.datetime]
    key: Key


def _retention(q: _Query) -> list[insights_v1.RetentionSeries]:
    queries = q.spec.events
    start_filter = queries[0].event
    return_filter = queries[1].event if len(queries) > 1 else start_filter
    properties = q.breakdown_properties()
    users = []
    for events in _group((e for e in q.events if e.owner), lambda e: e.owner).values():
        first = next((e for e in events if q.matches(e, start_filter)), None)
        if first is None:
            continue
        returned = {
            q.bucket(e.occur_time)
            for e in events
            if e.occur_time >= first.occur_time and q.matches(e, return_filter)
        }
        users.append(
            _Cohort(q.bucket(first.occur_time), returned, _breakdown_key(first, properties))
        )
    groups = _group(users, lambda u: u.key)
    buckets = q.buckets
    return [
        insights_v1.RetentionSeries(
            breakdown=_breakdown(properties, key), cohorts=_cohorts(members, buckets)
        )
        for key, members in _top(groups, len, q.breakdown_limit())
    ]


def _cohorts(
    users: Sequence[_Cohort], buckets: Sequence[datetime.datetime]
) -> list[insights_v1.RetentionCohort]:
    out = []
    for start, members in sorted(_group(users, lambda u: u.start).items()):
        size = len(members)
        points = [
            insights_v1.DataPoint(
                time=b.astimezone(UTC),
                value=100.0 * sum(b in m.returned for m in members) / size,
            )
            for b in buckets
            if b >= start
        ]
        out.append(
            insights_v1.RetentionCohort(
                cohort=_rfc3339(start), cohort_size=float(size), points=points
            )
        )
    return out


# ---- user flow ----------------------------------------------------------------------------


class _Node(NamedTuple):
    depth: int
    others: bool  # the depth's `$others` node (after the real ones when sorted)
    label: str


def _user_flow(q: _Query) -> insights_v1.UserFlowResult:
    flow = q.spec.user_flow
    assert flow is not None
    by_property = flow.node_kind == _NodeKind.PROPERTY
    hops = flow.max_hops or DEFAULT_MAX_HOPS
    chosen = [e for e in q.events if e.session_id and q.matches(e, flow.scope)]
    edges: Counter[tuple[int, str, str]] = Counter()
    for events in _group(chosen, lambda e: e.session_id).values():
        labels = [
            as_text(event_property(e, flow.node_property or "")[1]) if by_property else e.kind
            for e in events[: hops + 1]
        ]
        steps = itertools.pairwise(labels)
        edges.update({(d, s, t) for d, (s, t) in enumerate(steps) if s and t})
    return _flow_graph(
        edges, flow.max_nodes or DEFAULT_MAX_NODES, flow.max_links or DEFAULT_MAX_LINKS
    )


def _flow_graph(
    edges: Counter[tuple[int, str, str]], max_nodes: int, max_links: int
) -> insights_v1.UserFlowResult:
    """Sessions per (depth, source → target), the `max_nodes` busiest labels of each depth
    kept (the rest merged into that depth's `$others`), the `max_links` busiest links."""
    weight: Counter[tuple[int, str]] = Counter()
    for (depth, source, target), sessions in edges.items():
        weight[depth, source] += sessions
        weight[depth + 1, target] += sessions
    kept: set[tuple[int, str]] = set()
    for labels in _group(weight, lambda node: node[0]).values():
        kept.update(sorted(labels, key=lambda n: (-weight[n], n[1]))[:max_nodes])

    def node(depth: int, label: str) -> _Node:
        return _Node(depth, False, label) if (depth, label) in kept else _Node(depth, True, OTHERS)

    links: Counter[tuple[_Node, _Node]] = Counter()
    for (depth, source, target), sessions in edges.items():
        links[node(depth, source), node(depth + 1, target)] += sessions
    ranked = sorted(
        links,
        key=lambda st: (
            -links[st],
            st[0].depth,
            st[0].label,
            st[0].others,
            st[1].label,
            st[1].others,
        ),
    )[:max_links]
    # Ids are "depth:label"; a real node named `$others` keeps that id and its depth's
    # `$others` node takes "_" suffixes (is_others tells them apart).
    ids: dict[_Node, str] = {}
    for n in sorted({n for link in ranked for n in link}):
        node_id = f"{n.depth}:{n.label}"
        while node_id in ids.values():
            node_id += "_"
        ids[n] = node_id
    nodes = sorted(ids, key=lambda n: (n.depth, n.others, -weight[n.depth, n.label], n.label))
    return insights_v1.UserFlowResult(
        nodes=[insights_v1.UserFlowNode(id=ids[n], is_others=n.others) for n in nodes],
        links=[
            insights_v1.UserFlowLink(source=ids[s], target=ids[t], value=links[s, t])
            for s, t in ranked
        ],
    )


# ---- top k --------------------------------------------------------------------------------


def _top_k(q: _Query) -> insights_v1.TopKResult:
    top = q.spec.top_k
    assert top is not None
    events = [e for e in q.events if q.matches(e, top.scope)]
    if top.dimension == _Dimension.USER:
        groups = _group((e for e in events if e.owner), lambda e: _user_key(q, e))
    elif top.dimension == _Dimension.EVENT_KIND:
        groups = _group(events, lambda e: e.kind)
    else:
        groups = _group(events, lambda e: as_text(event_property(e, top.property or "")[1]))

    def value(members: list[StoredEvent]) -> float:
        return _aggregate(top.metric, top.metric_property, members)

    ranked = sorted(groups, key=lambda k: (-value(groups[k]), k))
    limit = top.limit or DEFAULT_TOP_K_LIMIT
    rows = [
        insights_v1.TopKRow(
            dimension_value=k,
            value=value(groups[k]),
            is_others=False,
            profile=_profile(q, groups[k]),
        )
        for k in ranked[:limit]
    ]
    rest = [e for k in ranked[limit:] for e in groups[k]]
    if rest and not top.omit_others:
        rows.append(insights_v1.TopKRow(dimension_value=OTHERS, value=value(rest), is_others=True))
    return insights_v1.TopKResult(rows=rows)


def _user_key(q: _Query, event: StoredEvent) -> str:
    """A USER row's dimension value: the id of the event's profile."""
    profile = q.profiles.get(event.owner)
    return profile.id if profile is not None else event.owner


def _profile(q: _Query, events: list[StoredEvent]) -> insights_v1.TopKProfile | None:
    """A USER row's profile (its id is the row's dimension value)."""
    assert q.spec.top_k is not None
    profile = q.profiles.get(events[0].owner)
    if q.spec.top_k.dimension != _Dimension.USER or profile is None:
        return None
    return insights_v1.TopKProfile(
        id=profile.id, external_id=profile.external_id, properties=to_struct(profile.properties)
    )
