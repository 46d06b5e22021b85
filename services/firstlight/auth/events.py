"""Authentication of the one public Kafka entry point, ``inputs.submit``.

Broker ACLs decide who may write a topic at all, but not for which app: every record of
``inputs.submit`` names its app in the event. So a submission must also carry an API key in a
record header (``authorization: Bearer <key>`` or ``x-api-key``), and the key must reach the
event's app; otherwise the record is dead-lettered with the reason and nothing is stored."""

from __future__ import annotations

from collections.abc import Mapping

from firstlight.auth import keys
from firstlight.auth.store import ApiKeyStore


class SubmissionGate:
    def __init__(self, admin_key: str, internal_key: str, store: ApiKeyStore) -> None:
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
