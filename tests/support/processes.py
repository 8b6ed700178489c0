"""Child processes for the end-to-end tests: each in a session of its own, so whatever is
left of it (its own children too) is killed when the test is done with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def process_group(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    """A process in a session of its own; whatever is left of the group is killed after."""
    process = subprocess.Popen(args, start_new_session=True, text=True, **kwargs)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
