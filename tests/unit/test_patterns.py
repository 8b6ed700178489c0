"""Catalog and contract patterns are matched as the Pug server matches them: RE2, where `$`
is the end of the text. Python's `re` (and msgspec's `Meta(pattern=...)`, which uses it)
also lets `$` match before a final newline, so `currency="USD\\n"` would pass
`^[A-Z]{3}$` here and reject its whole batch there.

Every pattern goes through `pug_codegen.patterns` (the generator writes its translation
into the typed classes' Meta and encoders; the fake server compiles the contract's with it).
Checked here: every pattern of the catalog, through the typed class (`track(strict=True)`),
the generated encoder, a kind string, a user's generated module and FakePug; every pattern
of the contract through FakePug's matcher; and the translation against a table of RE2's
answers and, when `google-re2` is installed, against RE2 itself.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import msgspec.inspect
import pug.events  # noqa: F401  (registers the well-known events and their encoders)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pug import Pug, PugValidationError
from pug._wire.codegen_support import ENCODERS
from pug.event import PugEvent, event_class
from pug.proto.common.v1 import PropertyValue
from pug.proto.sdk.events.v1 import BatchCreateRequest, Event
from pug.rules import Pattern
from pug.testing import FakePug, InMemoryTransport
from pug.transports.base import BATCH_CREATE
from pug_codegen import catalog
from pug_codegen.catalog import CatalogError, Property
from pug_codegen.cli import main
from pug_codegen.patterns import UnsupportedPattern, compile_pattern, python_pattern
from test_codegen import load_module, write

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "catalog" / "contract" / "pug-wire-contract.json"

# A value each pattern matches (a new pattern in the catalog or contract needs one here).
MATCHING = {
    "^[A-Z]{3}$": "USD",
    "^[a-zA-Z0-9_.-]+$": "page.viewed",
    "^[a-zA-Z0-9_.-]*$": "page.viewed",
    "^\\$?[a-zA-Z0-9_-]+(\\.[a-zA-Z0-9_-]+)*$": "$lib.version",
    "^\\$?[a-zA-Z0-9_.-]+$": "$browser",
    "^\\$?[a-zA-Z0-9_.-]*$": "amount",
    "^[A-Za-z0-9_+/-]*$": "America/Argentina/Buenos_Aires",
    "^$|^anon-": "",
}


def catalog_properties() -> list[tuple[str, Property]]:
    """(kind, property) of every property with a pattern, among the SDK's events."""
    full = catalog.load(sorted((ROOT / "catalog" / "events").glob("*.yaml")))
    return [
        (e.kind, p)
        for e in full.filtered("server").events
        for p in e.properties
        if p.pattern is not None
    ]


def contract_patterns() -> list[tuple[str, str]]:
    """(where, pattern) of every `string.pattern` rule of the wire contract."""
    found = []

    def walk(messages: dict[str, Any], where: str) -> None:
        for name, message in messages.items():
            for f in message.get("fields", []):
                pattern = f.get("rules", {}).get("string", {}).get("pattern")
                if pattern is not None:
                    found.append((f"{where}:{name}.{f['name']}", pattern))
            walk(message.get("messages", {}), where)

    for file_name, contents in json.loads(CONTRACT.read_text())["files"].items():
        walk(contents.get("messages", {}), file_name)
    return found


CATALOG = catalog_properties()
CONTRACT_PATTERNS = contract_patterns()
CATALOG_IDS = [f"{kind}.{p.name}" for kind, p in CATALOG]


def test_the_catalog_and_contract_have_patterns_and_each_has_an_example() -> None:
    # 31 rules in the contract, 16 of them the currency fields the catalog has too.
    assert len(CATALOG) == 16 and len(CONTRACT_PATTERNS) == 31
    patterns = {p.pattern for _, p in CATALOG} | {p for _, p in CONTRACT_PATTERNS}
    assert patterns <= set(MATCHING), f"add a matching example for {patterns - set(MATCHING)}"
    for pattern in patterns:
        assert compile_pattern(pattern).search(MATCHING[pattern])


def required_fields(kind: str) -> dict[str, str]:
    """The required fields of `kind`'s class by wire name, set to a valid value."""
    cls = event_class(kind)
    assert cls is not None
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    # The catalog's required fields of events with patterns are plain strings.
    assert all(isinstance(f.type, msgspec.inspect.StrType) for f in info.fields if f.required)
    return {f.encode_name: "x" for f in info.fields if f.required}


def event_with(kind: str, prop: Property, value: str) -> PugEvent:
    """An instance of `kind`'s class, valid but for `prop` set to `value`."""
    cls = event_class(kind)
    assert cls is not None
    fields: dict[str, Any] = {prop.attr: value}
    for f in msgspec.structs.fields(cls):
        if f.required and f.name != prop.attr:
            fields[f.name] = "x"  # the catalog's required fields here are plain strings
    return cls(**fields)


@pytest.fixture
def strict_client() -> Iterator[Pug]:
    client = Pug(api_key="prv_test", transport=InMemoryTransport(), strict=True)
    yield client
    client.close()


@pytest.mark.parametrize(("kind", "prop"), CATALOG, ids=CATALOG_IDS)
def test_a_catalog_pattern_refuses_a_trailing_newline(
    strict_client: Pug, kind: str, prop: Property
) -> None:
    assert prop.pattern is not None
    good = MATCHING[prop.pattern]
    bad = good + "\n"
    accepted = event_with(kind, prop, good)
    refused = event_with(kind, prop, bad)

    # The typed class, through track(strict=True): the checked path names the field.
    strict_client.track("user_1", accepted)
    with pytest.raises(PugValidationError) as caught:
        strict_client.track("user_1", refused)
    assert caught.value.field == prop.attr
    assert caught.value.kind == kind

    # The generated encoder (the fast path) answers for the good value, not the bad one.
    encode = ENCODERS[type(accepted)]
    assert encode(accepted) is not None
    assert encode(refused) is None

    # A kind string with the wire-named property is checked by the same rules.
    strict_client.track("user_1", kind, {**required_fields(kind), prop.wire_name: good})
    with pytest.raises(PugValidationError) as caught:
        strict_client.track("user_1", kind, {**required_fields(kind), prop.wire_name: bad})
    assert caught.value.field == prop.attr
    assert strict_client.flush(5)


@pytest.mark.parametrize(("kind", "prop"), CATALOG, ids=CATALOG_IDS)
def test_fake_pug_reads_a_catalog_value_with_a_trailing_newline_as_invalid(
    kind: str, prop: Property
) -> None:
    # The server takes custom_properties as a map (its rules are the Event's); FakePug's
    # typed view of what it received applies the catalog's, as the SDK does.
    assert prop.pattern is not None
    fake = FakePug()

    def received(value: str) -> PugEvent | None:
        custom = {**required_fields(kind), prop.wire_name: value}
        event = Event(
            event_id=str(uuid.uuid4()),
            kind=kind,
            distinct_id="u1",
            session_id=str(uuid.uuid4()),
            occur_time=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            custom_properties={k: PropertyValue(string_value=v) for k, v in custom.items()},
        )
        fake.handle(BATCH_CREATE, bytes(BatchCreateRequest(events=[event])))
        return fake.events(kind=kind)[-1].typed

    good = MATCHING[prop.pattern]
    typed = received(good)
    assert typed is not None and getattr(typed, prop.attr) == good
    assert received(good + "\n") is None


def test_a_users_generated_module_refuses_a_trailing_newline(tmp_path: Path) -> None:
    plan = write(
        tmp_path,
        """\
        events:
          invoice.sent:
            properties:
              currency: {type: string, pattern: "^[A-Z]{3}$"}
              code: {type: string, pattern: "^\\\\d+$"}
        """,
    )
    out = tmp_path / "newline_events.py"
    assert main(["events", "--catalog", str(plan), "--out", str(out)]) == 0
    text = out.read_text()
    assert 'Meta(pattern="^[A-Z]{3}\\\\Z")' in text  # the translation, written into Meta
    assert 're.compile("^[A-Z]{3}\\\\Z")' in text  # and into the encoder
    module = load_module(out, "newline_events")
    cls = module.InvoiceSent
    with Pug(api_key="prv_test", transport=InMemoryTransport(), strict=True) as client:
        client.track("user_1", cls(currency="USD", code="42"))
        for field, value in [("currency", "USD\n"), ("code", "42\n"), ("code", "\u0664\u0662")]:
            event = cls(**{field: value})
            assert ENCODERS[cls](event) is None
            with pytest.raises(PugValidationError) as caught:
                client.track("user_1", event)
            assert caught.value.field == field


@pytest.mark.parametrize(("where", "pattern"), CONTRACT_PATTERNS, ids=lambda v: str(v))
def test_fake_pug_matches_contract_patterns_as_re2(where: str, pattern: str) -> None:
    fake_rule = Pattern(pattern, compile_pattern(pattern))  # as pug.rules builds each
    good = MATCHING[pattern]
    assert fake_rule.matches(good)
    assert not fake_rule.matches(good + "\n")
    assert not fake_rule.matches("\n" + good)


def test_generator_identity_checks_refuse_a_trailing_newline() -> None:
    assert catalog.KIND_PATTERN.match("purchase")
    assert not catalog.KIND_PATTERN.match("purchase\n")
    assert not catalog.PROPERTY_NAME.match("amount\n")
    assert not catalog.CLASS_NAME.match("Purchase\n")


# --- the translation against RE2 ------------------------------------------------------------

# (pattern, value, RE2's answer): RE2's semantics of `$`, `^`, `\n` and the rest, written out
# (each row is also put to RE2 itself when google-re2 is installed).
RE2_TABLE = [
    ("^[A-Z]{3}$", "USD", True),
    ("^[A-Z]{3}$", "USD\n", False),
    ("^[A-Z]{3}$", "\nUSD", False),
    ("^[A-Z]{3}$", "US\nD", False),
    ("a$", "a\n", False),
    ("a$", "ba", True),
    ("^a", "\na", False),
    ("^a", "ab", True),
    ("^$", "", True),
    ("^$", "\n", False),
    ("^$|^anon-", "anon-x\n", True),  # no end anchor on that branch
    ("^$|^anon-", "\n", False),
    ("a\\z", "a\n", False),
    ("a\\z", "a", True),
    ("\\A\\n", "\nx", True),
    ("\n$", "a\n", True),
    ("^\\n$", "\n", True),
    ("^\\n$", "\n\n", False),
    ("^.$", "\n", False),
    ("(?s)^.$", "\n", True),
    ("^a.*$", "a\nb", False),
    ("(?s)^a.*$", "a\nb", True),
    ("[$]", "$", True),
    ("[$]", "\n", False),
    ("\\$$", "$\n", False),
    ("\\\\$", "\\", True),
    ("\\\\$", "\\\n", False),
    ("[^a]$", "\n", True),  # a negated class matches a newline in RE2 too
    ("[^a]$", "b\n", True),  # the final newline is the char the class matches
    ("^[^a]$", "b\n", False),
    ("(a|b$)c?", "b\n", False),
    ("(a|b$)c?", "xb", True),
    ("^\\d+$", "42", True),
    ("^\\d+$", "\u0664\u0662", False),  # Arabic-Indic digits: \d is ASCII in RE2
    ("^\\w+$", "caf\u00e9", False),
    ("^\\s$", "\x0b", False),  # \s is [\t\n\f\r ] in RE2: no vertical tab
    ("^\\s$", "\n", True),
    ("^\\S+$", "ab\n", False),
    ("\\bx\\b", "\u00e9x", True),  # \b is ASCII: é is not a word character
    ("a{,2}", "a{,2}", True),  # a literal in RE2, a repetition in Python
    ("a{,2}", "a", False),
    ("a{2}$", "aa\n", False),
    ("[]a]+$", "]a", True),
    ("[\\d.]+$", "1.5\n", False),
    ("(?i)^usd$", "USD\n", False),
    ("(?i)^usd$", "uSd", True),
]


def re2_module() -> Any:
    try:
        import re2  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    return re2


@pytest.mark.parametrize(("pattern", "value", "expected"), RE2_TABLE, ids=lambda v: repr(v))
def test_translated_patterns_match_as_re2_does(pattern: str, value: str, expected: bool) -> None:
    assert (compile_pattern(pattern).search(value) is not None) is expected
    # msgspec, which checks the typed classes, reads the translation alike.
    checked = Annotated[str, msgspec.Meta(pattern=python_pattern(pattern))]
    try:
        msgspec.convert(value, checked)
        accepted = True
    except msgspec.ValidationError:
        accepted = False
    assert accepted is expected
    re2 = re2_module()
    if re2 is not None:
        assert (re2.search(pattern, value) is not None) is expected, "the table is wrong"


# Patterns whose translation is compared with RE2 on generated values.
DIFFERENTIAL = sorted(
    {p for p, _, _ in RE2_TABLE}
    | set(MATCHING)
    | {"^a$", "^$", "a|^$", "(^a|b)$", "^(a$|b)", "\\n", "^[\\n]$", "^[^\\n]*$", "a\\n?$"}
)
_ALPHABET = "aAbBxX09_.-$\\\n\r\t\x0b\x0c ]{},/+\u00e9\u0664\u017f\u212a"


@pytest.mark.skipif(re2_module() is None, reason="needs google-re2")
@settings(max_examples=400, deadline=None)
@given(pattern=st.sampled_from(DIFFERENTIAL), value=st.text(alphabet=_ALPHABET, max_size=6))
def test_translated_patterns_agree_with_re2(pattern: str, value: str) -> None:
    re2 = re2_module()
    for text in (value, value + "\n", "\n" + value, MATCHING.get(pattern, "") + "\n"):
        expected = re2.search(pattern, text) is not None
        assert (compile_pattern(pattern).search(text) is not None) is expected, (pattern, text)


@pytest.mark.parametrize(
    "pattern",
    [
        "(?m)^a$",  # multi-line: `$` would be the end of every line
        "(?m:a$)",
        "(?U)a*",  # ungreedy: Python has no such flag
        "(?x)a b",  # verbose: not RE2
        "(?=a)",  # lookaround, backreferences, atomic groups: Python only
        "(?<=a)b",
        "(?P<n>a)(?P=n)",
        "(?>a)",
        "(a)\\1",
        "a++",  # possessive: Python only
        "a{2}+",
        "a\\Z",  # not RE2
        "\\pL",  # Unicode classes: RE2 only
        "\\Qa.b\\E",
        "[[:alpha:]]",
        "[\\D]",
    ],
)
def test_patterns_read_differently_by_the_two_engines_are_refused(
    tmp_path: Path, pattern: str
) -> None:
    with pytest.raises(UnsupportedPattern):
        python_pattern(pattern)
    # The generator refuses such a catalog, naming the property.
    rule = json.dumps({"type": "string", "pattern": pattern})  # JSON is YAML
    plan = write(tmp_path, f"events:\n  e:\n    properties:\n      p: {rule}\n")
    with pytest.raises(CatalogError) as caught:
        catalog.load([plan])
    assert caught.value.prop == "p"
