"""FakePug answers as the server does: over hypothesis-generated requests, its code and
violations (field path, rule id) are those protovalidate reports for the same bytes, with
the contract's rules on the descriptors (tests/support/protovalidate_pool.py).

Covered: BatchCreate, Identify and ProfilesService/List (filter groups and every
PropertyFilter rule). Messages: a CEL rule's message is the contract's and is compared
exactly; the standard rules' wording changed across protovalidate releases (protovalidate-py
2.x writes "must be at most 1024 characters" where the fake, like protovalidate-go before
1.0, writes "value length must be at most 1024 characters"), so those are compared by rule
id and field only. Where protovalidate cannot evaluate a rule (CEL's double() of text that
is not a number), the server answers invalid_argument without violations; the fake must
answer invalid_argument (it names property_filter.numeric_value_required).
"""

from __future__ import annotations

import uuid
from typing import Any

import protovalidate
import pytest
from google.protobuf import message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protovalidate_pool import Found, annotated_messages, violations
from pug import PugError
from pug.testing import FakePug
from pug.transports.base import BATCH_CREATE, IDENTIFY

LIST = "shared.profiles.v1.ProfilesService/List"
EXAMPLES = 300  # per method

UUIDS = st.sampled_from([str(uuid.UUID(int=7)), "", "evt-1", "0" * 36])
KINDS = st.sampled_from(["signup", "", "a b", "signup\n", "ok.kind-1"])
IDS = st.sampled_from(["", "u1", "cookieless-1", "é"])
KEYS = st.sampled_from(["$lib", "plan", "", "$", "é\n"])
SECONDS = st.integers(min_value=-(2**40), max_value=2**40) | st.sampled_from([0, 2**62])


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def setter(target: message.Message, name: str, value: Any) -> None:
    if value is not None:
        setattr(target, name, value)


@st.composite
def property_values(draw: st.DrawFn, target: message.Message) -> None:
    member = draw(st.sampled_from(["none", "string", "int", "double", "bool", "timestamp"]))
    if member == "string":
        target.string_value = draw(st.sampled_from(["x", "é" * 1024, "é" * 1025]))  # type: ignore[attr-defined]
    elif member == "int":
        target.int_value = draw(st.integers(-(2**63), 2**63 - 1))  # type: ignore[attr-defined]
    elif member == "double":
        target.double_value = draw(st.floats())  # type: ignore[attr-defined]
    elif member == "bool":
        target.bool_value = draw(st.booleans())  # type: ignore[attr-defined]
    elif member == "timestamp":
        target.timestamp_value.seconds = draw(SECONDS)  # type: ignore[attr-defined]


@st.composite
def batches(draw: st.DrawFn) -> message.Message:
    request = annotated_messages()["sdk.events.v1.BatchCreateRequest"]()
    for _ in range(draw(st.integers(0, 3))):
        event = request.events.add()  # type: ignore[attr-defined]
        setter(event, "event_id", draw(maybe(UUIDS)))
        setter(event, "kind", draw(maybe(KINDS)))
        setter(event, "distinct_id", draw(maybe(IDS)))
        setter(event, "session_id", draw(maybe(UUIDS)))
        setter(event, "cookieless", draw(maybe(st.booleans())))
        seconds = draw(maybe(SECONDS))
        if seconds is not None:
            event.occur_time.seconds = seconds
            event.occur_time.nanos = draw(st.integers(0, 999_999_999))
        for name in ("auto_properties", "custom_properties"):
            for key in draw(st.lists(KEYS, max_size=2, unique=True)):
                draw(property_values(getattr(event, name)[key]))
    return request


@st.composite
def identifies(draw: st.DrawFn) -> message.Message:
    request = annotated_messages()["sdk.profiles.v1.IdentifyRequest"]()
    setter(request, "external_id", draw(maybe(IDS)))
    anonymous = st.sampled_from(["", "anon-1", "x", "anon-" + "a" * 251])
    setter(request, "anonymous_id", draw(maybe(anonymous)))
    setter(request, "device_id", draw(maybe(st.sampled_from(["", "d", "x" * 36, "x" * 37]))))
    for key in draw(st.lists(KEYS, max_size=2)):
        request.traits.fields[key].string_value = "v"  # type: ignore[attr-defined]
    return request


# Texts that cel-rust (protovalidate-py) and the server's cel-go (strconv.ParseFloat) read
# alike. They differ on " 1" and "1 " (cel-rust trims: a number; Go: not), "1e400" (Go: out
# of range, an error) and "1_0" (Go: 10; cel-rust: an error): the fake follows Go there,
# held by tests/unit/test_fake_wire.py.
NUMBERS = st.sampled_from(["1", "-2.5", "+1", ".5", "1e5", "NaN", "Inf", "0x1p1", "abc", "", "١٢"])


@st.composite
def filters(draw: st.DrawFn, target: message.Message) -> None:
    setter(target, "property", draw(maybe(st.sampled_from(["plan", "", "a..b", "$x.y", "a b"]))))
    setter(target, "operator", draw(maybe(st.integers(0, 15))))
    setter(target, "value", draw(maybe(NUMBERS)))
    target.values.extend(draw(st.lists(NUMBERS, max_size=3)))  # type: ignore[attr-defined]
    setter(target, "source", draw(maybe(st.integers(0, 4))))


@st.composite
def lists(draw: st.DrawFn) -> message.Message:
    request = annotated_messages()["shared.profiles.v1.ListRequest"]()
    for _ in range(draw(st.integers(0, 2))):
        group = request.filter_groups.add()  # type: ignore[attr-defined]
        setter(group, "operator", draw(maybe(st.integers(0, 4))))
        for _ in range(draw(st.integers(0, 2))):
            draw(filters(group.filters.add()))
    setter(request, "filter_groups_operator", draw(maybe(st.integers(0, 4))))
    return request


def fake_answer(method: str, body: bytes) -> tuple[str, list[Found]]:
    """The fake's code ("ok" when it answers) and violations for the bytes."""
    fake = FakePug()
    try:
        if method == LIST:
            fake.handle_stream(method, body)
        else:
            fake.handle(method, body)
    except PugError as error:
        details: Any = error.details
        found = [Found(d["field"], d["rule_id"], d["message"]) for d in details]
        return error.code, found
    return "ok", []


def comparable(found: list[Found]) -> list[tuple[str, str, str]]:
    """Field, rule id and (for a CEL rule, whose id has a dot and a known message) the
    message, in a stable order."""
    return sorted((f.field, f.rule_id, f.message if _is_cel(f.rule_id) else "") for f in found)


def _is_cel(rule_id: str) -> bool:
    import pug.rules

    return rule_id in pug.rules.CEL


def check(method: str, request: message.Message) -> None:
    body = request.SerializeToString()
    code, found = fake_answer(method, body)
    try:
        expected = violations(request)
    except protovalidate.EvaluationError:
        assert code == "invalid_argument", "the server fails to evaluate a rule: invalid_argument"
        return
    if expected:
        assert code == "invalid_argument"
        assert comparable(found) == comparable(expected)
    else:
        assert (code, found) == ("ok", [])


COMMON = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@COMMON
@given(batches())
def test_batch_create_answers_as_protovalidate(request_: message.Message) -> None:
    check(BATCH_CREATE, request_)


@COMMON
@given(identifies())
def test_identify_answers_as_protovalidate(request_: message.Message) -> None:
    check(IDENTIFY, request_)


@COMMON
@given(lists())
def test_list_filters_answer_as_protovalidate(request_: message.Message) -> None:
    check(LIST, request_)


@pytest.mark.parametrize(
    "key", ["é", "a\nb", 'q"', "\x7f", "\u2028"], ids=["é", "newline", "quote", "del", "u2028"]
)
def test_a_map_key_in_a_field_path_is_quoted_as_go_quotes_it(key: str) -> None:
    request = annotated_messages()["sdk.events.v1.BatchCreateRequest"]()
    event = request.events.add()  # type: ignore[attr-defined]
    event.custom_properties[key].Clear()  # an entry whose value has no member: a violation
    check(BATCH_CREATE, request)
