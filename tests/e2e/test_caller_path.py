"""After a client is made, nothing on the caller's thread imports a module, opens a file or
touches the network: `track()` and `identify()` of every form, the first call included,
but for the first `track()` of a well-known kind given as a string, which imports the
module of its domain (once: importing every domain would cost each process's start).

Checked with an audit hook (PEP 578) in a fresh interpreter, so that nothing this test
process imported earlier hides a first-time import.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    import datetime, decimal, enum, sys, threading, uuid
    from pug import BatchConfig, Pug
    from pug.testing import InMemoryTransport

    class Color(str, enum.Enum):
        RED = "red"

    pug = Pug(api_key="prv_x", transport=InMemoryTransport(), batch=BatchConfig(max_wait=60))
    bound = pug.bind("user_9")
    seen = []
    main = threading.main_thread()

    def audit(event, args):
        if threading.current_thread() is main and (
            event in ("import", "open", "socket.connect", "socket.getaddrinfo")
        ):
            seen.append(f"{event} {str(args[0])[:100]}")

    sys.addaudithook(audit)
    now = datetime.datetime.now(datetime.timezone.utc)
    pug.track("user_1", "feature_used", {"feature_id": "export"})  # a well-known kind
    pug.track("user_1", "report.exported", {
        "a": 1, "b": 2.5, "c": True, "d": now, "e": [1, "x"], "f": {"g": None},
        "h": decimal.Decimal("1.5"), "i": uuid.UUID(int=7), "j": Color.RED,
        "k": datetime.date(2024, 1, 2),
    })
    session = str(uuid.UUID(int=1))
    pug.track("user_1", "report.exported", {"a": 1}, timestamp=now, session_id=session)
    bound.track("feature_used", {"feature_id": "import"})
    pug.identify("user_1", {"plan": "pro", "seats": 5}, anonymous_id="anon-1")
    sys.stdout.write("\\n".join(seen))
    """
)


def test_first_calls_after_construction_import_nothing_and_do_no_io() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # Each line is one import, file or network call: only the module of feature_used.
    lines = result.stdout.splitlines()
    assert lines, "the first feature_used imported its module before track()"
    assert all(re.search(r"/pug/events/(__pycache__/)?app[.]", line) for line in lines), lines
