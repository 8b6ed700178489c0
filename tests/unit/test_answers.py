"""Reading an answer costs bounded work (pug.answers), whatever the server sends.

Answers are built with Google's protobuf runtime (an independent implementation): honest
ones must read exactly as betterproto reads them, hostile ones are refused with
`resource_exhausted` before betterproto spends minutes on them.
"""

from __future__ import annotations

import datetime
import time

import pytest
from google.protobuf import struct_pb2
from protoc_helpers import GoogleMessages
from pug import Pug, PugError, answers
from pug.proto.common.v1 import GetFilterSchemaRequest
from pug.proto.shared.activity.v1 import GetActivityFeedResponse
from servers import ConnectServer, FakePug

FEED = "shared.activity.v1.ActivityService/GetActivityFeed"


def _feed_page(google_pb2: GoogleMessages, events: int, properties: int) -> bytes:
    """What a server sends for a full page of activity: `events` events of `properties`
    custom properties each."""
    page = google_pb2["shared.activity.v1.GetActivityFeedResponse"](next_page_token="p2")
    when = datetime.datetime(2026, 11, 30, 8, 0, tzinfo=datetime.UTC)
    for n in range(events):
        event = page.events.add(
            event_id=f"0196a0b0-0000-7000-8000-{n:012d}", kind="purchase", distinct_id="user_42"
        )
        event.occur_time.FromDatetime(when)
        event.custom_properties.update(
            {f"p{i}": (i * 1.5 if i % 2 else f"value {i}") for i in range(properties)}
        )
    return bytes(page.SerializeToString())


def test_an_honest_page_reads_as_betterproto_reads_it(google_pb2: GoogleMessages) -> None:
    data = _feed_page(google_pb2, events=200, properties=30)
    read = answers.parse(GetActivityFeedResponse, data)
    assert read == GetActivityFeedResponse.parse(data)
    assert len(read.events) == 200
    assert read.events[7].custom_properties.fields["p3"].number_value == 4.5


def test_the_largest_honest_page_is_within_the_bounds(google_pb2: GoogleMessages) -> None:
    # page_size ≤ 1000 (the contract); a hundred properties per event.
    data = _feed_page(google_pb2, events=1000, properties=100)
    walk = answers._Walk()
    walk.message(GetActivityFeedResponse, memoryview(data), 0)
    assert 400_000 < walk.fields < answers.MAX_FIELDS
    assert walk.unknown_work == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # empty events: two bytes each, a message each for betterproto
        (b"\x0a\x00" * 600_000, f"the answer has more than {answers.MAX_FIELDS} fields"),
        # next_page_token again and again (known, and a string each time)
        (b"\x12\x00" * 600_000, f"the answer has more than {answers.MAX_FIELDS} fields"),
        # field 15, unknown: betterproto appends each to the bytes kept so far (quadratic)
        (
            b"\x78\x00" * 200_000,
            "the answer has 23171 unknown fields of 46342 bytes in one "
            "GetActivityFeedResponse, too many to read",
        ),
    ],
    ids=["empty messages", "known scalars", "unknown fields"],
)
def test_an_answer_that_would_take_too_long_is_refused_at_once(data: bytes, message: str) -> None:
    start = time.process_time()
    with pytest.raises(PugError) as caught:
        answers.parse(GetActivityFeedResponse, data)
    assert (caught.value.code, caught.value.message) == ("resource_exhausted", message)
    # What betterproto would spend on them is tens of seconds (measured: 1 MiB of empty
    # messages 5 s, 1 MiB of unknown fields 13 s); the walk stops at the bound.
    assert time.process_time() - start < 3.0


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (built by hand: Google's runtime refuses to read, and so
    to copy, messages nested deeper than 100)."""
    length, size = b"", len(payload)
    while size >= 0x80:
        length += bytes([size & 0x7F | 0x80])
        size >>= 7
    return bytes([number << 3 | 2]) + length + bytes([size]) + payload


def test_nesting_deeper_than_protobufs_limit_is_refused() -> None:
    value = struct_pb2.Value(string_value="bottom").SerializeToString()
    for _ in range(40):  # Value.struct_value → Struct.fields entry → its value: 3 levels
        value = _field(5, _field(1, _field(1, b"x") + _field(2, value)))
    struct = _field(1, _field(1, b"deep") + _field(2, value))
    data = _field(1, _field(7, struct))  # events[0].custom_properties
    with pytest.raises(PugError) as caught:
        answers.parse(GetActivityFeedResponse, data)
    assert (caught.value.code, caught.value.message) == (
        "resource_exhausted",
        f"the answer nests messages more than {answers.MAX_DEPTH} deep",
    )
    # 30 levels (92 messages deep) are read
    shallow = struct_pb2.Value(string_value="bottom").SerializeToString()
    for _ in range(30):
        shallow = _field(5, _field(1, _field(1, b"x") + _field(2, shallow)))
    data = _field(1, _field(7, _field(1, _field(1, b"deep") + _field(2, shallow))))
    read = answers.parse(GetActivityFeedResponse, data)
    assert read == GetActivityFeedResponse.parse(data)


def test_packed_elements_are_counted_by_their_bytes() -> None:
    packed = b"\x12\x80\x80\x01" + b"\x01" * (1 << 14)  # field 2, 16 384 enum values
    walk = answers._Walk()
    walk.message(GetFilterSchemaRequest, memoryview(packed), 0)
    assert walk.fields == (1 << 14) + 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0a\x05ab", "a field runs past the end of its message"),
        (b"\x12\xff", "the bytes end inside a varint"),
        (b"\x0b", "wire type 3 is not supported"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "a varint is longer than 10 bytes"),
    ],
)
def test_bytes_that_are_not_the_message_are_the_servers_error(data: bytes, reason: str) -> None:
    with pytest.raises(PugError) as caught:
        answers.parse(GetActivityFeedResponse, data)
    assert (caught.value.code, caught.value.message) == (
        "internal",
        f"unreadable GetActivityFeedResponse: {reason}",
    )


def test_a_read_of_a_hostile_answer_fails_and_the_client_goes_on(
    google_pb2: GoogleMessages,
) -> None:
    """End to end: a real Connect server answers a feed read with 600 000 empty events."""
    with ConnectServer(FakePug(google_pb2)) as server:
        page = google_pb2["shared.activity.v1.GetActivityFeedResponse"]()
        for _ in range(600_000):
            page.events.add()
        server.fake.answer_next(FEED, page)
        pug = Pug(api_key="prv_test", base_url=server.url)
        try:
            start = time.monotonic()
            with pytest.raises(PugError) as caught:
                pug.activity.feed(distinct_id="user_42")
            assert time.monotonic() - start < 5.0
            assert (caught.value.code, caught.value.message) == (
                "resource_exhausted",
                f"the answer has more than {answers.MAX_FIELDS} fields",
            )
            assert pug.activity.feed(distinct_id="user_42").events == []
        finally:
            pug.close()
