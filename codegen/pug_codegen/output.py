"""Write generated files, or with `check` compare them and report the drift as a diff."""

from __future__ import annotations

import difflib
from pathlib import Path


def _diff(path: Path, old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{path} (on disk)",
            tofile=f"{path} (regenerated)",
        )
    )


def sync(root: Path, files: dict[str, str], *, check: bool, own_tree: bool) -> list[str]:
    """Make `root` hold exactly `files` (relative path → text); return what differed.

    With `own_tree`, files under `root` that are not generated any more are stale too
    (and deleted unless `check`). With `check`, nothing is written and each entry of the
    returned list is a readable diff or note.
    """
    problems: list[str] = []
    for rel, text in sorted(files.items()):
        path = root / rel
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == text:
            continue
        if check:
            problems.append(_diff(path, old or "", text) or f"{path}: differs")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        problems.append(str(path))
    if own_tree and root.exists():
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                rel = path.relative_to(root).as_posix()
                if rel not in files:
                    problems.append(f"{path}: no longer generated" if check else str(path))
                    if not check:
                        path.unlink()
    return problems
