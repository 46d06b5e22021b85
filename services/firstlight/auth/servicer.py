"""AuthService gRPC servicer (served by the ingestion process, beside IngestionService).
Who may call which RPC is the interceptor's job (runtime/auth.py); this only does the work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from firstlight import validation
from firstlight.auth import keys
from firstlight.auth.keys import Principal
from firstlight.auth.store import ApiKeyStore, KeyRow
from firstlight.errors import InvalidArgument, NotFound
from firstlight.runtime.convert import timestamp
from firstlight.runtime.status import map_errors
from firstlight.v1 import auth_pb2, auth_pb2_grpc


def key_to_proto(row: KeyRow) -> auth_pb2.ApiKey:
    out = auth_pb2.ApiKey(id=row.id, app_id=row.app_id, name=row.name, created_at=timestamp(row.created_at))
    if row.revoked_at is not None:
        out.revoked_at.CopyFrom(timestamp(row.revoked_at))
    return out


def local_resolver(store: ApiKeyStore) -> Callable:  # type: ignore[type-arg]
    """Resolver for the interceptor of the process that owns the key table."""

    async def resolve(key_digest: str) -> Principal | None:
        row = await asyncio.to_thread(store.resolve, key_digest)
        return Principal(keys.APP, row.app_id, row.id) if row else None

    return resolve


@map_errors
class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, store: ApiKeyStore, check_app: Callable[[str], object], on_revoked: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.check_app = check_app  # raises NotFound for an unknown app
        self.on_revoked = on_revoked

    async def CreateApiKey(self, request, context):  # type: ignore[no-untyped-def]
        validation.app_id(request.app_id)
        validation.key_name(request.name)
        await asyncio.to_thread(self.check_app, request.app_id)
        row, key = await asyncio.to_thread(self.store.create, request.app_id, request.name)
        return auth_pb2.CreateApiKeyResponse(key=key_to_proto(row), secret=key)

    async def ListApiKeys(self, request, context):  # type: ignore[no-untyped-def]
        validation.app_id(request.app_id)
        rows = await asyncio.to_thread(self.store.list, request.app_id, request.include_revoked)
        return auth_pb2.ListApiKeysResponse(keys=[key_to_proto(r) for r in rows])

    async def RevokeApiKey(self, request, context):  # type: ignore[no-untyped-def]
        row, key_digest = await asyncio.to_thread(self.store.revoke, request.app_id, request.key_id)
        if self.on_revoked:
            self.on_revoked(key_digest)
        return key_to_proto(row)

    async def ResolveApiKey(self, request, context):  # type: ignore[no-untyped-def]
        if len(request.key_sha256) != 64:
            raise InvalidArgument("key_sha256 must be 64 hex characters")
        row = await asyncio.to_thread(self.store.resolve, request.key_sha256)
        if row is None:
            raise NotFound("unknown or revoked API key")
        return auth_pb2.ResolveApiKeyResponse(app_id=row.app_id, key_id=row.id)


def add_to_server(servicer: AuthServicer, server: grpc.aio.Server) -> list[str]:
    auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
    return [auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name]
