"""The caches that read events (the wire reader's, the fake's scanner's) hold at most their
byte bounds, measured as what is reachable from them, after traffic that never repeats
itself: a new user and new property values in every event."""

from __future__ import annotations

import os

import pytest
from pug import BatchConfig, Pug
from pug._wire import reader
from pug.devserver import dispatch
from pug.devserver.dispatch import EventPrinter
from pug.testing import InMemoryTransport
from pug.testing.fake import ingest, server
from pug.transports.base import BATCH_CREATE

from tests.support.memory import deep_size
from tests.unit.test_fake_store_bound import sdk_batches

# A cache is checked before each entry goes in: it may hold one entry past its bound.
ONE_ENTRY = 8 * 1024


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    return sdk_batches(30_000, size=1000)


def test_the_wire_reader_s_caches_stay_within_their_bounds(bodies: list[bytes]) -> None:
    largest = {"tails": 0, "entries": 0}
    for body in bodies:
        reader.read_batch(body)
        largest["tails"] = max(largest["tails"], deep_size(reader._tails))
        largest["entries"] = max(largest["entries"], deep_size(reader._entries))
    assert largest["tails"] <= reader._TAIL_CACHE_BYTES + ONE_ENTRY
    assert largest["entries"] <= reader._ENTRY_CACHE_BYTES + ONE_ENTRY
    assert largest["tails"] > reader._TAIL_CACHE_BYTES // 2  # they were filled


def test_the_scanner_s_caches_stay_within_their_bounds(bodies: list[bytes]) -> None:
    scanner = server._scanner()
    assert scanner is not None
    largest = 0
    for body in bodies:
        assert scanner.scan(body) is not None
        judged = [scanner._kinds, scanner._sessions, scanner._auto, scanner._custom]
        caches = [*(j.passed for j in judged), scanner._middles, scanner._layouts, scanner._heads]
        largest = max(largest, *map(deep_size, caches))
    assert ingest._CACHE_BYTES // 2 < largest <= ingest._CACHE_BYTES + ONE_ENTRY


def test_the_scanner_s_shapes_stay_within_their_bound() -> None:
    # Events of ever other lengths (properties of 0 to 1 900 characters in all, one more
    # each time), each length twice in a row with another user and value: a shape for
    # each, until the cache is full.
    transport = InMemoryTransport()
    client = Pug(api_key="prv_bound", transport=transport, batch=BatchConfig(max_size=1000))
    for i in range(40_000):
        length = i // 2 % 1900
        properties: dict[str, object] = {
            f"k{j:02d}": "v" * min(99, max(0, length - 99 * j)) for j in range(20)
        }
        properties["n"] = float(i)
        client.track(f"user_{i % 2}", "order.completed", properties)
    client.close()
    scanner = server._scanner()
    assert scanner is not None
    largest = 0
    for body in [body for method, body in transport.requests if method == BATCH_CREATE]:
        assert scanner.scan(body) is not None
        largest = max(largest, deep_size(scanner._shapes))
    assert ingest._CACHE_BYTES // 2 < largest <= ingest._CACHE_BYTES + ONE_ENTRY


def test_the_printer_s_fragments_stay_within_their_bound(bodies: list[bytes]) -> None:
    printer = EventPrinter(open(os.devnull, "w"), None, lines_per_second=0)  # noqa: SIM115
    scanner = server._scanner()
    assert scanner is not None
    largest = 0
    for body in bodies[:10]:
        arrivals = scanner.scan(body)
        assert arrivals is not None
        printer(arrivals)
        largest = max(largest, deep_size(printer._fragments))
    printer.out.close()
    assert dispatch._FRAGMENTS_BYTES // 2 < largest <= dispatch._FRAGMENTS_BYTES + ONE_ENTRY
