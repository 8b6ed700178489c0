"""The transport interface: how the client's worker reaches a Pug server.

A transport sends one serialized request to a method (`sdk.events.v1.EventsService/
BatchCreate`) and returns the serialized response, or raises `PugError` with the
Connect code name. Network transports live in `pug.transports`; the in-memory one in
`pug.testing`. All methods run on the client's worker loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

BATCH_CREATE = "sdk.events.v1.EventsService/BatchCreate"
IDENTIFY = "sdk.profiles.v1.ProfilesSDKService/Identify"

# What a forked child inherited from its parent's worker (event loop, connections, HTTP
# clients): held here for the child's whole life, never finalized. Finalizing them would
# act on state the child shares with the parent: closing a connection's transport
# removes its socket from the epoll set both processes share (the parent then never sees
# its response), and a TLS close would write close_notify into the parent's session.
INHERITED_FROM_PARENT: list[object] = []


@runtime_checkable
class Transport(Protocol):
    """Send requests to Pug. Implementations raise `PugError` for every failure."""

    async def unary(self, method: str, request: bytes, *, timeout: float) -> bytes:
        """One request, one response; `timeout` in seconds."""
        ...

    def stream(self, method: str, request: bytes, *, timeout: float) -> AsyncIterator[bytes]:
        """A server-streaming call: each response message, in order."""
        ...

    async def aclose(self) -> None:
        """Release connections; called on the worker loop when the client closes."""
        ...

    def reset_after_fork(self) -> None:
        """Forget connections inherited from the parent process: never close them, put
        them in INHERITED_FROM_PARENT."""
        ...
