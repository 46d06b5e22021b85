"""What every store's ``migrations/env.py`` runs: migrate on the connection (and with the
schema) that :func:`firstlight.migrations.upgrade` put in the Alembic config."""

from __future__ import annotations

from alembic import context


def run() -> None:
    cfg = context.config
    conn, schema = cfg.attributes["connection"], cfg.attributes["schema"]
    context.configure(
        connection=conn,
        target_metadata=schema.metadata,
        version_table=schema.version_table,
        include_name=schema.include_name,
        compare_type=True,
        render_as_batch=True,  # generated ALTERs also work on SQLite
    )
    with context.begin_transaction():  # joins the caller's transaction
        context.run_migrations()
