"""The Pug wire contract the tests compare the catalog with, kept in the repository.

`catalog/contract/pug-wire-contract.json` is a byte-for-byte copy of the shared contract
(`../shared/contract/pug-wire-contract.json` beside a checkout that has it);
`tests/unit/test_contract.py` holds the two equal. It is data the tests read: when it is missing
they fail, they never skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACT_PATH = REPO_ROOT / "catalog" / "contract" / "pug-wire-contract.json"
# Where the shared original lives when the repository is checked out beside it.
SHARED_CONTRACT_DIR = REPO_ROOT.parent / "shared" / "contract"
SHARED_CONTRACT_PATH = SHARED_CONTRACT_DIR / "pug-wire-contract.json"


def load_contract() -> dict[str, Any]:
    """The parsed contract; a missing file fails the test (or its module)."""
    if not CONTRACT_PATH.is_file():
        pytest.fail(f"the wire contract is missing: {CONTRACT_PATH}", pytrace=False)
    contract: dict[str, Any] = json.loads(CONTRACT_PATH.read_text(encoding="utf-8"))
    return contract
