"""The whole test run: lint and generated drift once, the suite on every supported CPython,
and once more with the lowest dependency versions pyproject.toml declares.

`.venv/bin/just test` (the README's test command, and CI's) runs every session here, one
after another; `.venv/bin/nox -l` lists them, `.venv/bin/nox -s tests-3.12` runs one.
A missing interpreter fails the run: the suite is promised on each of these versions.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path

import nox
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent
PYTHONS = ("3.11", "3.12", "3.13")

nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"
# uv makes each session's virtualenv and installs into it (a minute per session with pip,
# seconds with uv); it is given the interpreter `interpreter()` found, and never downloads one.
nox.options.default_venv_backend = "uv"
os.environ["UV_PYTHON_DOWNLOADS"] = "never"


def interpreter(version: str) -> str:
    """`version` for nox to find on PATH, or pyenv's newest `version.N` when that is not
    possible: pyenv's shims run only the versions pyenv has active (one, by default)."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    on_path = shutil.which(f"python{version}")
    if on_path and Path(on_path).parent != pyenv_root / "shims":
        return version
    installed = [
        (tuple(int(n) for n in exe.parents[1].name.split(".")), exe)
        for exe in (pyenv_root / "versions").glob(f"{version}.*/bin/python{version}")
        if re.fullmatch(r"\d+\.\d+\.\d+", exe.parents[1].name)
    ]
    return str(max(installed)[1]) if installed else version


def run_suite(session: nox.Session) -> None:
    # The slowest tests are listed: the whole command should stay well under 30 minutes.
    # Two pytest-xdist workers (CI's two cores; more would crowd the tests that bound a
    # time): a session's suite in about 3 minutes instead of 5.
    session.run("python", "-m", "pytest", "-n", "2", "--durations=10", *session.posargs)


@nox.session(python=interpreter("3.11"))
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict, generated code that matches what the generator makes now, and
    the documentation site built with --strict (a broken link or reference fails)."""
    session.install("-e", ".[dev]")
    # The Justfile's recipes, with this session's interpreter instead of .venv's.
    session.run("just", "python=python", "lint", "check-generated", "docs")


for _version in PYTHONS:

    @nox.session(name=f"tests-{_version}", python=interpreter(_version))
    def tests(session: nox.Session) -> None:
        """The test suite (`-- ARGS` go to pytest)."""
        session.install("-e", ".[dev]")
        run_suite(session)


def floors() -> list[str]:
    """`name==floor` for every runtime and `codegen` dependency of pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = []
    for line in [*project["dependencies"], *project["optional-dependencies"]["codegen"]]:
        requirement = Requirement(line)
        lowest = [s.version for s in requirement.specifier if s.operator in {">=", "==", "~="}]
        if len(lowest) != 1:
            raise ValueError(f"pyproject.toml: {line!r} must declare one lowest version")
        # `==0.10.*` admits 0.10.0 and later; `==0.10` is 0.10.0.
        pins.append(f"{requirement.name}=={lowest[0].removesuffix('.*')}")
    return pins


@nox.session(python=interpreter("3.11"))
def lowest(session: nox.Session) -> None:
    """The suite with each dependency the SDK and its generator declare at its floor (the
    test tools as usual): the floors in pyproject.toml are versions that pass."""
    constraints = Path(session.create_tmp()) / "floors.txt"
    constraints.write_text("\n".join(floors()) + "\n", encoding="utf-8")
    session.log("pinned: " + ", ".join(floors()))
    session.install("-c", str(constraints), "-e", ".[dev]")
    run_suite(session)
