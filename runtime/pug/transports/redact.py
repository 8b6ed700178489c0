"""Keeping the API key out of messages and logs.

- `redact(text, key)`: what a transport puts in an error message that quotes the server
  (a proxy that echoes the request echoes the `x-api-key` header) or a library's exception.
- `quote(body, key)`: the start of an error body, for a message: decoded, redacted, cut.
- `server_error(code, message, details, key)`: the PugError of an error a server wrote
  (a Connect error, a gRPC status), its message and details redacted.
- `RedactKeys`: a logging filter on the loggers of the libraries under the transports.
  hpack logs every header it encodes or decodes at DEBUG (`x-api-key` among them: as
  given, and Huffman-coded in the header block), httpcore the response headers (a proxy
  may echo the request's). The filter rewrites a record that contains a key of a live
  transport, in any of those forms, with `[redacted]` in its place; every other record
  passes untouched, and a logger below DEBUG never builds its records at all.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import sys
import threading
import weakref
from typing import Any

from pug.errors import PugError, error_for
from pug.transports.base import QUOTE_CHARS

REDACTED = "[redacted]"
# Characters of a server's error message kept in a PugError (a log line, not a page).
MESSAGE_CHARS = 1000
# How deep redact_value goes into error details (a Connect detail is 2 or 3 levels deep).
_MAX_DEPTH = 32
# Keys shorter than this are not looked for in logs (they would match ordinary text).
_MIN_KEY = 6
# `scheme://user:password@`: a URL with credentials in a library's message (a proxy URL).
_URL_CREDENTIALS = re.compile(r"(?<=//)[^/\s@'\"]+@")

_lock = threading.Lock()
_keys: dict[str, int] = {}  # key -> number of live transports using it
_forms: tuple[str, ...] = ()  # every form of every key, as a formatted record shows it
# Whether _forms holds the keys' HPACK Huffman forms: only once hpack is imported (its
# Huffman table costs every process ~10 ms to import, and only gRPC uses it).
_with_huffman = False
# Keys of transports collected since: their finalizers only note it here (the collector
# may run them anywhere, even in this module with _lock held); register() counts them down.
_released: collections.deque[str] = collections.deque()


def redact(text: str, key: str | None) -> str:
    """`text` without `key` (nor URL credentials)."""
    if key and key in text:
        text = text.replace(key, REDACTED)
    if "@" in text:
        text = _URL_CREDENTIALS.sub(REDACTED + "@", text)
    return text


def quote(body: bytes, key: str | None, limit: int = QUOTE_CHARS) -> str:
    """The start of `body` (a bounded read of an error body) for an error message: text,
    redacted, on one line, at most `limit` characters."""
    text = redact(body.decode("utf-8", "replace"), key)
    if key:  # the read may have stopped inside the key: no start of it either
        for length in range(len(key) - 1, 3, -1):
            if text.endswith(key[:length]):
                text = text[:-length] + REDACTED
                break
    # One line of printable text, whatever the page's layout (or binary garbage).
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def server_error(
    code: str, message: object, details: object, key: str | None, retry_after: float | None
) -> PugError:
    """The PugError of an error a server wrote: its message redacted and cut to
    MESSAGE_CHARS, its details (a list, else none) redacted."""
    text = redact(str(message), key)
    if len(text) > MESSAGE_CHARS:
        text = text[: MESSAGE_CHARS - 1] + "…"
    return error_for(
        code,
        text,
        details=redact_value(details, key) if isinstance(details, list) else None,
        retry_after=retry_after,
    )


def redact_value(value: Any, key: str | None, depth: int = 0) -> Any:
    """`value` (JSON: error details) with `key` redacted from every string in it; what is
    nested deeper than Connect details ever are is left out."""
    if isinstance(value, str):
        return redact(value, key)
    if depth > _MAX_DEPTH and isinstance(value, list | dict):
        return "[too deeply nested]"
    if isinstance(value, list):
        return [redact_value(item, key, depth + 1) for item in value]
    if isinstance(value, dict):
        return {redact(str(k), key): redact_value(v, key, depth + 1) for k, v in value.items()}
    return value


def register(owner: object, key: str) -> None:
    """Look for `key` in the libraries' log records while `owner` (a transport) lives."""
    with _lock:
        while _released:
            released = _released.popleft()
            left = _keys.get(released, 0) - 1
            if left > 0:
                _keys[released] = left
            else:
                _keys.pop(released, None)
        _keys[key] = _keys.get(key, 0) + 1
        _rebuild()
    weakref.finalize(owner, _released.append, key)


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it when the process forked


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork)


def _rebuild() -> None:
    global _forms, _with_huffman
    with_huffman = "hpack" in sys.modules
    forms: set[str] = set()
    for key in _keys:
        if len(key) < _MIN_KEY:
            continue
        forms.add(key)
        raw = key.encode("ascii")
        forms.update(_escaped(raw))
        huffman = _huffman(raw) if with_huffman else None
        if huffman:
            forms.update(_escaped(huffman))
    _forms = tuple(sorted(forms, key=len, reverse=True))
    _with_huffman = with_huffman


def _escaped(data: bytes) -> set[str]:
    """`data` as it appears inside the repr of a larger bytes object (either quote)."""
    out = set()
    for quote_char in "'\"":
        parts = []
        for byte in data:
            char = chr(byte)
            if char in ("\\", quote_char):
                parts.append("\\" + char)
            elif char in "\t\n\r":
                parts.append(repr(char)[1:-1])
            elif 0x20 <= byte < 0x7F:
                parts.append(char)
            else:
                parts.append(f"\\x{byte:02x}")
        out.add("".join(parts))
    return out


def _huffman(data: bytes) -> bytes | None:
    """`data` Huffman-coded as HPACK sends a header value (what hpack logs in a block)."""
    try:
        from hpack.huffman import HuffmanEncoder
        from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    except ImportError:
        return None
    encoded: bytes = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)
    return encoded if len(encoded) >= _MIN_KEY else None


class RedactKeys(logging.Filter):
    """Rewrites a record that shows a registered key (see the module's docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _with_huffman and record.name.startswith("hpack"):  # hpack is in use now
            with _lock:
                _rebuild()
        forms = _forms
        if forms:
            # A record whose message cannot be formatted is not ours to fix.
            with contextlib.suppress(Exception):
                _redact_record(record, forms)
        return True


def _redact_record(record: logging.LogRecord, forms: tuple[str, ...]) -> None:
    message = record.getMessage()
    if any(form in message for form in forms):
        record.msg = _replace(message, forms)
        record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        if any(form in text for form in forms):
            record.exc_text = _replace(text, forms)
            record.exc_info = None  # nobody formats the raw exception again
    if record.stack_info and any(form in record.stack_info for form in forms):
        record.stack_info = _replace(record.stack_info, forms)


def _replace(text: str, forms: tuple[str, ...]) -> str:
    for form in forms:
        text = text.replace(form, REDACTED)
    return text


_FILTER = RedactKeys()


def filter_loggers(*names: str) -> None:
    """Put the filter on these loggers (once each). A filter acts on the records its own
    logger makes, not on those that propagate from below: name each logger that logs."""
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
