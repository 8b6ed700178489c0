"""The generator: users' catalogs → typed modules, catalog errors, --check, determinism."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pug
import pytest
from pug.errors import PugValidationError
from pug.event import Variant, event_class, event_properties, validate
from pug_codegen import catalog
from pug_codegen.catalog import CatalogError
from pug_codegen.cli import generate_sdk, main

ROOT = Path(__file__).resolve().parents[2]

PLAN = """\
events:
  order.completed:
    description: An order was paid.
    properties:
      order_id: {type: string, required: true}
      amount: {type: double, gt: 0}
      currency: {type: string, pattern: "^[A-Z]{3}$"}
      paid_at: {type: timestamp}
      checkout_time: {type: duration, gte: 0}
      channel: {type: string, in: [web, store]}
      email: {type: string, pii: true, wire_name: customerEmail}
  signup_started:
    class: SignupBegan
    properties:
      step_count: int64
"""


def write(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def user_module(tmp_path: Path) -> tuple[ModuleType, Path]:
    plan = write(tmp_path, PLAN)
    out = tmp_path / "analytics_events.py"
    assert main(["events", "--catalog", str(plan), "--out", str(out)]) == 0
    return load_module(out, "analytics_events"), out


def test_user_catalog_module_tracks_like_well_known_events(
    user_module: tuple[ModuleType, Path],
) -> None:
    module, _ = user_module
    OrderCompleted = module.OrderCompleted
    assert {
        "order.completed": OrderCompleted,
        "signup_started": module.SignupBegan,
    } == module.EVENTS
    assert OrderCompleted.KIND == "order.completed"
    assert event_class("order.completed") is OrderCompleted
    import datetime

    paid = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    event = OrderCompleted(
        order_id="o1",
        amount=49,
        paid_at=paid,
        checkout_time=datetime.timedelta(seconds=90),
        channel="web",
        email="a@b.c",
    )
    kind, props = event_properties(event)
    assert kind == "order.completed"
    # Users' names stay as written on the wire; wire_name overrides one.
    assert props == {
        "order_id": (Variant.STRING, "o1"),
        "amount": (Variant.DOUBLE, 49.0),
        "paid_at": (Variant.TIMESTAMP, paid),
        "checkout_time": (Variant.DOUBLE, 90.0),
        "channel": (Variant.STRING, "web"),
        "customerEmail": (Variant.STRING, "a@b.c"),
    }
    with pytest.raises(PugValidationError, match="field 'channel' is invalid"):
        validate(OrderCompleted(order_id="o1", channel="fax"))
    with pytest.raises(PugValidationError, match=r"field 'checkout_time' is invalid: .* >= 0s"):
        validate(OrderCompleted(order_id="o1", checkout_time=datetime.timedelta(seconds=-1)))
    _, props = event_properties(module.SignupBegan(step_count=2**40))
    assert props == {"step_count": (Variant.INT, 2**40)}


def test_user_module_passes_mypy_strict_and_mypy_rejects_wrong_types(
    user_module: tuple[ModuleType, Path], tmp_path: Path, mypy_cache_dir: Path
) -> None:
    _, out = user_module
    good = write(
        tmp_path,
        """\
        import datetime

        from analytics_events import EVENTS, OrderCompleted
        from pug.event import PugEvent, event_properties


        def checkout(order_id: str, total: float) -> PugEvent:
            return OrderCompleted(
                order_id=order_id,
                amount=total,
                currency="USD",
                paid_at=datetime.datetime.now(datetime.UTC),
                checkout_time=datetime.timedelta(seconds=3),
                channel="web",
            )


        kind, props = event_properties(checkout("o1", 49.0))
        cls: type[PugEvent] = EVENTS["order.completed"]
        """,
        "good.py",
    )
    bad = write(
        tmp_path,
        """\
        from analytics_events import OrderCompleted

        OrderCompleted(order_id="o1", amount="x")
        OrderCompleted(order_id="o1", channel="fax")
        OrderCompleted(amount=1.0)
        """,
        "bad.py",
    )

    # The pug under test (its runtime and generated folders), not whichever is installed.
    pug_path = os.pathsep.join(dict.fromkeys(str(Path(p).parent) for p in pug.__path__))

    def mypy(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--cache-dir", mypy_cache_dir, path],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={"MYPYPATH": str(out.parent), "PYTHONPATH": pug_path, "PATH": ""},
        )

    ok = mypy(good)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rejected = mypy(bad)
    assert rejected.returncode == 1
    errors = [line for line in rejected.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 3, rejected.stdout
    assert (
        'bad.py:3: error: Argument "amount" to "OrderCompleted" has incompatible type "str"'
        in (errors[0])
    )
    assert 'bad.py:4: error: Argument "channel"' in errors[1]
    assert 'bad.py:5: error: Missing named argument "order_id"' in errors[2]


def test_check_detects_a_one_line_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write(tmp_path, PLAN)
    out = tmp_path / "events.py"
    args = ["events", "--catalog", str(plan), "--out", str(out)]
    assert main(args) == 0
    assert main([*args, "--check"]) == 0
    before = out.read_text()
    plan.write_text(PLAN.replace("amount: {type: double, gt: 0}", "amount: {type: double, gt: 1}"))
    capsys.readouterr()
    assert main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{out} is stale" in err
    assert "-    amount: Annotated[float, Meta(gt=0.0)] | UnsetType = UNSET" in err
    assert "+    amount: Annotated[float, Meta(gt=1.0)] | UnsetType = UNSET" in err
    assert out.read_text() == before  # --check writes nothing


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first = generate_sdk(ROOT)
    for rel, text in first.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    # A second generation (the CLI's) holds exactly the first's files, byte for byte.
    assert main(["sdk", "--root", str(ROOT), "--out", str(tmp_path), "--check"]) == 0


def test_generated_tree_is_current() -> None:
    assert main(["sdk", "--root", str(ROOT), "--check"]) == 0


def test_generated_files_say_they_are_generated() -> None:
    for path in (ROOT / "generated" / "pug").rglob("*.py"):
        head = path.read_text().splitlines()[:2]
        assert head[0].startswith("# Generated by pug-codegen"), path
        assert "just generate" in head[1], path


def test_readme_catalog_example_generates(tmp_path: Path) -> None:
    readme = (ROOT / "catalog" / "README.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", readme, re.S)
    assert example is not None
    plan = write(tmp_path, example.group(1))
    out = tmp_path / "readme_events.py"
    assert main(["events", "--catalog", str(plan), "--out", str(out)]) == 0
    module = load_module(out, "readme_events")
    validate(module.OrderCompleted(order_id="o1", amount=1.0, email="x"))


# Each malformed catalog and the exact message it gives: file, line, event, property, why.
BAD_CATALOGS = [
    (
        "events:\n  a: {properties: {x: {type: strin}}}\n",
        "plan.yaml:2: event 'a' property 'x': unknown type 'strin' "
        "(one of: string, bool, int32, int64, double, duration, timestamp)",
    ),
    (
        "events:\n  a:\n    propertes: {}\n",
        "plan.yaml:3: event 'a': unknown key 'propertes'",
    ),
    (
        "events:\n  a:\n    properties:\n      x: {type: string, maxlen: 3}\n",
        "plan.yaml:4: event 'a' property 'x': unknown key 'maxlen'",
    ),
    (
        "events:\n  a:\n    properties:\n      x: {type: string, pattern: '[a-'}\n",
        "plan.yaml:4: event 'a' property 'x': pattern '[a-' does not compile: "
        "unterminated character set at position 0",
    ),
    (
        "events:\n  a: {}\n  b: {}\n  a: {}\n",
        "plan.yaml:4: event 'a': duplicate kind in this file",
    ),
    (
        "events:\n  a.b: {}\n  a_b: {}\n",
        "plan.yaml:3: event 'a_b': duplicate class name 'AB' (also used at {file}:2)",
    ),
    (
        "events:\n  'bad kind!': {}\n",
        "plan.yaml:2: event 'bad kind!': kind must match ^[a-zA-Z0-9_.-]+$",
    ),
    (
        "events:\n  a:\n    properties:\n      $lib: string\n",
        "plan.yaml:4: event 'a' property '$lib': property names must not start with '$' "
        "(reserved for auto-properties)",
    ),
    (
        "events:\n  a:\n    properties:\n      n: {type: bool, gt: 0}\n",
        "plan.yaml:4: event 'a' property 'n': constraint 'gt' does not fit type 'bool'",
    ),
    (
        "events:\n  a:\n    properties:\n      n: {type: int32, pattern: '^1$'}\n",
        "plan.yaml:4: event 'a' property 'n': constraint 'pattern' does not fit type 'int32'",
    ),
    (
        "events:\n  a:\n    properties:\n      n: {type: int32, gte: 0.5}\n",
        "plan.yaml:4: event 'a' property 'n': 'gte' must be a whole number for type 'int32'",
    ),
    (
        "events:\n  a:\n    properties:\n      n: {type: string, required: yes please}\n",
        "plan.yaml:4: event 'a' property 'n': 'required': Expected `bool`, got `str`",
    ),
    (
        "events:\n  a:\n    platforms: [tv]\n",
        "plan.yaml:3: event 'a': unknown platform 'tv' (one of: web, ios, android, desktop, "
        "server)",
    ),
    (
        "evnts: {}\n",
        "plan.yaml:1: unknown key 'evnts'",
    ),
    (
        "events:\n  a: [\n",
        "plan.yaml:3: not valid YAML: expected the node content, but found '<stream end>'",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CATALOGS)
def test_bad_catalog_gives_its_specific_error(tmp_path: Path, text: str, expected: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    with pytest.raises(CatalogError) as info:
        catalog.load([plan])
    assert str(info.value) == str(tmp_path) + "/" + expected.format(file=plan)


def test_duplicate_kind_across_files_names_both(tmp_path: Path) -> None:
    one = write(tmp_path, "events:\n  a: {}\n", "one.yaml")
    two = write(tmp_path, "events:\n  b: {}\n  a: {}\n", "two.yaml")
    with pytest.raises(CatalogError) as info:
        catalog.load([one, two])
    assert str(info.value) == f"{two}:3: event 'a': duplicate kind (first defined at {one}:2)"


def test_cli_reports_catalog_errors_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write(tmp_path, "events:\n  a: {properties: {x: float}}\n")
    out = tmp_path / "x.py"
    assert main(["events", "--catalog", str(plan), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pug-codegen: catalog error: {plan}:2: event 'a' property 'x'")
    assert not out.exists()


def test_keyword_property_becomes_attribute_with_underscore(tmp_path: Path) -> None:
    plan = write(tmp_path, "events:\n  clicked:\n    properties:\n      class: string\n")
    out = tmp_path / "kw_events.py"
    assert main(["events", "--catalog", str(plan), "--out", str(out)]) == 0
    module = load_module(out, "kw_events")
    _, props = event_properties(module.Clicked(class_="btn"))
    assert props == {"class": (Variant.STRING, "btn")}
