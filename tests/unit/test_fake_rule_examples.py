"""Every rule FakePug checks, exercised deterministically: one request breaking it per rule
of the contract (each field rule and each CEL rule of every message a method takes), and
one valid request per method, each compared with protovalidate as
tests/unit/test_fake_fidelity.py compares generated ones (`check`).

The hypothesis tests there reach most rules on most runs; these examples reach every rule
on every run, and `test_every_rule_of_the_contract_has_an_example` fails when the contract
gains a rule without one. They also document the rules: each example is a valid request of
its method (`VALID`) with the few changes that break the rule.

A request is written as changes to an empty message: `"a.b[0].c": value` sets a field
(a dict applies its changes to the message there, a list replaces a repeated field's
items, `CLEAR` unsets it); `[i]` adds items up to i, `["k"]` is a map entry.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pug.rules as rules
import pytest
from google.protobuf import message
from protovalidate_pool import annotated_messages, violations
from pug.testing.fake.server import service_methods
from test_fake_fidelity import check, fake_answer

CLEAR = object()  # unset the field
Changes = dict[str, Any]

BATCH = "sdk.events.v1.EventsService/BatchCreate"
IDENTIFY = "sdk.profiles.v1.ProfilesSDKService/Identify"
ACTIVITY = "shared.activity.v1.ActivityService/"
INSIGHTS = "shared.insights.v1.InsightsService/"
PROFILES = "shared.profiles.v1.ProfilesService/"
QUERY = INSIGHTS + "Query"

UUID = str(uuid.UUID(int=7))
EVENT: Changes = {
    "event_id": UUID,
    "kind": "signup",
    "occur_time": {"seconds": 1},
    "distinct_id": "u1",
    "session_id": UUID,
}
FILTER: Changes = {"property": "plan", "operator": 1, "value": "x"}  # EQUALS
FILTERS: Changes = {"operator": 1, "filters": [FILTER]}  # a filter group
HOUR: Changes = {"from": {"seconds": 0}, "to": {"seconds": 3600}}
COUNT: Changes = {"event": {"kind": "signup"}, "aggregation": 1}  # TOTAL of signups
FEED: Changes = {"time_range": HOUR, "property_filters": [FILTER], "events": [{"kind": "signup"}]}

# One valid request per method, and what the fake answers it (its store is empty).
VALID: dict[str, tuple[Changes, str]] = {
    BATCH: ({"events": [EVENT]}, "ok"),
    IDENTIFY: ({"external_id": "u1", "anonymous_id": "anon-1", "device_id": "d"}, "ok"),
    ACTIVITY + "GetActivityFeed": ({**FEED, "distinct_id": "", "page_size": 10}, "ok"),
    ACTIVITY + "GetEventExplorer": ({**FEED, "page_size": 10}, "ok"),
    ACTIVITY + "GetActivityHeatmap": ({"distinct_id": "", "time_range": HOUR}, "ok"),
    ACTIVITY + "GetProfileStats": ({"distinct_id": "u1"}, "not_found"),
    ACTIVITY + "GetFilterSchema": ({"event_kind": "signup", "allowed_types": [1]}, "ok"),
    ACTIVITY + "GetPropertyValues": ({"property_key": "plan", "source": 2}, "ok"),
    INSIGHTS + "GetFilterSchema": ({"event_kind": "", "allowed_types": [2, 3]}, "ok"),
    INSIGHTS + "GetPropertyValues": ({"property_key": "$lib", "source": 1}, "ok"),
    QUERY: (
        {
            "spec": {"insight_type": 1, "events": [COUNT]},  # trends
            "time_range": HOUR,
            "granularity": 2,  # HOUR
            "timezone": "UTC",
        },
        "ok",
    ),
    INSIGHTS + "SegmentUsers": (
        {"time_range": HOUR, "events": [COUNT], "page_size": 10, "filter_groups": [FILTERS]},
        "ok",
    ),
    PROFILES + "Delete": ({"id": "p1"}, "not_found"),
    PROFILES + "DeleteDataSubject": ({"external_id": "u1"}, "ok"),
    PROFILES + "Get": ({"id": "p1"}, "not_found"),
    PROFILES + "GetByExternalId": ({"external_id": "u1"}, "not_found"),
    PROFILES + "GetDeletionRequest": ({"request_id": "r1"}, "not_found"),
    PROFILES + "List": ({"filter_groups": [FILTERS]}, "ok"),
}

# Rule keys: (message, field, rule id); a message's own CEL rules have field "".
Rule = tuple[str, str, str]

PF = "common.v1.PropertyFilter"
EV = "sdk.events.v1.Event"
SPEC = "shared.insights.v1.InsightQuerySpec"
QR = "shared.insights.v1.QueryRequest"
TOP_K = "shared.insights.v1.TopKQuery"
F0 = "filter_groups[0].filters[0]."  # the List request's filter
FLOW: Changes = {"spec.insight_type": 5, "spec.events": [], "spec.user_flow": {"node_kind": 1}}
TOPK: Changes = {"spec.insight_type": 6, "spec.events": [], "spec.top_k": {"dimension": 2}}
SESSION: Changes = {"spec.events": [], "spec.session": {"metric": 1}}  # trends of sessions
FUNNEL: Changes = {"spec.insight_type": 3, "spec.events": [COUNT, COUNT]}
HOURS = 3600


def longer_than(hours: int) -> Changes:
    return {"time_range.to": {"seconds": hours * HOURS + 1}}


# For every rule: the method whose request breaks it, and the changes to its VALID request.
EXAMPLES: dict[Rule, tuple[str, Changes]] = {
    # common.v1.EventFilter (an insight's event)
    ("common.v1.EventFilter", "kind", "string.pattern"): (
        QUERY,
        {"spec.events[0].event.kind": "a b"},
    ),
    # common.v1.GetFilterSchemaRequest
    ("common.v1.GetFilterSchemaRequest", "event_kind", "string.pattern"): (
        ACTIVITY + "GetFilterSchema",
        {"event_kind": "a b"},
    ),
    ("common.v1.GetFilterSchemaRequest", "allowed_types", "enum.defined_only"): (
        INSIGHTS + "GetFilterSchema",
        {"allowed_types": [9]},
    ),
    ("common.v1.GetFilterSchemaRequest", "allowed_types", "enum.not_in"): (
        ACTIVITY + "GetFilterSchema",
        {"allowed_types": [1, 0]},
    ),
    # common.v1.PropertyFilter (a profile filter)
    (PF, "property", "required"): (PROFILES + "List", {F0 + "property": CLEAR}),
    (PF, "property", "string.pattern"): (PROFILES + "List", {F0 + "property": "a..b"}),
    (PF, "operator", "required"): (PROFILES + "List", {F0 + "operator": CLEAR}),
    (PF, "operator", "enum.defined_only"): (PROFILES + "List", {F0 + "operator": 15}),
    (PF, "operator", "enum.not_in"): (PROFILES + "List", {F0 + "operator": 0}),
    (PF, "source", "enum.defined_only"): (PROFILES + "List", {F0 + "source": 9}),
    (PF, "", "property_filter.value_required"): (PROFILES + "List", {F0 + "value": CLEAR}),
    (PF, "", "property_filter.numeric_value_required"): (
        PROFILES + "List",
        {F0 + "operator": 9, F0 + "value": "NaN"},
    ),  # LT
    (PF, "", "property_filter.values_required"): (
        PROFILES + "List",
        {F0 + "operator": 11, F0 + "value": CLEAR},
    ),  # IN
    (PF, "", "property_filter.values_not_allowed"): (PROFILES + "List", {F0 + "values": ["x"]}),
    (PF, "", "property_filter.between_requires_two_values"): (
        PROFILES + "List",
        {F0 + "operator": 13, F0 + "value": CLEAR, F0 + "values": ["1", "2", "3"]},
    ),
    (PF, "", "property_filter.value_not_allowed_for_set_operators"): (
        PROFILES + "List",
        {F0 + "operator": 5},
    ),  # IS_SET
    (PF, "", "property_filter.between_ordered_values"): (
        PROFILES + "List",
        {F0 + "operator": 14, F0 + "value": CLEAR, F0 + "values": ["2", "1"]},
    ),
    # common.v1.PropertyValue (an event's property)
    ("common.v1.PropertyValue", "value", "required"): (
        BATCH,
        {'events[0].custom_properties["k"]': {}},
    ),
    ("common.v1.PropertyValue", "string_value", "string.max_len"): (
        BATCH,
        {'events[0].custom_properties["k"].string_value': "é" * 1025},
    ),
    ("common.v1.PropertyValue", "double_value", "double.finite"): (
        BATCH,
        {'events[0].auto_properties["$k"].double_value': float("inf")},
    ),
    # common.v1.TimeRange (a heatmap's)
    ("common.v1.TimeRange", "from", "required"): (
        ACTIVITY + "GetActivityHeatmap",
        {"time_range.from": CLEAR},
    ),
    ("common.v1.TimeRange", "to", "required"): (
        ACTIVITY + "GetActivityHeatmap",
        {"time_range.to": CLEAR},
    ),
    ("common.v1.TimeRange", "", "time_range.from_before_to"): (
        ACTIVITY + "GetActivityHeatmap",
        {"time_range.to": {"seconds": 0}},
    ),
    # sdk.events.v1.BatchCreateRequest
    ("sdk.events.v1.BatchCreateRequest", "events", "repeated.max_items"): (
        BATCH,
        {"events": [EVENT] * 1001},
    ),
    ("sdk.events.v1.BatchCreateRequest", "", "batch.cookieless_identity_server_owned"): (
        BATCH,
        {"events[0].cookieless": True},
    ),
    ("sdk.events.v1.BatchCreateRequest", "", "batch.distinct_id_reserved_prefix"): (
        BATCH,
        {"events[0].distinct_id": "cookieless-1"},
    ),
    # sdk.events.v1.Event
    (EV, "event_id", "required"): (BATCH, {"events[0].event_id": CLEAR}),
    (EV, "event_id", "string.uuid"): (BATCH, {"events[0].event_id": "evt-1"}),
    (EV, "event_id", "string.uuid_empty"): (BATCH, {"events[0].event_id": ""}),
    (EV, "kind", "required"): (BATCH, {"events[0].kind": CLEAR}),
    (EV, "kind", "string.pattern"): (BATCH, {"events[0].kind": "signup\n"}),
    (EV, "occur_time", "required"): (BATCH, {"events[0].occur_time": CLEAR}),
    (EV, "session_id", "string.uuid"): (BATCH, {"events[0].session_id": "0" * 36}),
    (EV, "session_id", "string.uuid_empty"): (BATCH, {"events[0].session_id": ""}),
    (EV, "", "event.auto_properties_dollar_prefix"): (
        BATCH,
        {'events[0].auto_properties["lib"].bool_value': True},
    ),
    (EV, "", "event.custom_properties_no_dollar_prefix"): (
        BATCH,
        {'events[0].custom_properties["$plan"].bool_value': True},
    ),
    (EV, "", "event.identity_required_unless_cookieless"): (BATCH, {"events[0].session_id": CLEAR}),
    # sdk.profiles.v1.IdentifyRequest
    ("sdk.profiles.v1.IdentifyRequest", "external_id", "required"): (
        IDENTIFY,
        {"external_id": CLEAR},
    ),
    ("sdk.profiles.v1.IdentifyRequest", "external_id", "external_id.reserved_prefix"): (
        IDENTIFY,
        {"external_id": "cookieless-1"},
    ),
    ("sdk.profiles.v1.IdentifyRequest", "anonymous_id", "string.max_len"): (
        IDENTIFY,
        {"anonymous_id": "anon-" + "a" * 251},
    ),
    ("sdk.profiles.v1.IdentifyRequest", "anonymous_id", "string.pattern"): (
        IDENTIFY,
        {"anonymous_id": "x"},
    ),
    ("sdk.profiles.v1.IdentifyRequest", "device_id", "string.max_len"): (
        IDENTIFY,
        {"device_id": "x" * 37},
    ),
    # shared.activity.v1: feed, heatmap, explorer, profile stats, property values
    ("shared.activity.v1.GetActivityFeedRequest", "distinct_id", "required"): (
        ACTIVITY + "GetActivityFeed",
        {"distinct_id": CLEAR},
    ),
    ("shared.activity.v1.GetActivityFeedRequest", "property_filters", "repeated.max_items"): (
        ACTIVITY + "GetActivityFeed",
        {"property_filters": [FILTER] * 21},
    ),
    ("shared.activity.v1.GetActivityFeedRequest", "page_size", "int32.gte_lte"): (
        ACTIVITY + "GetActivityFeed",
        {"page_size": -1},
    ),
    ("shared.activity.v1.GetActivityFeedRequest", "events", "repeated.max_items"): (
        ACTIVITY + "GetActivityFeed",
        {"events": [{"kind": "k"}] * 51},
    ),
    ("shared.activity.v1.GetActivityFeedRequest", "", "activity_feed.events_non_empty_in_multi"): (
        ACTIVITY + "GetActivityFeed",
        {"events": [{"kind": "signup"}, {}]},
    ),
    ("shared.activity.v1.GetActivityHeatmapRequest", "distinct_id", "required"): (
        ACTIVITY + "GetActivityHeatmap",
        {"distinct_id": CLEAR},
    ),
    ("shared.activity.v1.GetEventExplorerRequest", "property_filters", "repeated.max_items"): (
        ACTIVITY + "GetEventExplorer",
        {"property_filters": [FILTER] * 21},
    ),
    ("shared.activity.v1.GetEventExplorerRequest", "page_size", "int32.gte_lte"): (
        ACTIVITY + "GetEventExplorer",
        {"page_size": 1001},
    ),
    ("shared.activity.v1.GetEventExplorerRequest", "events", "repeated.max_items"): (
        ACTIVITY + "GetEventExplorer",
        {"events": [{"kind": "k"}] * 51},
    ),
    (
        "shared.activity.v1.GetEventExplorerRequest",
        "",
        "event_explorer.events_non_empty_in_multi",
    ): (ACTIVITY + "GetEventExplorer", {"events": [{}, {"filters": [FILTER]}]}),
    ("shared.activity.v1.GetProfileStatsRequest", "distinct_id", "required"): (
        ACTIVITY + "GetProfileStats",
        {"distinct_id": CLEAR},
    ),
    ("shared.activity.v1.GetPropertyValuesRequest", "property_key", "required"): (
        ACTIVITY + "GetPropertyValues",
        {"property_key": CLEAR},
    ),
    ("shared.activity.v1.GetPropertyValuesRequest", "property_key", "string.pattern"): (
        ACTIVITY + "GetPropertyValues",
        {"property_key": "a..b"},
    ),
    ("shared.activity.v1.GetPropertyValuesRequest", "source", "required"): (
        ACTIVITY + "GetPropertyValues",
        {"source": CLEAR},
    ),
    ("shared.activity.v1.GetPropertyValuesRequest", "source", "enum.defined_only"): (
        ACTIVITY + "GetPropertyValues",
        {"source": 9},
    ),
    ("shared.activity.v1.GetPropertyValuesRequest", "event_kind", "string.pattern"): (
        ACTIVITY + "GetPropertyValues",
        {"event_kind": "a b"},
    ),
    # shared.insights.v1: property values, segment users, filter groups
    ("shared.insights.v1.GetPropertyValuesRequest", "property_key", "required"): (
        INSIGHTS + "GetPropertyValues",
        {"property_key": CLEAR},
    ),
    ("shared.insights.v1.GetPropertyValuesRequest", "property_key", "string.pattern"): (
        INSIGHTS + "GetPropertyValues",
        {"property_key": "$"},
    ),
    ("shared.insights.v1.GetPropertyValuesRequest", "source", "required"): (
        INSIGHTS + "GetPropertyValues",
        {"source": CLEAR},
    ),
    ("shared.insights.v1.GetPropertyValuesRequest", "source", "enum.defined_only"): (
        INSIGHTS + "GetPropertyValues",
        {"source": 9},
    ),
    ("shared.insights.v1.GetPropertyValuesRequest", "event_kind", "string.pattern"): (
        INSIGHTS + "GetPropertyValues",
        {"event_kind": "a b"},
    ),
    ("shared.insights.v1.SegmentUsersRequest", "time_range", "required"): (
        INSIGHTS + "SegmentUsers",
        {"time_range": CLEAR},
    ),
    ("shared.insights.v1.SegmentUsersRequest", "events", "repeated.min_items"): (
        INSIGHTS + "SegmentUsers",
        {"events": []},
    ),
    ("shared.insights.v1.SegmentUsersRequest", "page_size", "int32.gte_lte"): (
        INSIGHTS + "SegmentUsers",
        {"page_size": 1001},
    ),
    ("shared.insights.v1.FilterGroup", "filters", "repeated.min_items"): (
        INSIGHTS + "SegmentUsers",
        {"filter_groups": [{}]},
    ),
    ("shared.profiles.v1.FilterGroup", "filters", "repeated.min_items"): (
        PROFILES + "List",
        {"filter_groups": [{}]},
    ),
    # shared.insights.v1.EventQuery, Breakdown (a query's)
    ("shared.insights.v1.EventQuery", "aggregation", "enum.defined_only"): (
        QUERY,
        {"spec.events[0].aggregation": 9},
    ),
    ("shared.insights.v1.EventQuery", "aggregation_property", "string.pattern"): (
        QUERY,
        {"spec.events[0].aggregation_property": "a b"},
    ),
    ("shared.insights.v1.EventQuery", "", "event_query.property_required_for_numeric_agg"): (
        QUERY,
        {"spec.events[0].aggregation": 4},
    ),  # SUM
    ("shared.insights.v1.Breakdown", "property", "required"): (QUERY, {"spec.breakdowns": [{}]}),
    ("shared.insights.v1.Breakdown", "property", "string.pattern"): (
        QUERY,
        {"spec.breakdowns": [{"property": "a b"}]},
    ),
    # shared.insights.v1.QueryRequest
    (QR, "spec", "required"): (QUERY, {"spec": CLEAR}),
    (QR, "time_range", "required"): (QUERY, {"time_range": CLEAR}),
    (QR, "granularity", "required"): (QUERY, {"granularity": CLEAR}),
    (QR, "granularity", "enum.defined_only"): (QUERY, {"granularity": 6}),
    (QR, "granularity", "enum.not_in"): (QUERY, {"granularity": 0}),
    (QR, "timezone", "string.max_len"): (QUERY, {"timezone": "x" * 65}),
    (QR, "timezone", "string.pattern"): (QUERY, {"timezone": "Europe/Paris time"}),
    (QR, "", "query_request.granularity_minute_max_range"): (
        QUERY,
        {"granularity": 1, **longer_than(6)},
    ),
    (QR, "", "query_request.granularity_hour_max_range"): (QUERY, longer_than(336)),
    (QR, "", "query_request.granularity_day_max_range"): (
        QUERY,
        {"granularity": 3, **longer_than(8760)},
    ),
    (QR, "", "query_request.granularity_week_max_range"): (
        QUERY,
        {"granularity": 4, **longer_than(35064)},
    ),
    (QR, "", "query_request.granularity_month_max_range"): (
        QUERY,
        {"granularity": 5, **longer_than(87660)},
    ),
    # shared.insights.v1.InsightQuerySpec: its fields
    (SPEC, "insight_type", "required"): (QUERY, {"spec.insight_type": CLEAR}),
    (SPEC, "insight_type", "enum.defined_only"): (QUERY, {"spec.insight_type": 7}),
    (SPEC, "insight_type", "enum.not_in"): (QUERY, {"spec.insight_type": 0}),
    (SPEC, "breakdowns", "repeated.max_items"): (
        QUERY,
        {"spec.breakdowns": [{"property": f"p{i}"} for i in range(6)]},
    ),
    (SPEC, "breakdown_limit", "int32.gte_lte"): (
        QUERY,
        {"spec.breakdowns": [{"property": "plan"}], "spec.breakdown_limit": 101},
    ),
    (SPEC, "conversion_window", "duration.gte"): (
        QUERY,
        {**FUNNEL, "spec.conversion_window": {"nanos": 999_999_999}},
    ),
    (SPEC, "conversion_window", "conversion_window.whole_seconds"): (
        QUERY,
        {**FUNNEL, "spec.conversion_window": {"seconds": 60, "nanos": 5}},
    ),
    # ... its CEL rules: funnels, retention, sessions, breakdowns
    (SPEC, "", "insight_query_spec.funnel_retention_require_events"): (
        QUERY,
        {"spec.insight_type": 4, "spec.events": []},
    ),
    (SPEC, "", "insight_query_spec.funnel_only_conversion_window"): (
        QUERY,
        {"spec.conversion_window": {"seconds": 60}},
    ),
    (SPEC, "", "insight_query_spec.funnel_only_step_timing"): (
        QUERY,
        {"spec.include_step_timing": True},
    ),
    (SPEC, "", "insight_query_spec.session_only_trends_segmentation"): (
        QUERY,
        {**SESSION, "spec.insight_type": 4},
    ),
    (SPEC, "", "insight_query_spec.session_no_events"): (QUERY, {"spec.session": {"metric": 1}}),
    (SPEC, "", "insight_query_spec.session_page_metrics_require_trends_breakdown"): (
        QUERY,
        {**SESSION, "spec.session.metric": 4},
    ),  # ENTRY
    (SPEC, "", "insight_query_spec.segmentation_no_breakdowns"): (
        QUERY,
        {"spec.insight_type": 2, "spec.breakdowns": [{"property": "plan"}]},
    ),
    (SPEC, "", "insight_query_spec.unique_breakdown_properties"): (
        QUERY,
        {"spec.breakdowns": [{"property": "plan"}] * 2},
    ),
    (SPEC, "", "insight_query_spec.breakdown_limit_requires_breakdowns"): (
        QUERY,
        {"spec.breakdown_limit": 5},
    ),
    (SPEC, "", "insight_query_spec.retention_max_events"): (
        QUERY,
        {"spec.insight_type": 4, "spec.events": [COUNT] * 3},
    ),
    (SPEC, "", "insight_query_spec.funnel_max_steps"): (
        QUERY,
        {**FUNNEL, "spec.events": [COUNT] * 21},
    ),
    (SPEC, "", "insight_query_spec.numeric_agg_only_trends_segmentation"): (
        QUERY,
        {
            **FUNNEL,
            "spec.events[0].aggregation": 4,
            "spec.events[0].aggregation_property": "amount",
        },
    ),
    # ... user flows
    (SPEC, "", "insight_query_spec.user_flow_only_for_user_flow"): (
        QUERY,
        {"spec.user_flow": {"node_kind": 1}},
    ),
    (SPEC, "", "insight_query_spec.user_flow_required"): (QUERY, {**FLOW, "spec.user_flow": CLEAR}),
    (SPEC, "", "insight_query_spec.user_flow_no_events"): (QUERY, {**FLOW, "spec.events": [COUNT]}),
    (SPEC, "", "insight_query_spec.user_flow_no_session"): (
        QUERY,
        {**FLOW, "spec.session": {"metric": 1}},
    ),
    (SPEC, "", "insight_query_spec.user_flow_no_breakdowns"): (
        QUERY,
        {**FLOW, "spec.breakdowns": [{"property": "plan"}]},
    ),
    (SPEC, "", "insight_query_spec.user_flow_no_breakdown_limit"): (
        QUERY,
        {**FLOW, "spec.breakdown_limit": 5},
    ),
    (SPEC, "", "insight_query_spec.user_flow_property_required"): (
        QUERY,
        {**FLOW, "spec.user_flow.node_kind": 2},
    ),  # PROPERTY
    (SPEC, "", "insight_query_spec.user_flow_max_hops_range"): (
        QUERY,
        {**FLOW, "spec.user_flow.max_hops": 11},
    ),
    (SPEC, "", "insight_query_spec.user_flow_max_nodes_range"): (
        QUERY,
        {**FLOW, "spec.user_flow.max_nodes": 1},
    ),
    (SPEC, "", "insight_query_spec.user_flow_max_links_range"): (
        QUERY,
        {**FLOW, "spec.user_flow.max_links": 501},
    ),
    ("shared.insights.v1.UserFlowQuery", "node_property", "string.pattern"): (
        QUERY,
        {**FLOW, "spec.user_flow.node_kind": 2, "spec.user_flow.node_property": "a b"},
    ),
    # ... top k
    (SPEC, "", "insight_query_spec.top_k_only_for_top_k"): (
        QUERY,
        {"spec.top_k": {"dimension": 2}},
    ),
    (SPEC, "", "insight_query_spec.top_k_required"): (QUERY, {**TOPK, "spec.top_k": CLEAR}),
    (SPEC, "", "insight_query_spec.top_k_no_events"): (QUERY, {**TOPK, "spec.events": [COUNT]}),
    (SPEC, "", "insight_query_spec.top_k_no_session"): (
        QUERY,
        {**TOPK, "spec.session": {"metric": 1}},
    ),
    (SPEC, "", "insight_query_spec.top_k_no_breakdowns"): (
        QUERY,
        {**TOPK, "spec.breakdowns": [{"property": "plan"}]},
    ),
    (SPEC, "", "insight_query_spec.top_k_no_breakdown_limit"): (
        QUERY,
        {**TOPK, "spec.breakdown_limit": 5},
    ),
    (SPEC, "", "insight_query_spec.top_k_property_required"): (
        QUERY,
        {**TOPK, "spec.top_k.dimension": 1},
    ),  # PROPERTY
    (SPEC, "", "insight_query_spec.top_k_property_only_for_property_dimension"): (
        QUERY,
        {**TOPK, "spec.top_k.property": "plan"},
    ),
    (SPEC, "", "insight_query_spec.top_k_metric_property_required"): (
        QUERY,
        {**TOPK, "spec.top_k.metric": 4},
    ),  # SUM
    (SPEC, "", "insight_query_spec.top_k_user_dimension_metric"): (
        QUERY,
        {**TOPK, "spec.top_k.dimension": 3, "spec.top_k.metric": 2},
    ),
    (TOP_K, "dimension", "required"): (QUERY, {**TOPK, "spec.top_k.dimension": CLEAR}),
    (TOP_K, "dimension", "enum.defined_only"): (QUERY, {**TOPK, "spec.top_k.dimension": 4}),
    (TOP_K, "dimension", "enum.not_in"): (QUERY, {**TOPK, "spec.top_k.dimension": 0}),
    (TOP_K, "property", "string.pattern"): (
        QUERY,
        {**TOPK, "spec.top_k.dimension": 1, "spec.top_k.property": "a b"},
    ),
    (TOP_K, "metric", "enum.defined_only"): (QUERY, {**TOPK, "spec.top_k.metric": 9}),
    (TOP_K, "metric_property", "string.pattern"): (
        QUERY,
        {**TOPK, "spec.top_k.metric": 4, "spec.top_k.metric_property": "a b"},
    ),
    (TOP_K, "limit", "int32.gte_lte"): (QUERY, {**TOPK, "spec.top_k.limit": 101}),
    # shared.insights.v1.SessionQuery
    ("shared.insights.v1.SessionQuery", "metric", "required"): (
        QUERY,
        {**SESSION, "spec.session.metric": CLEAR},
    ),
    ("shared.insights.v1.SessionQuery", "metric", "enum.defined_only"): (
        QUERY,
        {**SESSION, "spec.session.metric": 7},
    ),
    ("shared.insights.v1.SessionQuery", "metric", "enum.not_in"): (
        QUERY,
        {**SESSION, "spec.session.metric": 0},
    ),
    # shared.profiles.v1: the by-id reads
    ("shared.profiles.v1.DeleteDataSubjectRequest", "external_id", "required"): (
        PROFILES + "DeleteDataSubject",
        {"external_id": CLEAR},
    ),
    ("shared.profiles.v1.DeleteRequest", "id", "required"): (PROFILES + "Delete", {"id": CLEAR}),
    ("shared.profiles.v1.GetByExternalIdRequest", "external_id", "required"): (
        PROFILES + "GetByExternalId",
        {"external_id": CLEAR},
    ),
    ("shared.profiles.v1.GetDeletionRequestRequest", "request_id", "required"): (
        PROFILES + "GetDeletionRequest",
        {"request_id": CLEAR},
    ),
    ("shared.profiles.v1.GetRequest", "id", "required"): (PROFILES + "Get", {"id": CLEAR}),
}


# ---- the contract's rules ------------------------------------------------------------------

# protovalidate's rule id of each size attribute of rules.Field.
_SIZES = {
    "min_len": "string.min_len",
    "max_len": "string.max_len",
    "min_items": "repeated.min_items",
    "max_items": "repeated.max_items",
}


def field_rule_ids(field: rules.Field) -> list[str]:
    """The rule ids protovalidate may report for a field with these rules (its items'
    included)."""
    ids = ["required"] if field.required else []
    if field.uuid:
        ids += ["string.uuid", "string.uuid_empty"]
    ids += [rule_id for name, rule_id in _SIZES.items() if getattr(field, name) is not None]
    if field.pattern is not None:
        ids.append("string.pattern")
    bounds = [name for name in ("gt", "gte", "lt", "lte") if getattr(field, name) is not None]
    if bounds:
        ids.append(f"{field.type}.{'_'.join(bounds)}")
    if field.finite:
        ids.append(f"{field.type}.finite")
    if field.defined_only:
        ids.append("enum.defined_only")
    if field.not_in:
        ids.append("enum.not_in")
    ids += [cel.id for cel in field.cel]
    return ids + (field_rule_ids(field.items) if field.items is not None else [])


def contract_rules() -> set[Rule]:
    """Every rule of pug.rules' messages (each method's request and the messages in it)."""
    out: set[Rule] = set()
    for name, spec in rules.MESSAGES.items():
        out.update((name, "", cel.id) for cel in spec.cel)
        out.update((name, oneof, "required") for oneof in spec.required_oneofs)
        for field_name, field in spec.fields.items():
            out.update((name, field_name, rule_id) for rule_id in field_rule_ids(field))
    return out


# ---- building the requests -----------------------------------------------------------------

_STEP = re.compile(r'(\w+)(?:\[(\d+)\]|\["([^"]*)"\])?$')


def _apply(target: message.Message, changes: Changes) -> None:
    for path, value in changes.items():
        *steps, last = path.split(".")
        inner = target
        for step in steps:
            inner = _walk(inner, step)
        _set(inner, last, value)


def _walk(target: Any, step: str) -> Any:
    """The message at one step of a path: a field, an item (added as needed), an entry."""
    found = _STEP.match(step)
    assert found is not None, step
    name, index, key = found.groups()
    inner = getattr(target, name)
    if index is not None:
        while len(inner) <= int(index):
            inner.add()
        return inner[int(index)]
    return inner if key is None else inner[key]


def _set(target: Any, step: str, value: Any) -> None:
    if value is CLEAR:
        target.ClearField(step)
    elif "[" in step or isinstance(value, dict):
        inner = _walk(target, step)
        if hasattr(inner, "SetInParent"):
            inner.SetInParent()
        _apply(inner, value)
    elif isinstance(value, list):
        field = getattr(target, step)
        del field[:]
        for item in value:
            if isinstance(item, dict):
                _apply(field.add(), item)
            else:
                field.append(item)
    else:
        setattr(target, step, value)


def request_for(method: str, changes: Changes) -> message.Message:
    """The VALID request of `method` with `changes` applied."""
    cls = service_methods()[method].request
    name = f"{cls.__module__.removeprefix('pug.proto.')}.{cls.__name__}"
    request = annotated_messages()[name]()
    _apply(request, VALID[method][0])
    _apply(request, changes)
    return request


# ---- the tests -----------------------------------------------------------------------------


def test_every_rule_of_the_contract_has_an_example() -> None:
    assert set(EXAMPLES) == contract_rules()


def test_every_method_has_a_valid_example() -> None:
    assert set(VALID) == set(service_methods())


@pytest.mark.parametrize("method", sorted(VALID))
def test_a_valid_request_of_every_method(method: str) -> None:
    request = request_for(method, {})
    assert violations(request) == []
    assert fake_answer(method, request.SerializeToString()) == (VALID[method][1], [])


def _reports(found: list[Any], rule: Rule) -> bool:
    """Whether `rule` is among the violations: its id, on its field (the path's last
    name; a message's own CEL rule has a unique id, wherever the message is)."""
    _, field, rule_id = rule
    return any(f.rule_id == rule_id and (not field or _last(f.field) == field) for f in found)


def _last(path: str) -> str:
    """The last field name of a path: `filter_groups[0].filters` → `filters`."""
    return re.sub(r"\[.*\]$", "", path.rsplit(".", 1)[-1])


@pytest.mark.parametrize("rule", sorted(EXAMPLES), ids=lambda r: f"{r[0]}.{r[1]}:{r[2]}")
def test_an_example_breaking_each_rule(rule: Rule) -> None:
    method, changes = EXAMPLES[rule]
    request = request_for(method, changes)
    assert _reports(violations(request), rule), violations(request)
    check(method, request)


def test_standard_rule_messages_are_protovalidates() -> None:
    """A standard rule's message is protovalidate's word for word (the wording of
    buf/validate/validate.proto, which the server's protovalidate-go shares), in every
    example breaking one."""
    for (_, _, rule_id), (method, changes) in sorted(EXAMPLES.items()):
        if rule_id in rules.CEL:
            continue
        request = request_for(method, changes)
        expected = {(f.field, f.rule_id): f.message for f in violations(request)}
        _, found = fake_answer(method, request.SerializeToString())
        broken = [f for f in found if f.rule_id == rule_id]
        assert broken, rule_id
        assert [f.message for f in broken] == [expected[f.field, f.rule_id] for f in broken]
