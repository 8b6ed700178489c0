"""Network transports: Connect over HTTP/1.1 (the default) and gRPC with grpclib.

- `base.py`: the `Transport` interface, and what the transports share (response bounds,
  the key check, open streams, what a fork leaves behind).
- `connect.py`: Connect; unary calls over `_http11.py` (the SDK's own HTTP/1.1 client),
  streams and proxied calls over httpx; one mapping of failures and answers to `PugError`.
- `grpc.py`: gRPC over HTTP/2 with grpclib.
- `_url.py`: `base_url` parsing and display; `redact.py`: the key out of messages and logs.
"""

from __future__ import annotations

from pug.transports.base import Transport


def make_transport(name: str, base_url: str, api_key: str) -> Transport:
    """The transport named `name` ("connect" or "grpc") for `base_url`."""
    if name == "connect":
        from pug.transports.connect import ConnectTransport

        return ConnectTransport(base_url, api_key)
    if name == "grpc":
        from pug.transports.grpc import GrpcTransport

        return GrpcTransport(base_url, api_key)
    raise ValueError(f"unknown transport {name!r}: use 'connect', 'grpc' or a Transport")
