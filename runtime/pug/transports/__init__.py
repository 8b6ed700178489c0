"""Network transports: Connect over HTTP/1.1 (the default) and gRPC with grpclib."""

from __future__ import annotations

from pug.transport import Transport


def make_transport(name: str, base_url: str, api_key: str) -> Transport:
    """The transport named `name` ("connect" or "grpc") for `base_url`."""
    if name == "connect":
        from pug.transports.connect import ConnectTransport

        return ConnectTransport(base_url, api_key)
    if name == "grpc":
        from pug.transports.grpc import GrpcTransport

        return GrpcTransport(base_url, api_key)
    raise ValueError(f"unknown transport {name!r}: use 'connect', 'grpc' or a Transport")
