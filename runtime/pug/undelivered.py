"""What `on_error` is handed: the items a client could not deliver.

Handing an item over must cost next to nothing, even for the 100 000 items of a long outage
that `close()` gives up on within its timeout: an `Undelivered` only wraps the bytes that
were queued. It is decoded (into the `pug.proto` message) the first time it is read.

A dead letter may have been stored after all (the answer to a request cut off at
`close()`'s deadline never came); sending it again unchanged is safe, since the server
deduplicates events on their `event_id`: `pug.resend(items)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pug._wire import protobuf as pb

if TYPE_CHECKING:
    from pug.proto.sdk.events.v1 import Event
    from pug.proto.sdk.profiles.v1 import IdentifyRequest

__all__ = ["Undelivered"]


class Undelivered:
    """One event or identify that was not delivered.

    Reads like the protobuf message it holds (`item.event_id`, `item.kind`,
    `item.custom_properties`, `item.external_id`, ...); `message` is that message, decoded
    on first use; `encoded` its exact bytes.
    """

    __slots__ = ("_decoded", "is_identify", "queued")

    def __init__(self, queued: bytes, *, is_identify: bool = False) -> None:
        # An event as queued (framed as a BatchCreateRequest entry), or an identify request.
        self.queued = queued
        self.is_identify = is_identify
        self._decoded: Event | IdentifyRequest | None = None

    @property
    def encoded(self) -> bytes:
        """The message's protobuf encoding (an `Event`, or an `IdentifyRequest`)."""
        return self.queued if self.is_identify else pb.unframe(self.queued)

    @property
    def message(self) -> Event | IdentifyRequest:
        if self._decoded is None:
            from pug.proto.sdk.events.v1 import Event
            from pug.proto.sdk.profiles.v1 import IdentifyRequest

            kind = IdentifyRequest if self.is_identify else Event
            self._decoded = kind.parse(self.encoded)
        return self._decoded

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy/pickle probes: not the message's to answer
            raise AttributeError(name)
        return getattr(self.message, name)

    def __repr__(self) -> str:
        return f"Undelivered({self.message!r})"
