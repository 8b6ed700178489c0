"""The client's knobs: batching and retry. Defaults are documented in the README."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

from pug._ingest.validate import BATCH_MAX_EVENTS, MAX_REQUEST_BYTES

# Codes the official SDKs never retry (WIRE.md); every other failure is transient.
PERMANENT_CODES: Final = frozenset(
    {
        "invalid_argument",
        "not_found",
        "already_exists",
        "permission_denied",
        "failed_precondition",
        "unimplemented",
        "unauthenticated",
    }
)
# The server's repeated.max_items on BatchCreateRequest, and the SDK's bound on one request.
MAX_REQUEST_EVENTS: Final = BATCH_MAX_EVENTS


@dataclass(frozen=True)
class BatchConfig:
    """When the background worker sends, and how much it may hold.

    - `max_size`: send as soon as this many events are queued (a request then carries
      up to 1000 events when more are waiting).
    - `max_wait`: seconds the oldest queued event may wait before it is sent.
    - `max_queue_size` / `max_queue_bytes`: the bound on what is held while the server
      is slow or down; past it the oldest events are dropped and handed to `on_error`.
      Events are held encoded (~200 bytes each), so the default bound costs ≤ 64 MiB.
    - `exit_timeout`: seconds spent at interpreter exit sending what is still queued.
    """

    max_size: int = 100
    max_wait: float = 5.0
    max_queue_size: int = 100_000
    max_queue_bytes: int = 64 * 1024 * 1024
    exit_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_size <= MAX_REQUEST_EVENTS:
            raise ValueError(f"BatchConfig.max_size must be 1..{MAX_REQUEST_EVENTS}")
        if self.max_wait <= 0 or self.exit_timeout < 0:
            raise ValueError("BatchConfig.max_wait must be > 0 and exit_timeout >= 0")
        if self.max_queue_size < 1 or self.max_queue_bytes < MAX_REQUEST_BYTES:
            raise ValueError(
                "BatchConfig.max_queue_size must be >= 1 and max_queue_bytes >= 512 KiB"
            )


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures.

    The n-th consecutive failure (n from 0) waits a uniformly random time in
    [0, min(cap, base * 2**n)] seconds. When the server (or a proxy) says how long to wait
    (`Retry-After`, gRPC pushback: `PugError.retry_after`), the wait is at least that, up to
    `cap`. Events are resent with the same ids and times for as long as the client is open;
    `close()` makes one last attempt.
    """

    base: float = 0.5
    cap: float = 30.0
    random: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("RetryPolicy needs base > 0 and cap >= base")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th consecutive failure (0-based)."""
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 64))
        return self.random.uniform(0, ceiling)

    def wait_before_retry(self, attempt: int, retry_after: float | None = None) -> float:
        """What the worker waits before retrying: `delay(attempt)` (a subclass may change
        it), but at least what the server asked for (`retry_after`), up to `cap`."""
        delay = self.delay(attempt)
        if retry_after is None or not retry_after > 0:
            return delay
        return max(delay, min(self.cap, retry_after))

    @staticmethod
    def is_permanent(code: str) -> bool:
        return code in PERMANENT_CODES
