"""Every ```python block of the guides (docs/*.md) and of README.md runs, as written.

The blocks of one page run in page order in one namespace, against a real dev server on
127.0.0.1 (`PUG_BASE_URL` and `PUG_API_KEY` point `Pug()` at it), each page in its own
empty working directory. A block fails its page's test when it raises, or when it makes
the SDK log an error (a spool that could not be used, an event dropped as invalid).

Markers, on the line before a block's fence (HTML comments: GitHub and the site hide them):
- `<!-- no-run: reason -->`: not run (it needs a Django project, say). Kept few.
- `<!-- logs-errors: reason -->`: the block runs, and the errors it logs are what it shows.
- `<!-- pytest -->`: the block is a pytest test module; it runs in a pytest of its own,
  with the SDK's plugin, and must pass.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pug.client import _Client
from pug.devserver import DevServer

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```$", re.S | re.M)
MARKER = re.compile(r"<!-- (no-run|pytest|logs-errors)(?::\s*(.*?))? -->\s*$")
# What may stand between a marker and its fence: nothing, or blank lines.
MARKER_LOOKBACK = 3


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the code's first line, 1-based
    code: str
    marker: str | None  # "no-run", "pytest", "logs-errors" or None
    reason: str | None

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        start = text.count("\n", 0, match.start())  # 0-based line of the fence
        before = text.split("\n")[max(0, start - MARKER_LOOKBACK) : start]
        marker = reason = None
        for line in reversed(before):
            if m := MARKER.search(line):
                marker, reason = m.group(1), m.group(2)
                break
            if line.strip():
                break
        found.append(Block(page, start + 2, match.group(1), marker, reason))
    return found


@pytest.fixture(scope="module")
def dev_server() -> Iterator[DevServer]:
    with DevServer(out=open(os.devnull, "w")) as server:
        yield server


def run_block(block: Block, namespace: dict[str, object]) -> None:
    code = compile(block.code, block.where(), "exec")
    exec(code, namespace)


def run_as_pytest(block: Block, directory: Path) -> None:
    test_file = directory / f"test_block_{block.line}.py"
    test_file.write_text(block.code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{block.where()} failed under pytest:\n{result.stdout}"


def close_clients(namespace: dict[str, object]) -> None:
    for value in namespace.values():
        if isinstance(value, _Client):
            value._core.close(5.0)


@pytest.mark.e2e  # a dev server on 127.0.0.1, and pytest in a subprocess
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_blocks_run(
    page: Path,
    dev_server: DevServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PUG_API_KEY", "prv_docs")
    monkeypatch.setenv("PUG_BASE_URL", dev_server.connect_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # modules a page writes, as a project would
    caplog.set_level(logging.WARNING, logger="pug")
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    try:
        for block in blocks(page):
            if block.marker == "no-run":
                continue
            if block.marker == "pytest":
                run_as_pytest(block, tmp_path)
                continue
            try:
                run_block(block, namespace)
            except Exception as exc:
                raise AssertionError(f"the block at {block.where()} raised {exc!r}") from exc
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            caplog.clear()
            if block.marker == "logs-errors":
                continue
            assert not errors, f"the block at {block.where()} logged: {errors[0].getMessage()}"
    finally:
        close_clients(namespace)


def test_skipped_blocks_say_why_and_are_few() -> None:
    every = [block for page in PAGES for block in blocks(page)]
    skipped = [block for block in every if block.marker == "no-run"]
    assert all(block.reason for block in skipped), [b.where() for b in skipped if not b.reason]
    assert len(skipped) <= 5, [block.where() for block in skipped]
    assert len(every) - len(skipped) >= 20  # the guides' examples are all found


def test_markers_are_read(tmp_path: Path) -> None:
    page = textwrap.dedent(
        """\
        <!-- no-run: needs Django settings -->
        ```python
        import django
        ```

        ```python
        x = 1
        ```
        """
    )
    path = tmp_path / "probe.md"
    path.write_text(page, encoding="utf-8")
    found = blocks(path)
    assert [(b.marker, b.reason, b.code, b.line) for b in found] == [
        ("no-run", "needs Django settings", "import django\n", 3),
        (None, None, "x = 1\n", 7),
    ]


def test_every_event_domain_is_in_the_reference() -> None:
    """A domain the catalog gains must get its `::: pug.events.<domain>` in the reference."""
    generated = {
        path.stem
        for path in (ROOT / "generated" / "pug" / "events").glob("*.py")
        if path.stem != "__init__"
    }
    page = (ROOT / "docs" / "reference" / "events.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: pug\.events\.(\w+)$", page, re.M))
    assert documented == generated
