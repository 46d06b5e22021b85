"""Versioned schema migrations (Alembic), run in-process when a store opens its database.

Each store owns a ``migrations/`` folder beside its ``store.py`` (``env.py`` + ``versions/``) and
declares a :class:`Schema`; :func:`upgrade` brings a database to that store's head. No alembic
CLI or ini file is involved at run time: the folders ship as package data.

* Each store keeps its version in its own table (``alembic_version_<store>``), so stores that
  share one database (ingestion + auth, training + curation) never read each other's versions,
  and autogenerate compares only the store's own tables.
* A database made before versions existed (tables but no version table) is stamped at the
  revision its shape matches (``Schema.legacy_revision``), then upgraded from there.
* On PostgreSQL the whole upgrade is one transaction under an advisory lock, so replicas that
  start together migrate once, one after the other.

Adding a migration: docs/migrations.md."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine, Inspector

log = logging.getLogger(__name__)
# Alembic says "Context impl ..." per connection and lists its plugins (on import) at INFO; one
# line of ours per store that changed (upgrade below) says what matters.
for _name in ("alembic.runtime.migration", "alembic.runtime.plugins"):
    logging.getLogger(_name).setLevel(logging.WARNING)

from alembic import command  # noqa: E402  (after the levels: importing it logs)
from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402


@dataclass(frozen=True)
class Schema:
    """One store's tables and the migrations that build them."""

    #: the store's name: its version table is ``alembic_version_<name>``
    name: str
    #: the store's migrations folder (env.py, versions/)
    folder: Path
    #: the store's tables as the code uses them; a fresh upgrade must equal it
    metadata: MetaData
    #: the revision an unversioned database of this store is at (None: the store has no tables
    #: there yet); decided from the shape the pre-versioning code left (tables, columns)
    legacy_revision: Callable[[Inspector], str | None] = field(default=lambda _insp: None)

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name}"

    def include_name(self, name: str | None, type_: str, parent_names: Any) -> bool:
        """Only this store's tables take part in comparisons (a shared database holds others)."""
        return type_ != "table" or name in self.metadata.tables


def _config(schema: Schema, conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(schema.folder).replace("%", "%%"))  # configparser syntax
    cfg.attributes["connection"] = conn
    cfg.attributes["schema"] = schema
    return cfg


def _lock(conn: Connection, schema: Schema) -> None:
    if conn.dialect.name == "postgresql":  # released when the transaction ends
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(schema.version_table.encode())})


def current_revision(conn: Connection, schema: Schema) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": schema.version_table}).get_current_revision()


def upgrade(engine: Engine, schema: Schema, revision: str = "head") -> None:
    """Bring the store's tables in ``engine``'s database to ``revision`` (stamping a database
    made before versions existed first)."""
    with engine.begin() as conn:
        _lock(conn, schema)
        cfg = _config(schema, conn)
        before = current_revision(conn, schema)
        known = {r.revision for r in ScriptDirectory.from_config(cfg).walk_revisions()}
        if before is not None and before not in known:  # e.g. newer code ran here, then a rollback
            raise RuntimeError(
                f"the {schema.name} store's database is at schema revision {before!r}, which this version of "
                f"Firstlight does not know (it knows {', '.join(sorted(known))}): run the version that migrated it"
            )
        if before is None:
            legacy = schema.legacy_revision(inspect(conn))
            if legacy is not None:
                command.stamp(cfg, legacy)
                log.info("%s store: made before versioned migrations, stamped at %s", schema.name, legacy)
                before = legacy
        command.upgrade(cfg, revision)
        after = current_revision(conn, schema)
        if after != before:
            log.info("%s store: schema upgraded from %s to %s", schema.name, before or "nothing", after)


def downgrade(engine: Engine, schema: Schema, revision: str) -> None:
    with engine.begin() as conn:
        _lock(conn, schema)
        command.downgrade(_config(schema, conn), revision)


def diff(engine: Engine, schema: Schema) -> list[Any]:
    """Alembic's autogenerate comparison of the database with the store's tables ([] = same)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": schema.version_table, "include_name": schema.include_name, "compare_type": True})
        return list(compare_metadata(ctx, schema.metadata))
