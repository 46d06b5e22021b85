"""gRPC client channels with credentials: the API key goes in every call's metadata
(``authorization: Bearer <key>``) and TLS is used when a root certificate is given.

The services call each other through :func:`internal_channel` (internal key, TLS root from
FIRSTLIGHT_TLS_ROOT_CERT_FILE); the SDK uses :func:`client_channel` with the user's key."""

from __future__ import annotations

import collections
from functools import cache
from pathlib import Path
from typing import Any

import grpc

from firstlight.config import SecuritySettings


def auth_metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if key else ()


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _KeyInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the key to every call of a synchronous channel."""

    def __init__(self, key: str) -> None:
        self.metadata = auth_metadata(key)

    def _details(self, d: Any) -> _CallDetails:
        return _CallDetails(
            d.method,
            d.timeout,
            [*(d.metadata or ()), *self.metadata],
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(details), request_iterator)


class _AioKeyInterceptor(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Adds the key to every unary-request call of an asyncio channel."""

    def __init__(self, key: str) -> None:
        self.metadata = auth_metadata(key)

    def _details(self, d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(tuple(d.metadata) if d.metadata else ()), *self.metadata)
        return grpc.aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready)

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)


def _root_cert(path: str | Path | bytes | None) -> bytes | None:
    if path is None or path == "":
        return None
    return path if isinstance(path, bytes) else Path(path).read_bytes()


def client_channel(
    address: str, *, api_key: str = "", tls_root_cert: str | Path | bytes | None = None, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A synchronous channel that sends ``api_key`` on every call; TLS when ``tls_root_cert``
    (PEM bytes or a file) is given."""
    root = _root_cert(tls_root_cert)
    if root is not None:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root), options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    return grpc.intercept_channel(channel, _KeyInterceptor(api_key)) if api_key else channel


def aio_client_channel(
    address: str, *, api_key: str = "", tls_root_cert: str | Path | bytes | None = None, options: list[tuple[str, Any]] | None = None
) -> grpc.aio.Channel:
    root = _root_cert(tls_root_cert)
    interceptors = [_AioKeyInterceptor(api_key)] if api_key else None
    if root is not None:
        return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(root), options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


@cache
def _security() -> SecuritySettings:
    return SecuritySettings()


def internal_channel(address: str, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """Service-to-service channel: the internal key, and TLS if FIRSTLIGHT_TLS_ROOT_CERT_FILE is set."""
    s = _security()
    return client_channel(address, api_key=s.internal_key.get_secret_value(), tls_root_cert=s.tls_root_cert_file, options=options)


def aio_internal_channel(address: str, options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
    s = _security()
    return aio_client_channel(address, api_key=s.internal_key.get_secret_value(), tls_root_cert=s.tls_root_cert_file, options=options)
