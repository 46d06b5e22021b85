"""API keys (AuthService, served by the ingestion process; needs the admin key)."""

from __future__ import annotations

from firstlight.sdk.base import ServiceCalls
from firstlight.sdk.errors import wrap_errors
from firstlight.v1 import auth_pb2


class AuthCalls(ServiceCalls):
    @wrap_errors
    def create_api_key(self, app_id: str, name: str = "") -> tuple[auth_pb2.ApiKey, str]:
        """A new key for ``app_id``: (its record, the full key). The key is shown only here."""
        resp = self.auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(app_id=app_id, name=name), timeout=self._deadline("CreateApiKey"))
        return resp.key, resp.secret

    @wrap_errors
    def list_api_keys(self, app_id: str, include_revoked: bool = False) -> list[auth_pb2.ApiKey]:
        req = auth_pb2.ListApiKeysRequest(app_id=app_id, include_revoked=include_revoked)
        return list(self.auth.ListApiKeys(req, timeout=self._deadline("ListApiKeys")).keys)

    @wrap_errors
    def revoke_api_key(self, app_id: str, key_id: str) -> auth_pb2.ApiKey:
        req = auth_pb2.RevokeApiKeyRequest(app_id=app_id, key_id=key_id)
        return self.auth.RevokeApiKey(req, timeout=self._deadline("RevokeApiKey"))
