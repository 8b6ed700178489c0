"""End-to-end tests of the Connect and gRPC transports against independent servers.

The servers (tests/support/servers.py) are other people's implementations of the protocols:
`connectrpc` (Connect over HTTP/1.1, what a Pug server speaks on any port) and Google's
`grpcio` (gRPC over h2c and TLS). They decode with Google protobuf classes compiled from
catalog/proto, so every assertion about what arrived is made on an independent decoding.

Each test drives the public client (`Pug`) or a transport directly, and waits only on
real signals: `flush()` / `close()` block until delivery or dead-lettering, and
`on_error` has run by the time they return.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import random
import urllib.parse
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pug
import pytest
import trustme
from accounting import DeadLetters
from google.protobuf import json_format
from google.protobuf.message import Message
from protoc_helpers import GoogleMessages
from pug import Pug, PugError, RetryPolicy
from pug.config import PERMANENT_CODES
from pug.events import Purchase
from pug.transports.base import BATCH_CREATE, IDENTIFY
from pug.transports.connect import ConnectTransport, error_from_json
from pug.transports.grpc import GrpcTransport
from servers import (
    LIST,
    ConnectServer,
    FakePug,
    GrpcServer,
    RecordingHTTPServer,
    Refusal,
    closed_port,
)

API_KEY = "prv_test_key"
USER_AGENT = f"pug-python/{pug.__version__}"
# Everything here is delivered in well under a second; this only bounds a failure.
DELIVERY_TIMEOUT = 3.0
UTC = datetime.UTC

BOTH = ["connect", "grpc"]
WITH_TLS = ["connect", "connect-tls", "grpc", "grpc-tls"]

# --- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca_file: str  # the test CA, what the SDK is told to trust
    server_pem: str  # the server's key and certificate chain, one PEM file
    key_and_chain: tuple[bytes, bytes]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throwaway CA and a server certificate for 127.0.0.1, made by trustme."""
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    return Tls(
        str(directory / "ca.pem"),
        str(directory / "server.pem"),
        (cert.private_key_pem.bytes(), chain),
    )


@pytest.fixture(scope="module")
def connect_server(google_pb2: GoogleMessages) -> Iterator[ConnectServer]:
    with ConnectServer(FakePug(google_pb2)) as server:
        yield server


@pytest.fixture(scope="module")
def connect_tls_server(google_pb2: GoogleMessages, tls: Tls) -> Iterator[ConnectServer]:
    with ConnectServer(FakePug(google_pb2), certfile=tls.server_pem) as server:
        yield server


@pytest.fixture(scope="module")
def grpc_server(google_pb2: GoogleMessages, tls: Tls) -> Iterator[GrpcServer]:
    with GrpcServer(FakePug(google_pb2), tls_key_and_chain=tls.key_and_chain) as server:
        yield server


AnyTransport = ConnectTransport | GrpcTransport


@dataclass(frozen=True)
class Target:
    """Where a test sends: the protocol, the server's URL and its scripted `FakePug`."""

    flavor: str  # "connect", "connect-tls", "grpc" or "grpc-tls"
    url: str
    fake: FakePug
    ca_file: str | None  # set for the TLS flavors

    @property
    def protocol(self) -> str:
        return self.flavor.removesuffix("-tls")

    def transport(self, api_key: str = API_KEY) -> AnyTransport:
        """A transport instance for this server (with the test CA for TLS)."""
        kind = ConnectTransport if self.protocol == "connect" else GrpcTransport
        return kind(self.url, api_key, ca_bundle=self.ca_file)

    def pug_transport(self) -> Any:
        """What to give `Pug(transport=...)`: the name, or an instance that trusts the CA."""
        return self.transport() if self.ca_file else self.protocol


@pytest.fixture
def target(request: pytest.FixtureRequest, tls: Tls) -> Target:
    """The server named by the test's parameter, with a clean record and script."""
    flavor: str = request.param
    if flavor.startswith("connect"):
        server: Any = request.getfixturevalue(
            "connect_tls_server" if flavor.endswith("-tls") else "connect_server"
        )
        url = server.url
    else:
        server = request.getfixturevalue("grpc_server")
        url = server.tls_url if flavor.endswith("-tls") else server.url
    server.fake.reset()
    return Target(flavor, url, server.fake, tls.ca_file if flavor.endswith("-tls") else None)


# --- client helpers ---------------------------------------------------------------------------


MakePug = Callable[..., Pug]


@pytest.fixture
def make_pug() -> Iterator[MakePug]:
    """Clients with a fast retry (≤ 10 ms backoff); all closed when the test ends."""
    made: list[Pug] = []

    def make(base_url: str, transport: Any, **options: Any) -> Pug:
        options.setdefault("retry", RetryPolicy(base=0.001, cap=0.01, random=random.Random(0)))
        client = Pug(
            api_key=options.pop("api_key", API_KEY),
            base_url=base_url,
            transport=transport,
            **options,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(1.0)


def pug_for(make_pug: MakePug, target: Target, **options: Any) -> Pug:
    return make_pug(target.url, target.pug_transport(), **options)


def track_three(client: Pug) -> None:
    client.track("user_1", "signed_up", {"plan": "pro"})
    client.track("user_1", "page_viewed", {"path": "/pricing"})
    client.track("user_2", Purchase(product_id="p1", amount=9.5, currency="EUR"))


def event_ids(events: list[Any]) -> list[str]:
    return [event.event_id for event in events]


class ObservedTransport:
    """Wraps a transport and keeps every PugError it raised, as the client's worker saw it."""

    def __init__(self, inner: AnyTransport) -> None:
        self.inner = inner
        self.errors: list[PugError] = []

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        try:
            return await self.inner.unary(method, request, timeout=timeout)
        except PugError as error:
            self.errors.append(error)
            raise

    def stream(self, method: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        return self.inner.stream(method, request, timeout=timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def reset_after_fork(self) -> None:
        self.inner.reset_after_fork()


def observed_pug(
    make_pug: MakePug, target: Target, **options: Any
) -> tuple[Pug, ObservedTransport]:
    transport = ObservedTransport(target.transport())
    return make_pug(target.url, transport, **options), transport


def call_unary(make: Callable[[], AnyTransport], method: str, body: bytes) -> bytes | PugError:
    """One unary call on a fresh loop, with the transport made on that loop (as the
    worker does); the response, or the PugError raised."""

    async def call() -> bytes | PugError:
        transport = make()
        try:
            return await transport.unary(method, body, timeout=5)
        except PugError as error:
            return error
        finally:
            await transport.aclose()

    return asyncio.run(call())


# --- decoding what arrived --------------------------------------------------------------------


def plain(value: Message) -> tuple[str | None, Any]:
    """A PropertyValue as (variant, Python value); timestamps as aware datetimes."""
    variant = value.WhichOneof("value")
    if variant == "timestamp_value":
        return variant, value.timestamp_value.ToDatetime(tzinfo=UTC)
    return variant, getattr(value, variant) if variant else None


def plain_map(values: Any) -> dict[str, tuple[str | None, Any]]:
    return {key: plain(value) for key, value in values.items()}


def occur_datetime(event: Message) -> datetime.datetime:
    return event.occur_time.ToDatetime(tzinfo=UTC)


def assert_uuid7_of(event: Message) -> None:
    """`event_id` is a lowercase RFC 9562 UUIDv7 whose timestamp is `occur_time` to the ms."""
    parsed = uuid.UUID(event.event_id)
    assert str(parsed) == event.event_id, "canonical lowercase form"
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    occur_ms = event.occur_time.seconds * 1000 + event.occur_time.nanos // 1_000_000
    assert parsed.int >> 80 == occur_ms  # the top 48 bits: Unix time in ms


# === 1. what arrives, field by field ==========================================================


@pytest.mark.parametrize("target", WITH_TLS, indirect=True)
def test_tracked_events_and_identify_arrive_field_by_field(
    target: Target, make_pug: MakePug
) -> None:
    client = pug_for(make_pug, target)
    other_session = "0190a9d2-7a00-7cc1-8a5b-2f0e6c1d9e01"
    signed_up_at = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    occurred = datetime.datetime(2024, 5, 6, 7, 9, 0, 654321, tzinfo=UTC)
    # Events are stamped to the millisecond, like the official SDKs (WIRE.md).
    now = datetime.datetime.now(UTC)
    before = now.replace(microsecond=now.microsecond // 1000 * 1000)

    client.track("user_1", Purchase(product_id="p1", amount=49.0, currency="USD", quantity=2))
    client.track(
        "user_1",
        "signed_up",
        {"plan": "pro", "seats": 3, "ratio": 0.25, "trial": True, "started_at": signed_up_at},
        timestamp=occurred,
    )
    client.track("user_2", "page_viewed", {"big": -(2**40), "empty": ""}, session_id=other_session)
    client.identify(
        "user_1",
        {"plan": "pro", "age": 36, "tags": ["a", "b"], "address": {"city": "Paris"}, "x": None},
        anonymous_id="anon-123",
        device_id="device-9",
    )
    assert client.flush(DELIVERY_TIMEOUT)
    after = datetime.datetime.now(UTC)

    events = target.fake.delivered_events()
    assert [e.kind for e in events] == ["purchase", "signed_up", "page_viewed"]
    assert [e.distinct_id for e in events] == ["user_1", "user_1", "user_2"]
    assert [e.session_id for e in events] == [client.session_id, client.session_id, other_session]
    assert len(set(event_ids(events))) == 3
    for event in events:
        assert_uuid7_of(event)
        assert plain_map(event.auto_properties) == {
            "$lib": ("string_value", "pug-python"),
            "$sdkVersion": ("string_value", pug.__version__),
            "$platform": ("string_value", "server"),
        }
        assert not event.HasField("cookieless")

    purchase, signed_up, page_viewed = events
    assert before <= occur_datetime(purchase) <= after
    assert occur_datetime(signed_up) == occurred  # microseconds kept
    # Typed fields under their camelCase names, variant by declared type.
    assert plain_map(purchase.custom_properties) == {
        "productId": ("string_value", "p1"),
        "amount": ("double_value", 49.0),
        "currency": ("string_value", "USD"),
        "quantity": ("int_value", 2),
    }
    assert plain_map(signed_up.custom_properties) == {
        "plan": ("string_value", "pro"),
        "seats": ("int_value", 3),
        "ratio": ("double_value", 0.25),
        "trial": ("bool_value", True),
        "started_at": ("timestamp_value", signed_up_at),
    }
    assert plain_map(page_viewed.custom_properties) == {
        "big": ("int_value", -(2**40)),
        "empty": ("string_value", ""),
    }

    (identify,) = target.fake.calls(IDENTIFY)
    request = identify.request
    assert request is not None
    assert (request.external_id, request.anonymous_id, request.device_id) == (
        "user_1",
        "anon-123",
        "device-9",
    )
    # A Struct: numbers are doubles, nesting stays structured, null stays null.
    assert json_format.MessageToDict(request.traits) == {
        "plan": "pro",
        "age": 36.0,
        "tags": ["a", "b"],
        "address": {"city": "Paris"},
        "x": None,
    }
    assert request.traits.fields["age"].WhichOneof("kind") == "number_value"


# === 2. gzip ===================================================================================


@pytest.mark.parametrize("target", ["connect"], indirect=True)
def test_connect_gzips_a_large_batch(target: Target, make_pug: MakePug) -> None:
    client = pug_for(make_pug, target)
    filler = "x" * 400  # 60 events of ~500 bytes: well over the 16 KiB threshold
    for n in range(60):
        client.track("user_1", "bulk", {"n": n, "filler": filler})
    assert client.flush(DELIVERY_TIMEOUT)

    calls = target.fake.calls(BATCH_CREATE)
    assert all(call.headers.get("content-encoding") == "gzip" for call in calls)
    # connectrpc decompressed the body: the events decode whole, in order.
    events = target.fake.delivered_events()
    assert [plain(e.custom_properties["n"]) for e in events] == [
        ("int_value", n) for n in range(60)
    ]
    assert all(e.custom_properties["filler"].string_value == filler for e in events)
    # What travelled was the compressed form (repetitive text shrinks a lot).
    uncompressed = sum(len(call.request.SerializeToString()) for call in calls)  # type: ignore[union-attr]
    sent = sum(int(call.headers["content-length"]) for call in calls)
    assert uncompressed > 16 * 1024
    assert sent < uncompressed / 4


@pytest.mark.parametrize("target", ["connect"], indirect=True)
def test_connect_does_not_gzip_a_small_batch(target: Target, make_pug: MakePug) -> None:
    client = pug_for(make_pug, target)
    client.track("user_1", "small")
    assert client.flush(DELIVERY_TIMEOUT)
    (call,) = target.fake.calls(BATCH_CREATE)
    assert "content-encoding" not in call.headers


# === 3. server streaming =======================================================================


def list_pages(messages: GoogleMessages) -> list[Message]:
    """Three ListResponse pages of a few profiles each (timestamps, a Struct, a nested
    message: enough for a wrong frame boundary to show)."""
    response, profile = (
        messages["shared.profiles.v1.ListResponse"],
        messages["shared.profiles.v1.Profile"],
    )
    pages = []
    for page in range(3):
        profiles = []
        for n in range(page + 2):
            p = profile(id=f"prof-{page}-{n}", external_id=f"user-{page}-{n}", project_id="proj")
            p.create_time.FromDatetime(datetime.datetime(2024, 1, 1 + n, tzinfo=UTC))
            p.properties.update({"plan": "pro", "visits": n})
            p.activity.total_events = 10 * n
            profiles.append(p)
        pages.append(response(profiles=profiles, next_page_token=f"token-{page + 1}"))
    return pages


def list_request(messages: GoogleMessages) -> bytes:
    return messages["shared.profiles.v1.ListRequest"](page_token="token-0").SerializeToString()


def stream_list(target: Target, request: bytes) -> tuple[list[bytes], PugError | None]:
    """Read the whole List stream on a fresh loop (the transport made on it): the messages
    received, and the PugError that ended the stream, if any."""

    async def read() -> tuple[list[bytes], PugError | None]:
        transport = target.transport()
        received: list[bytes] = []
        try:
            async for message in transport.stream(LIST, request, timeout=5):
                received.append(message)
        except PugError as error:
            return received, error
        finally:
            await transport.aclose()
        return received, None

    return asyncio.run(read())


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_streamed_list_arrives_whole_and_in_order(
    target: Target, google_pb2: GoogleMessages
) -> None:
    target.fake.list_pages = list_pages(google_pb2)

    received, error = stream_list(target, list_request(google_pb2))

    assert error is None
    response = google_pb2["shared.profiles.v1.ListResponse"]
    assert [response.FromString(m) for m in received] == target.fake.list_pages
    (call,) = target.fake.calls(LIST)
    assert call.request.page_token == "token-0"  # type: ignore[union-attr]
    if target.protocol == "connect":
        assert call.headers["content-type"] == "application/connect+proto"


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_stream_error_mid_stream_raises_the_servers_code(
    target: Target, google_pb2: GoogleMessages
) -> None:
    pages = list_pages(google_pb2)
    target.fake.list_pages = pages
    target.fake.list_error = (2, Refusal("internal", "storage went away"))

    received, error = stream_list(target, list_request(google_pb2))

    response = google_pb2["shared.profiles.v1.ListResponse"]
    assert [response.FromString(m) for m in received] == pages[:2]
    assert isinstance(error, PugError)
    assert (error.code, error.message) == ("internal", "storage went away")


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_stream_refused_before_any_message(target: Target, google_pb2: GoogleMessages) -> None:
    target.fake.list_pages = list_pages(google_pb2)
    target.fake.required_key = "prv_the_right_key"

    received, error = stream_list(target, list_request(google_pb2))

    assert received == []
    assert isinstance(error, PugError)
    assert error.code == "unauthenticated"


# === 4.-6. permanent and transient failures ====================================================


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_wrong_key_dead_letters_without_retry(target: Target, make_pug: MakePug) -> None:
    target.fake.required_key = "prv_the_right_key"
    dead = DeadLetters()
    client = pug_for(make_pug, target, on_error=dead)

    track_three(client)
    assert client.flush(DELIVERY_TIMEOUT)

    (attempt,) = target.fake.calls(BATCH_CREATE)  # permanent: never retried
    assert attempt.outcome == "unauthenticated"
    (error, items), *others = dead.calls
    assert others == []
    assert error.code == "unauthenticated"
    assert event_ids(items) == event_ids(attempt.request.events)  # type: ignore[union-attr]
    assert [item.kind for item in items] == ["signed_up", "page_viewed", "purchase"]
    assert client.stats().retries == 0
    assert client.stats().failed == 3


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_unavailable_twice_then_ok_delivers_each_event_once(
    target: Target, make_pug: MakePug
) -> None:
    target.fake.fail_next(2, "unavailable", "overloaded")
    dead = DeadLetters()
    client, transport = observed_pug(make_pug, target, on_error=dead)

    track_three(client)
    assert client.flush(DELIVERY_TIMEOUT)

    attempts = target.fake.calls(BATCH_CREATE)
    assert [a.outcome for a in attempts] == ["unavailable", "unavailable", "ok"]
    # Every attempt carries the very same events: ids and times are fixed at track().
    first, *retries = [list(a.request.events) for a in attempts]  # type: ignore[union-attr]
    assert all(events == first for events in retries)
    delivered = target.fake.delivered_events()
    assert len(set(event_ids(delivered))) == len(delivered) == 3
    assert dead.calls == []
    assert [(e.code, e.message) for e in transport.errors] == [("unavailable", "overloaded")] * 2
    assert client.stats().sent == 3
    assert client.stats().retries == 2


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_server_slower_than_the_timeout_is_retried(target: Target, make_pug: MakePug) -> None:
    target.fake.stall_next(2)
    dead = DeadLetters()
    client, transport = observed_pug(make_pug, target, timeout=0.3, on_error=dead)

    track_three(client)
    assert client.flush(DELIVERY_TIMEOUT)

    attempts = target.fake.calls(BATCH_CREATE)
    assert [a.outcome for a in attempts] == ["stall", "stall", "ok"]
    assert all(a.timeout is not None and a.timeout <= 0.3 for a in attempts)
    assert len(target.fake.delivered_events()) == 3
    assert dead.calls == []
    # Whichever side noticed the deadline first (the server answering, or the client
    # giving up), the code is the transient deadline_exceeded.
    assert [e.code for e in transport.errors] == ["deadline_exceeded"] * 2
    assert client.stats().retries == 2


# === 7. a proxy's HTTP 503 =====================================================================


@pytest.mark.parametrize("target", ["connect"], indirect=True)
def test_http_503_html_is_unavailable_and_retried(target: Target, make_pug: MakePug) -> None:
    target.fake.answer_503_next(2)
    dead = DeadLetters()
    client, transport = observed_pug(make_pug, target, on_error=dead)

    track_three(client)
    assert client.flush(DELIVERY_TIMEOUT)

    attempts = target.fake.calls(BATCH_CREATE)
    assert [a.outcome for a in attempts] == ["http 503", "http 503", "ok"]
    assert len(target.fake.delivered_events()) == 3
    assert dead.calls == []
    assert [e.code for e in transport.errors] == ["unavailable"] * 2
    assert all(e.message.startswith("HTTP 503") for e in transport.errors)
    assert client.stats().retries == 2


@pytest.mark.parametrize("target", ["connect"], indirect=True)
def test_http_503_html_raised_by_the_transport(target: Target, google_pb2: GoogleMessages) -> None:
    target.fake.answer_503_next(1)
    body = google_pb2["sdk.events.v1.BatchCreateRequest"]().SerializeToString()

    error = call_unary(target.transport, BATCH_CREATE, body)

    assert isinstance(error, PugError)
    assert error.code == "unavailable"
    assert "HTTP 503" in error.message
    assert "Service Unavailable" in error.message  # a snippet of the page, for the logs


def test_error_from_json_maps_a_non_connect_body_by_status() -> None:
    page = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
    error = error_from_json(page, 503)
    assert error.code == "unavailable"
    assert error.message.startswith("HTTP 503")
    # A Connect error body wins over the status.
    error = error_from_json(b'{"code": "resource_exhausted", "message": "slow down"}', 503)
    assert (error.code, error.message) == ("resource_exhausted", "slow down")


# === 8. nobody listening =======================================================================


@pytest.mark.parametrize("protocol", ["connect", "grpc"])
def test_closed_port_is_retried_then_dead_lettered_at_close(
    protocol: str, make_pug: MakePug
) -> None:
    dead = DeadLetters()
    client = make_pug(f"http://127.0.0.1:{closed_port()}", protocol, on_error=dead)

    track_three(client)
    # flush() waits while the worker retries; it cannot deliver, so it times out.
    assert not client.flush(0.3)
    assert client.stats().retries > 0
    client.close(1.0)

    (error, items), *others = dead.calls
    assert others == []
    assert error.code not in PERMANENT_CODES
    assert error.code in ("unavailable", "deadline_exceeded")
    assert [item.kind for item in items] == ["signed_up", "page_viewed", "purchase"]
    assert client.stats().failed == 3


# === 9. headers ================================================================================


@pytest.mark.parametrize("target", BOTH, indirect=True)
def test_request_headers(target: Target, make_pug: MakePug) -> None:
    client = pug_for(make_pug, target, timeout=2.5)
    client.track("user_1", "signed_up")
    assert client.flush(DELIVERY_TIMEOUT)

    (call,) = target.fake.calls(BATCH_CREATE)
    headers = call.headers
    assert headers["x-api-key"] == API_KEY
    assert call.timeout is not None
    if target.protocol == "connect":
        assert headers["content-type"] == "application/proto"
        assert headers["connect-protocol-version"] == "1"
        assert headers["connect-timeout-ms"] == "2500"
        assert USER_AGENT in headers["user-agent"]
    else:
        # grpcio accepts only application/grpc[+proto] and never shows content-type:
        # that the call reached the handler is the check. grpc-timeout becomes the
        # deadline, which the handler sees as the time remaining.
        assert 1.5 < call.timeout <= 2.5


@pytest.mark.parametrize("target", ["grpc"], indirect=True)
def test_grpc_user_agent_names_the_sdk(target: Target) -> None:
    body = target.fake.methods[BATCH_CREATE].input().SerializeToString()

    assert isinstance(call_unary(target.transport, BATCH_CREATE, body), bytes)
    (seen,) = target.fake.calls(BATCH_CREATE)
    assert USER_AGENT in seen.headers["user-agent"]


# === 10. base_url ==============================================================================


@pytest.mark.parametrize("transport", ["connect", "grpc"])
@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("ftp://x", "must start with http:// or https://"),
        ("http://", "no host"),
        ("https://host:notaport", "invalid port"),
        ("https://user:pw@host", "must not carry credentials"),
    ],
)
def test_bad_base_url_is_refused_at_construction(
    transport: str, base_url: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as raised:
        Pug(api_key="prv_x", base_url=base_url, transport=transport)
    assert "pw" not in str(raised.value)  # never echo credentials


@pytest.mark.parametrize("suffix", ["/prefix", "/prefix/"])
def test_connect_base_url_path_prefix(suffix: str, make_pug: MakePug) -> None:
    with RecordingHTTPServer() as server:
        client = make_pug(server.url + suffix, "connect")
        client.track("user_1", "signed_up")
        assert client.flush(DELIVERY_TIMEOUT)
        client.close(1.0)
    assert server.paths == [f"/prefix/{BATCH_CREATE}"]


# === TLS =======================================================================================


@pytest.mark.parametrize("target", ["connect-tls", "grpc-tls"], indirect=True)
def test_tls_server_is_refused_without_its_ca(target: Target, google_pb2: GoogleMessages) -> None:
    # The default trust store does not know the test CA: ca_bundle is what made TLS work.
    untrusting = replace(target, ca_file=None)
    body = google_pb2["sdk.events.v1.BatchCreateRequest"]().SerializeToString()

    error = call_unary(untrusting.transport, BATCH_CREATE, body)

    assert isinstance(error, PugError)
    assert error.code == "unavailable"
    assert "CERTIFICATE_VERIFY_FAILED" in error.message
    assert target.fake.calls() == []


@pytest.mark.parametrize("target", ["connect-tls", "grpc-tls"], indirect=True)
def test_close_releases_tls_connections(target: Target, make_pug: MakePug) -> None:
    dead = DeadLetters()
    port = urllib.parse.urlsplit(target.url).port
    gc.collect()  # what earlier tests left behind is not this test's business
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        client = pug_for(make_pug, target, on_error=dead)
        client.track("user_1", "signed_up")
        client.close(DELIVERY_TIMEOUT)  # one attempt, then the worker's loop stops
        gc.collect()  # a socket nobody closed warns when it is collected
    assert dead.calls == []
    assert len(target.fake.delivered_events()) == 1
    leaked = [
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning) and f"'127.0.0.1', {port})" in str(w.message)
    ]
    assert leaked == []
