"""The API key table, in the ingestion service's relational store (SQLite or PostgreSQL, one
code path). Only SHA-256 digests of keys are stored (see keys.py for why that is enough)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, insert, select, update
from sqlalchemy.engine import Engine

from firstlight import migrations
from firstlight.auth import migrations as schema_migrations
from firstlight.auth.ports import KeyRow
from firstlight.errors import InvalidArgument, NotFound
from firstlight.hosting.keys import digest, new_key

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("app_id", String(64), nullable=False),
    Column("name", String(256), nullable=False, default=""),
    Column("digest", String(64), nullable=False, unique=True),  # the lookup of every RPC
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_api_keys_app", "app_id"),
)

SCHEMA = migrations.Schema("auth", schema_migrations.FOLDER, metadata, schema_migrations.legacy_revision)

MAX_NAME_CHARS = 256


def _row(r) -> KeyRow:  # type: ignore[no-untyped-def]
    return KeyRow(r.id, r.app_id, r.name, r.created_at, r.revoked_at)


class ApiKeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        migrations.upgrade(engine, SCHEMA)

    def create(self, app_id: str, name: str = "") -> tuple[KeyRow, str]:
        """Store a new key for ``app_id`` (the caller checked the app exists); returns the row
        and the full key, which is not kept."""
        if len(name) > MAX_NAME_CHARS:
            raise InvalidArgument(f"key name is {len(name)} characters, over the limit of {MAX_NAME_CHARS}")
        key_id, key = new_key()
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(insert(api_keys).values(id=key_id, app_id=app_id, name=name, digest=digest(key), created_at=now))
        return KeyRow(key_id, app_id, name, now, None), key

    def list(self, app_id: str, include_revoked: bool = False) -> list[KeyRow]:
        q = select(api_keys).where(api_keys.c.app_id == app_id)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            rows = [_row(r) for r in conn.execute(q)]
        return sorted(rows, key=lambda r: r.created_at, reverse=True)

    def revoke(self, app_id: str, key_id: str) -> tuple[KeyRow, str]:
        """Revoke (idempotent); returns the row and the key's digest (to evict caches)."""
        with self.engine.begin() as conn:
            r = conn.execute(select(api_keys).where(api_keys.c.id == key_id, api_keys.c.app_id == app_id)).first()
            if r is None:
                raise NotFound(f"API key {key_id!r} does not exist in app {app_id!r}")
            if r.revoked_at is None:
                conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=datetime.now(UTC)))
            r = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()
        return _row(r), r.digest

    def name_of(self, app_id: str, key_id: str) -> str:
        """A key's name ("" if unknown), for records of who did what."""
        with self.engine.connect() as conn:
            name = conn.execute(select(api_keys.c.name).where(api_keys.c.id == key_id, api_keys.c.app_id == app_id)).scalar_one_or_none()
        return name or ""

    def resolve(self, key_digest: str) -> KeyRow | None:
        """The active key with this digest, or None."""
        with self.engine.connect() as conn:
            r = conn.execute(select(api_keys).where(api_keys.c.digest == key_digest, api_keys.c.revoked_at.is_(None))).first()
        return _row(r) if r is not None else None
