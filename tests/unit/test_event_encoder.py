"""EventEncoder: its caches stay bounded (by entries and by bytes) whatever it is given,
and it is the only place in the runtime that frames an event."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pug._ingest import encode
from pug._ingest.encode import EventEncoder
from pug._wire import protobuf
from pug.event import Variant

SESSION = "0190a9d2-7a00-7cc1-8a5b-2f0e6c1d9e01"
RUNTIME = Path(encode.__file__).resolve().parents[1]  # runtime/pug


def new_encoder() -> EventEncoder:
    return EventEncoder(SESSION, {"$lib": "pug-python"})


def test_caches_stay_within_their_entry_and_byte_bounds() -> None:
    encoder = new_encoder()
    # Every cache at once: distinct ids and kinds (tails), keys (key parts), values
    # (entries) and lengths (frames), far past every bound, with values as long as kept.
    for i in range(3 * encode.KINDS_HELD):
        props = {f"k{i % 5000}": f"{i:x}".rjust(encode.LONG_STRING, "v"), "n": float(i) + 0.5}
        body = encoder.encode_now(f"user_{i}", f"kind.{i % 97}", props)
        assert body is not None
    limits = encode.ENTRIES_HELD + 2 * encode.KEY_PARTS_HELD
    limits += encode.FRAMES_HELD + 2 * encode.KINDS_HELD
    assert encoder.cached_entries() <= limits
    # Each encoding kept is at most CACHED_BYTES_MAX (and its key no longer): a few MiB.
    assert encoder.cache_bytes() <= 2 * encode.CACHED_BYTES_MAX * limits
    assert encoder.cache_bytes() < 16 * 1024 * 1024


def test_what_is_too_large_to_keep_is_encoded_but_not_cached() -> None:
    encoder = new_encoder()
    huge_key = "k" * (2 * encode.CACHED_BYTES_MAX)
    long_value = "v" * (encode.LONG_STRING + 1)
    huge_id = "u" * (2 * encode.CACHED_BYTES_MAX)
    before = encoder.cached_entries()
    for _ in range(3):
        assert encoder.encode_now(huge_id, "kind.x", {huge_key: 1}) is not None
    # One frame length and the kind's tail; nothing of the huge key or the distinct id.
    assert encoder.cached_entries() == before + 2
    assert encoder.custom_properties({"a": long_value}) == protobuf.entry(
        protobuf.CUSTOM, "a", Variant.STRING, long_value
    )
    assert encoder.cached_entries() == before + 3  # the key field of "a", not its value


def test_cached_entries_are_the_uncached_bytes() -> None:
    encoder = new_encoder()
    props = {"s": "x", "i": 3, "f": 0.25, "b": True, "z": -0.0}
    first = encoder.custom_properties(props)
    assert encoder.custom_properties(props) == first  # from the caches
    expected = b"".join(
        protobuf.entry(protobuf.CUSTOM, k, v, props[k])
        for k, v in [("s", Variant.STRING), ("i", Variant.INT), ("f", Variant.DOUBLE),
                     ("b", Variant.BOOL), ("z", Variant.DOUBLE)]
    )  # fmt: skip
    assert first == expected


def test_a_new_session_starts_the_heads_again() -> None:
    encoder = new_encoder()
    body = encoder.encode_now("user_1", "kind.x", None)
    assert body is not None and SESSION.encode() in body
    other = "0190a9d2-7a00-7cc1-8a5b-2f0e6c1d9e02"
    encoder.after_fork_in_child(other)
    body = encoder.encode_now("user_1", "kind.x", None)
    assert body is not None and other.encode() in body and SESSION.encode() not in body


# Names whose use frames an event: the framing tag, and the writer's frame/event functions.
FRAMING = {"EVENTS_TAG", "frame", "event", "EVENT_ID_PREFIX"}
# The encoder frames; the writer defines.
ALLOWED = {"_ingest/encode.py", "_wire/protobuf.py"}


@pytest.mark.parametrize(
    "path",
    sorted(p for p in RUNTIME.rglob("*.py") if str(p.relative_to(RUNTIME)) not in ALLOWED),
    ids=lambda p: str(p.relative_to(RUNTIME)),
)
def test_only_the_encoder_frames_events(path: Path) -> None:
    tree = ast.parse(path.read_text())
    protobuf_names = {"protobuf", "pb", "wire"}  # how modules name the writer
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in protobuf_names
    }
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "pug._wire.protobuf"
        for alias in node.names
    }
    assert not (used | imported) & FRAMING


def test_a_key_whose_values_do_not_repeat_turns_volatile_and_keeps_none() -> None:
    encoder = new_encoder()
    steady = {"currency": "USD", "gift": True}
    for i in range(encode.VOLATILE_AFTER + 1):
        props = {"order": f"o{i}", "amount": i + 0.5, "n": 10**6 + i, **steady}
        assert encoder.custom_properties(props)
    held = encoder.cached_entries()
    # Past the bound each new value is written, not kept; the steady keys stay cached.
    for i in range(1000, 3000):
        props = {"order": f"o{i}", "amount": i + 0.5, "n": 10**6 + i, **steady}
        assert encoder.custom_properties(props)
    assert encoder.cached_entries() == held
    # What a volatile key writes is the generic encoder's bytes, for every kind of value:
    # short and long strings, lone surrogates, floats (zeros, huge), ints; and values that
    # cannot be sent are left out, alone.
    cases: list[tuple[str, object, Variant]] = [
        ("order", "o-new", Variant.STRING),
        ("order", "x" * (encode.LONG_STRING + 1), Variant.STRING),
        ("order", "\ud800", Variant.STRING),
        ("amount", 1e300, Variant.DOUBLE),
        ("amount", -0.0, Variant.DOUBLE),
        ("amount", 0.0, Variant.DOUBLE),
        ("n", 7, Variant.INT),
    ]
    for key, value, variant in cases:
        assert encoder.custom_properties({key: value}) == protobuf.entry(
            protobuf.CUSTOM, key, variant, value
        ), (key, value)
    assert encoder.custom_properties({"amount": float("nan"), "currency": "USD"}) == (
        protobuf.entry(protobuf.CUSTOM, "currency", Variant.STRING, "USD")
    )
    assert encoder.cached_entries() == held


def test_a_kinds_last_distinct_id_never_leaks_into_another_ids_event() -> None:
    # The head (distinct id and tail) is remembered per kind for its last distinct id;
    # ids alternating, repeating, long, non-ASCII or equal but not the same object must
    # each give the bytes of the checked path (`encode`, which writes every field anew).
    encoder = new_encoder()
    long_id = "u" * (encode.LAST_ID_BYTES + 1)
    ids = ["a", "b", "a", "a", long_id, long_id, "é", "".join(["a"]), "b", "\ud800"]
    kinds = ["kind.x", "kind.y", "kind.x"]
    for i, distinct_id in enumerate(ids * 2):
        kind = kinds[i % len(kinds)]
        body = encoder.encode_now(distinct_id, kind, {"n": i})
        assert body is not None
        event_id, seconds, nanos = _identity(body)
        expected = encoder.encode(event_id, seconds, nanos, distinct_id, kind, SESSION,
                                  {"n": (Variant.INT, i)})  # fmt: skip
        assert body == expected, (distinct_id, kind)


def _identity(framed: bytes) -> tuple[str, int, int]:
    """(event_id, seconds, nanos) of a framed event, read with the SDK's reader."""
    body = protobuf.unframe(framed)
    fields = dict(protobuf.read_fields(body))
    occur_field = fields[6]
    assert isinstance(occur_field, bytes)
    occur = dict(protobuf.read_fields(occur_field))
    event_id = fields[1]
    assert isinstance(event_id, bytes)
    return event_id.decode(), int(occur.get(1, 0)), int(occur.get(2, 0))
