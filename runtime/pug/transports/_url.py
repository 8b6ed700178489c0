"""`base_url`: checked once, at a transport's construction, and shown without secrets.

`parse_base_url` turns the caller's string into a `BaseURL` (scheme, ASCII host, port,
path prefix) or raises ValueError naming what is wrong; `display_url` is how an error
message shows a URL (credentials and query redacted, length bounded).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

# Characters of a caller's input (a bad base_url) that an error message shows.
ECHO_CHARS = 200


@dataclass(frozen=True)
class BaseURL:
    """A checked `base_url`: scheme, host, port and an optional path prefix."""

    scheme: str
    host: str  # ASCII: a DNS name (IDNA-encoded), an IPv4 or an IPv6 address
    port: int
    prefix: str  # "" or "/something", no trailing slash

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")


def display_url(url: str) -> str:
    """`url` as an error message may show it: `user:password@` and any query or fragment
    replaced by `[redacted]`, cut to ECHO_CHARS characters, quoted."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    end = len(rest)
    for mark in "?#":
        found = rest.find(mark)
        if 0 <= found < end:
            end = found
    if end < len(rest):  # a query may hold a key (`?api_key=…`)
        rest = rest[: end + 1] + "[redacted]"
    at = rest.rfind("@", 0, end)
    if at >= 0:  # credentials (however malformed the rest)
        rest = "[redacted]" + rest[at:]
    shown = scheme + sep + rest
    if len(shown) > ECHO_CHARS:
        return f"{shown[:ECHO_CHARS]!r}… ({len(shown)} characters)"
    return repr(shown)


def parse_base_url(base_url: str) -> BaseURL:
    """Check `base_url` (`https://host[:port][/prefix]` or `http://…`); ValueError if bad.

    Checked here, once, rather than failing at every request: the scheme (http or https),
    a host that can be resolved as given (a DNS name that IDNA can encode, an IPv4 or IPv6
    address), a port from 1 to 65535, no credentials, query or fragment, no control
    characters. Messages show the URL without credentials (display_url).
    """
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError("base_url must be a non-empty string like https://api.example.com")
    url = base_url.strip()
    shown = display_url(url)
    for index, char in enumerate(url):
        if not char.isprintable():  # a space is printable: refused in the host, quoted in the path
            raise ValueError(
                f"base_url must not contain control characters (one at index {index}): {shown}"
            )
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": an unbalanced or bad [address]
        raise ValueError(f"base_url has an invalid IPv6 address: {shown}") from None
    if parts.scheme not in ("http", "https") or not url.lower().startswith(parts.scheme + "://"):
        raise ValueError(f"base_url must start with http:// or https://, got {shown}")
    if "@" in parts.netloc:
        raise ValueError(
            f"base_url must not carry credentials (user:password@); pass api_key instead: {shown}"
        )
    if "?" in url or "#" in url:
        raise ValueError(f"base_url must not have a query or fragment: {shown}")
    if not parts.hostname:
        raise ValueError(f"base_url has no host: {shown}")
    # The port's text, read here: what urlsplit accepts (`+1`, ` 1`) varies by version.
    after_host = parts.netloc.rpartition("]")[2] if parts.netloc.startswith("[") else parts.netloc
    _, colon, port_text = after_host.partition(":")
    if not colon or not port_text:
        port = 443 if parts.scheme == "https" else 80
    elif (
        port_text.isdigit()
        and port_text.isascii()
        and len(port_text) <= 5
        and 0 < int(port_text) < 65536
    ):
        port = int(port_text)
    else:
        raise ValueError(f"base_url has an invalid port (1 to 65535): {shown}")
    return BaseURL(
        parts.scheme, _host(parts.netloc, parts.hostname, shown), port, parts.path.rstrip("/")
    )


def _idna(hostname: str) -> str:
    """`hostname.encode("idna")`, as text. An ASCII name is checked here as that codec
    checks it (label lengths; nothing else changes), without importing the codec (~2 ms)."""
    if not hostname.isascii():
        return hostname.encode("idna").decode("ascii")
    *labels, last = hostname.split(".")
    if any(not 0 < len(label) < 64 for label in labels) or len(last) >= 64:
        raise UnicodeError("label empty or too long")
    return hostname


def _host(netloc: str, hostname: str, shown: str) -> str:
    """The host in the ASCII form that DNS, TLS (SNI) and the Host header use."""
    if netloc.startswith("["):
        try:
            if "%" in hostname:  # a zone (`%eth0`): a Pug server is not link-local
                raise ValueError(hostname)
            ipaddress.IPv6Address(hostname)
        except ValueError:
            raise ValueError(f"base_url has an invalid IPv6 address: {shown}") from None
        return hostname
    try:
        ascii_host = _idna(hostname)
    except UnicodeError:
        raise ValueError(
            f"base_url's host is not a valid domain name (IDNA cannot encode it): {shown}"
        ) from None
    if not _HOST_NAME.fullmatch(ascii_host) or len(ascii_host) > 254:
        raise ValueError(f"base_url's host is not a valid domain name or address: {shown}")
    return ascii_host
