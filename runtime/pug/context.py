"""Contexts: who an event is about and what to add to it, set once per request or job
instead of at every `track()`.

    with pug.context(distinct_id="user_42", properties={"plan": "pro"}):
        client.track("order.completed", {"amount": 9.5})   # sent for user_42, with plan

A context lives in a `contextvars.ContextVar`, so it follows the code that runs under it:
across `await`, into asyncio tasks, into `asyncio.to_thread` and threads started with
`contextvars.copy_context().run`, and nowhere else (another thread, another request).
Contexts nest: an inner one's distinct id, session id and properties win over an outer
one's. Properties are checked once per context, not per event (`AddedProperties`).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar, cast

from pug._wire import protobuf as pb
from pug.properties import check_mapping, custom_properties

__all__ = ["AddedProperties", "Context", "ContextView", "context", "current_context", "set_context"]

logger = logging.getLogger("pug")

F = TypeVar("F", bound=Callable[..., Any])


class AddedProperties:
    """Properties sent with many events (a context's, a client's), checked and encoded
    once: each key's custom_properties entry, and all of them joined. Keys whose value
    cannot be sent were left out (with a warning) when it was made, so each event does
    not warn again."""

    __slots__ = ("data", "entries", "keys", "plain")

    def __init__(self, plain: dict[str, Any], entries: dict[str, bytes]) -> None:
        self.plain = plain  # key → the value given (the checked path maps it again)
        self.entries = entries
        self.keys = frozenset(entries)
        self.data = b"".join(entries.values())

    @classmethod
    def of(cls, properties: Mapping[Any, Any]) -> AddedProperties:
        """Raises PugValidationError for a mapping that is not one, or a `$` key."""
        check_mapping(properties)
        wired = custom_properties(properties)
        entries = {k: pb.entry(pb.CUSTOM, k, v[0], v[1]) for k, v in wired.items()}
        return cls({k: properties[k] for k in entries}, entries)

    def under(self, over: AddedProperties | None) -> AddedProperties:
        """These properties with `over`'s added, `over` winning on a shared key."""
        if over is None:
            return self
        return AddedProperties({**self.plain, **over.plain}, {**self.entries, **over.entries})

    def without(self, keys: Mapping[Any, Any]) -> bytes:
        """The entries whose key is not in `keys` (an event's own properties win)."""
        return b"".join([data for key, data in self.entries.items() if key not in keys])


# Bumped by set_context: every frame's resolution made before it is stale. One shared
# counter keeps the common read (no set_context since) to one comparison; a list, so that
# the core reads it without a call (`GENERATION[0]`).
GENERATION = [0]
_bump = itertools.count(1).__next__  # atomic under the GIL, unlike `+= 1`


class _Resolved:
    """What a frame and its outer frames add up to, at one generation; with the merge of
    the last client's own properties under it (one slot: a process has one client, most
    often)."""

    __slots__ = ("_with_client", "distinct_id", "generation", "properties", "session_id")

    def __init__(
        self,
        generation: int,
        distinct_id: str | None,
        session_id: str | None,
        properties: AddedProperties | None,
    ) -> None:
        self.generation = generation
        self.distinct_id = distinct_id
        self.session_id = session_id
        self.properties = properties
        # (client's, merged): one attribute, replaced whole, so that threads tracking
        # for two clients at once never pair one's merge with the other.
        self._with_client: tuple[AddedProperties, AddedProperties] | None = None

    def with_client(self, client: AddedProperties | None) -> AddedProperties | None:
        """These properties over a client's (the context's win)."""
        if client is None or self.properties is None:
            return self.properties or client
        merged = self._with_client
        if merged is None or merged[0] is not client:
            merged = self._with_client = (client, client.under(self.properties))
        return merged[1]


_NOT_RESOLVED = _Resolved(-1, None, None, None)


class _Frame:
    """One entry into a context: what it sets itself and the frame it was entered in.
    `set_context` changes a frame in place, so everything running under it (a request's
    background task) sees the change."""

    __slots__ = ("distinct_id", "owner", "parent", "properties", "resolution", "session_id")

    def __init__(self, owner: Context, parent: _Frame | None) -> None:
        self.owner = owner
        self.parent = parent
        self.distinct_id = owner.distinct_id
        self.session_id = owner.session_id
        self.properties = owner.properties
        # What this frame and its outer ones add up to, as of `resolution.generation`:
        # `resolved()` makes it again when GENERATION has moved on.
        self.resolution = _NOT_RESOLVED

    def resolved(self) -> _Resolved:
        resolved = self.resolution
        if resolved.generation == GENERATION[0]:
            return resolved
        generation = GENERATION[0]  # read before the frames: a change after it is seen later
        if self.parent is None:
            resolved = _Resolved(generation, self.distinct_id, self.session_id, self.properties)
        else:
            outer = self.parent.resolved()
            resolved = _Resolved(
                generation,
                self.distinct_id if self.distinct_id is not None else outer.distinct_id,
                self.session_id if self.session_id is not None else outer.session_id,
                outer.properties.under(self.properties) if outer.properties else self.properties,
            )
        self.resolution = resolved
        return resolved


_current: ContextVar[_Frame | None] = ContextVar("pug_context", default=None)
current_frame = _current.get  # what track() calls: None outside any context


class ContextView(NamedTuple):
    """The context `track()` would use now, read-only: its distinct id, session id and
    properties, nested contexts merged."""

    distinct_id: str | None
    session_id: str | None
    properties: Mapping[str, Any]


class Context:
    """What `pug.context(...)` returns: a context manager (`with`, `async with`) and a
    decorator (sync and async functions; each call enters the context anew). One object
    may be entered by many threads and tasks at once: each entry is its own frame."""

    __slots__ = ("distinct_id", "properties", "session_id")

    def __init__(
        self,
        distinct_id: str | None = None,
        session_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        self.distinct_id = distinct_id
        self.session_id = session_id
        self.properties = AddedProperties.of(properties) if properties else None

    def __enter__(self) -> Context:
        _current.set(_Frame(self, _current.get()))
        return self

    def __exit__(self, *exc: object) -> None:
        # Not a Token's reset: leaving works in another asyncio Context than entering did
        # (an async generator's finalizer), where reset() raises.
        frame = _current.get()
        while frame is not None and frame.owner is not self:
            frame = frame.parent
        if frame is not None:
            _current.set(frame.parent)

    async def __aenter__(self) -> Context:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()

    def __call__(self, func: F) -> F:
        """Decorate `func` so each call runs in this context."""
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # The call only makes the generator: its body would run outside the context.
            raise TypeError(
                "pug.context() cannot decorate a generator function: enter it in the "
                "generator's body (`with pug.context(...):`)"
            )
        if inspect.iscoroutinefunction(func):
            coroutine = cast(Callable[..., Awaitable[Any]], func)

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await coroutine(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return cast(F, run)

    def __repr__(self) -> str:
        keys = sorted(self.properties.plain) if self.properties else []
        return (
            f"pug.Context(distinct_id={self.distinct_id!r}, session_id={self.session_id!r}, "
            f"properties={keys})"
        )


def context(
    distinct_id: str | None = None,
    session_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Context:
    """A context for the events tracked under it: `track()` without a distinct id uses
    `distinct_id`, without a session id `session_id`, and `properties` are added to each
    event (the event's own win). Nested contexts merge, the inner winning. Ids are checked
    when an event uses them; properties now (a `$` key raises PugValidationError)."""
    return Context(distinct_id, session_id, properties)


def current_context() -> ContextView | None:
    """The context `track()` would use here, or None outside any."""
    frame = _current.get()
    if frame is None:
        return None
    resolved = frame.resolved()
    plain = resolved.properties.plain if resolved.properties else {}
    return ContextView(resolved.distinct_id, resolved.session_id, MappingProxyType(dict(plain)))


def set_context(
    distinct_id: str | None = None,
    session_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
) -> None:
    """Change the innermost context in place (a user who logs in halfway through a
    request): what is given replaces its distinct id or session id, and properties are
    added to its own (replacing a key it had). Everything running in that context from now
    on sees the change, tasks it started included. Outside any context it logs a warning
    and does nothing."""
    frame = _current.get()
    if frame is None:
        logger.warning("pug.set_context() outside any pug.context(): nothing was changed")
        return
    added = AddedProperties.of(properties) if properties else None  # raises before any change
    if distinct_id is not None:
        frame.distinct_id = distinct_id
    if session_id is not None:
        frame.session_id = session_id
    if added is not None:
        frame.properties = frame.properties.under(added) if frame.properties else added
    GENERATION[0] = _bump()
