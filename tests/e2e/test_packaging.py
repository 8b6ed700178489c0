"""The wheel and the editable install hold the same `pug`, and a bare wheel imports."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("pug_sdk-*.whl")
    return path


def source_modules() -> set[str]:
    """Every file the editable install serves under `pug/` and `pug_codegen/`."""
    found: set[str] = set()
    for half in ("runtime", "generated"):
        for path in (ROOT / half / "pug").rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                found.add("pug/" + path.relative_to(ROOT / half / "pug").as_posix())
    for path in (ROOT / "codegen" / "pug_codegen").rglob("*.py"):
        found.add("pug_codegen/" + path.relative_to(ROOT / "codegen" / "pug_codegen").as_posix())
    return found


def test_wheel_holds_exactly_what_the_editable_install_serves(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert len(names) == len(set(names)), "a file is in the wheel twice"
    packaged = {n for n in names if n.startswith(("pug/", "pug_codegen/")) and n.endswith(".py")}
    assert packaged == {n for n in source_modules() if n.endswith(".py")}
    assert "pug/py.typed" in names
    # The dev server's page: no build step at install, so its files ship as they are.
    static = {
        "pug/devserver/static/" + p.name for p in (ROOT / "runtime/pug/devserver/static").iterdir()
    }
    assert static == {
        "pug/devserver/static/index.html",
        "pug/devserver/static/page.js",
        "pug/devserver/static/page.css",
    }
    assert static <= set(names)
    templates = {p.name for p in (ROOT / "templates").iterdir()}
    assert {n.removeprefix("pug_codegen/templates/") for n in names if "templates/" in n} == (
        templates
    )


def test_wheel_imports_in_a_fresh_venv_without_extras(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir)
    python = env_dir / "bin" / "python"
    # uv installs what the wheel's metadata asks for as pip would, in a fraction of the time.
    subprocess.run(
        [find_uv_bin(), "pip", "install", "-q", "--python", str(python), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import pug, pug.events, pug.proto.sdk.events.v1 as e;"
        "from pug.event import event_properties;"
        "print(pug.__version__, len(pug.events.EVENTS),"
        " event_properties(pug.events.Purchase(product_id='p', amount=1))[1]['amount'][1],"
        " type(e.BatchCreateRequest()).__name__)"
    )
    result = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    import pug

    assert result.stdout.split() == [pug.__version__, "114", "1.0", "BatchCreateRequest"]
    # The generator's CLI is installed but says which extra it needs.
    codegen = subprocess.run(
        [str(env_dir / "bin" / "pug-codegen"), "--help"], capture_output=True, text=True
    )
    assert codegen.returncode == 1
    needs = r'needs the `codegen` extra \(missing: \w+\): pip install "pug-sdk\[codegen\]"'
    assert re.search(needs, codegen.stderr), codegen.stderr
