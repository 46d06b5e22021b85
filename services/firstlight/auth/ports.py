"""What the auth core needs from the outside, as typed Protocols, and the key row it reads:
the key table (``store.ApiKeyStore``, SQLAlchemy) and the app directory (the ingestion core,
which owns the apps: a key is only made for an app that exists)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass
class KeyRow:
    id: str
    app_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


class KeyStorePort(Protocol):
    def create(self, app_id: str, name: str = "") -> tuple[KeyRow, str]:
        """Store a new key for ``app_id``; the row and the full key (which is not kept)."""
        ...

    def list(self, app_id: str, include_revoked: bool = False) -> list[KeyRow]: ...

    def revoke(self, app_id: str, key_id: str) -> tuple[KeyRow, str]:
        """Revoke (idempotent): the row and the key's digest. NotFound for an unknown key."""
        ...

    def resolve(self, key_digest: str) -> KeyRow | None:
        """The active key with this digest, or None."""
        ...


class AppDirectory(Protocol):
    def __call__(self, app_id: str) -> object:
        """Returns if the app exists; raises NotFound if not."""
        ...
