"""An integration imported without its framework says which extra to install."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize("extra", ["django", "flask", "celery"])
def test_a_missing_framework_names_the_extra(extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [extra, *(n for n in sys.modules if n.startswith(f"{extra}."))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, f"pug.integrations.{extra}", raising=False)
    expected = f'pug.integrations.{extra} needs {extra}: pip install "pug-sdk[{extra}]"'
    with pytest.raises(ImportError) as raised:
        importlib.import_module(f"pug.integrations.{extra}")
    assert str(raised.value) == expected
