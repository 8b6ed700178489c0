"""Shared fixtures: catalog/proto compiled once per session with protoc (grpc_tools).

The suite is split by what a test needs: `unit/` runs in-process, `e2e/` runs real servers,
processes or sockets on 127.0.0.1 (marked `e2e` here; the test command runs both), and
`support/` holds the servers and helpers both import (on sys.path through pyproject's
`pythonpath`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pug.events  # noqa: F401  (the well-known kinds: registered before any snapshot below)
import pytest
from google.protobuf import descriptor_pb2
from hostile import Handler, Hostile
from protoc_helpers import GoogleMessages, build_pool, compile_descriptor_set
from pug import Pug
from pug.event import REGISTRY
from pug.testing import InMemoryTransport
from servers import ConnectServer, FakePug, GrpcServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _kinds_registered_by_a_test_stay_its_own() -> Iterator[None]:
    """A test that defines or generates event classes registers their kinds process-wide;
    put the registry back afterwards, so a custom kind in another test stays custom."""
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


@pytest.fixture(scope="session")
def mypy_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the tests that run mypy: what their programs import (pug, the
    standard library) is analysed once a session."""
    return tmp_path_factory.mktemp("mypy_cache")


@pytest.fixture(scope="session")
def proto_descriptor_set(
    tmp_path_factory: pytest.TempPathFactory,
) -> descriptor_pb2.FileDescriptorSet:
    """Every catalog/proto file plus its imports (google/protobuf/*), as protoc sees them."""
    out_file = tmp_path_factory.mktemp("protoc") / "catalog.binpb"
    return compile_descriptor_set(out_file)


@pytest.fixture(scope="session")
def google_pb2(proto_descriptor_set: descriptor_pb2.FileDescriptorSet) -> GoogleMessages:
    """Google's message classes for our protos, built in a private descriptor pool."""
    return GoogleMessages(build_pool(proto_descriptor_set))


# The client most tests drive: a Pug sending to an in-memory transport they can inspect.
@pytest.fixture
def transport() -> InMemoryTransport:
    return InMemoryTransport()


@pytest.fixture
def client(transport: InMemoryTransport) -> Iterator[Pug]:
    pug_client = Pug(api_key="prv_test", transport=transport)
    yield pug_client
    pug_client.close()


# A Connect server (connectrpc under uvicorn, tests/support/servers.py) for the tests that
# count what real processes deliver: one for the session, its record and script reset for
# each test.
@pytest.fixture(scope="session")
def server(google_pb2: GoogleMessages) -> Iterator[ConnectServer]:
    with ConnectServer(FakePug(google_pb2)) as running:
        yield running


@pytest.fixture
def fake(server: ConnectServer) -> FakePug:
    server.fake.reset()
    return server.fake


# A Connect and a gRPC server (plain HTTP, h2c) for the read and stream tests: one of each
# per module (tests/e2e/test_transports_e2e.py has TLS ones of its own).
@pytest.fixture(scope="module")
def connect_server(google_pb2: GoogleMessages) -> Iterator[ConnectServer]:
    with ConnectServer(FakePug(google_pb2)) as server:
        yield server


@pytest.fixture(scope="module")
def grpc_server(google_pb2: GoogleMessages) -> Iterator[GrpcServer]:
    with GrpcServer(FakePug(google_pb2), tls_key_and_chain=None) as server:
        yield server


# Scripted hostile HTTP/1.1 servers (tests/support/hostile.py): `hostile(handler)` starts one on
# 127.0.0.1; every server a test started is stopped when it ends.
@pytest.fixture
def hostile() -> Iterator[Callable[[Handler], Hostile]]:
    servers: list[Hostile] = []

    def start(handler: Handler) -> Hostile:
        server = Hostile(handler).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()
