"""examples/contexts.py, every documented form of contexts and `flushing`, runs and sends
what its comments say (mypy --strict checks it in lint)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SENT = """\
order.completed    user_42    {'amount': 9.5, 'plan': 'pro', 'service': 'checkout'}
order.completed    user_42    {'amount': 9.5, 'plan': 'pro', 'service': 'checkout'}
purchase           user_42    {'amount': 49.0, 'currency': 'USD', 'plan': 'pro', \
'productId': 'p1', 'service': 'checkout'}
purchase           user_42    {'amount': 5.0, 'coupon': 'SPRING', 'plan': 'pro', \
'productId': 'p2', 'service': 'checkout'}
order.refunded     user_7     {'plan': 'pro', 'service': 'checkout'}
order.refunded     user_7     {'amount': 9.5, 'plan': 'pro', 'service': 'checkout'}
order.refunded     user_8     {'plan': 'pro', 'service': 'checkout'}
payment.started    user_42    {'plan': 'pro', 'service': 'checkout', 'step': 'payment'}
page.viewed        anon-7f3a  {'service': 'checkout'}
dashboard.viewed   user_42    {'logged_in': True, 'service': 'checkout'}
job.finished       cron       {'job': 'nightly', 'rows': 1200, 'service': 'checkout'}
job.finished       worker     {'service': 'checkout'}
lambda.invoked     user_42    {'service': 'checkout'}
async.handled      user_9     {}
"""


def test_the_contexts_example_sends_what_it_says() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "contexts.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == SENT
