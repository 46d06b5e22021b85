"""AuthService gRPC servicer (served by the ingestion process, beside IngestionService): proto ⇄
domain conversion around :class:`firstlight.auth.core.ApiKeys`. Who may call which RPC is the
interceptor's job (hosting/auth.py)."""

from __future__ import annotations

import asyncio

import grpc

from firstlight.auth.core import ApiKeys
from firstlight.auth.ports import KeyRow
from firstlight.runtime.convert import timestamp
from firstlight.runtime.status import map_errors
from firstlight.v1 import auth_pb2, auth_pb2_grpc


def key_to_proto(row: KeyRow) -> auth_pb2.ApiKey:
    out = auth_pb2.ApiKey(id=row.id, app_id=row.app_id, name=row.name, created_at=timestamp(row.created_at))
    if row.revoked_at is not None:
        out.revoked_at.CopyFrom(timestamp(row.revoked_at))
    return out


@map_errors
class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    async def CreateApiKey(self, request, context):  # type: ignore[no-untyped-def]
        row, key = await asyncio.to_thread(self.keys.create, request.app_id, request.name)
        return auth_pb2.CreateApiKeyResponse(key=key_to_proto(row), secret=key)

    async def ListApiKeys(self, request, context):  # type: ignore[no-untyped-def]
        rows = await asyncio.to_thread(self.keys.list, request.app_id, request.include_revoked)
        return auth_pb2.ListApiKeysResponse(keys=[key_to_proto(r) for r in rows])

    async def RevokeApiKey(self, request, context):  # type: ignore[no-untyped-def]
        return key_to_proto(await asyncio.to_thread(self.keys.revoke, request.app_id, request.key_id))

    async def ResolveApiKey(self, request, context):  # type: ignore[no-untyped-def]
        row = await asyncio.to_thread(self.keys.resolve, request.key_sha256)
        return auth_pb2.ResolveApiKeyResponse(app_id=row.app_id, key_id=row.id)


def add_to_server(servicer: AuthServicer, server: grpc.aio.Server) -> list[str]:
    auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
    return [auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name]
