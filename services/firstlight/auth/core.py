"""API keys as a domain: making, listing, revoking and resolving an app's keys, and who may
submit to an app over ``inputs.submit``. No grpc or generated code here: the key table and the
app directory are the Protocols of ``ports.py``; the interceptor that enforces keys on every
RPC is ``firstlight.hosting.auth``.

Hosted by the ingestion process (see ``ingestion.main``): the key table lives in its store,
beside the apps a key must belong to, and inputs.submit is consumed there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from firstlight import validation
from firstlight.hosting import keys
from firstlight.hosting.keys import Principal
from firstlight.auth.ports import AppDirectory, KeyRow, KeyStorePort
from firstlight.errors import InvalidArgument, NotFound


class ApiKeys:
    def __init__(self, store: KeyStorePort, check_app: AppDirectory, on_revoked: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.check_app = check_app
        #: Called with a revoked key's digest (evicts the local authenticator's cache at once).
        self.on_revoked = on_revoked

    def create(self, app_id: str, name: str = "") -> tuple[KeyRow, str]:
        """A new key for an existing app: its row and the secret, shown this once."""
        validation.app_id(app_id)
        validation.key_name(name)
        self.check_app(app_id)
        return self.store.create(app_id, name)

    def list(self, app_id: str, include_revoked: bool = False) -> list[KeyRow]:
        validation.app_id(app_id)
        return self.store.list(app_id, include_revoked)

    def revoke(self, app_id: str, key_id: str) -> KeyRow:
        row, key_digest = self.store.revoke(app_id, key_id)
        if self.on_revoked:
            self.on_revoked(key_digest)
        return row

    def resolve(self, key_sha256: str) -> KeyRow:
        """The active key with this SHA-256 digest (for the other services' interceptors)."""
        if len(key_sha256) != 64:
            raise InvalidArgument("key_sha256 must be 64 hex characters")
        row = self.store.resolve(key_sha256)
        if row is None:
            raise NotFound("unknown or revoked API key")
        return row

    async def principal(self, key_digest: str) -> Principal | None:
        """The interceptor's resolver in the process that owns the key table."""
        row = await asyncio.to_thread(self.store.resolve, key_digest)
        return Principal(keys.APP, row.app_id, row.id) if row else None


class SubmissionGate:
    """Authentication of the one public Kafka entry point, ``inputs.submit``.

    Broker ACLs decide who may write a topic at all, but not for which app: every record of
    ``inputs.submit`` names its app in the event. So a submission must also carry an API key in
    a record header (``authorization: Bearer <key>`` or ``x-api-key``), and the key must reach
    the event's app; otherwise the record is dead-lettered with the reason and nothing is stored."""

    def __init__(self, admin_key: str, internal_key: str, store: KeyStorePort) -> None:
        self.admin_key = admin_key
        self.internal_key = internal_key
        self.store = store

    def refusal(self, headers: Mapping[str, str], app_id: str) -> str | None:
        """None if the record may touch ``app_id``; else why not (for the dead letter)."""
        key = keys.key_from_metadata(headers.items())
        if not key:
            return "Unauthenticated: no API key in the record's `authorization` header"
        if keys.same_key(key, self.admin_key) or keys.same_key(key, self.internal_key):
            return None
        row = self.store.resolve(keys.digest(key)) if keys.looks_like_app_key(key) else None
        if row is None:
            return "Unauthenticated: invalid or revoked API key"
        if row.app_id != app_id:
            return f"PermissionDenied: API key {row.id} of app {row.app_id!r} cannot submit to app {app_id!r}"
        return None
