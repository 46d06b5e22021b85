"""Curation's persisted state: per-app stream policies, the labeling queue with its counters,
and the active-learning rounds, in the curation service's own database (SQLite by default,
PostgreSQL by URL). Until issue 15 these tables lived in the training database (curation ran in
that process): :func:`adopt_from_training_db` moves an existing stack's rows over once."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Float, Index, Integer, MetaData, String, Table, func, insert, inspect, select, update
from sqlalchemy.engine import Engine

from firstlight import db, migrations
from firstlight.curation import migrations as schema_migrations

log = logging.getLogger(__name__)
metadata = MetaData()

policies = Table(
    "curation_policies",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("policy", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
queue = Table(
    "curation_queue",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("input_id", String(128), primary_key=True),
    Column("seq", Integer, nullable=False),  # per-app arrival order (paging, oldest first)
    Column("model_id", String(128), nullable=False),
    Column("model_version", String(16), nullable=False),
    Column("score", Float, nullable=False),
    Column("strategy", String(32), nullable=False),
    Column("predicted", String(256), nullable=False),
    Column("state", Integer, nullable=False),
    Column("concepts", JSON, nullable=False),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("labeled_at", DateTime(timezone=True), nullable=True),
    Column("round", Integer, nullable=False, default=0),
    # Set once the labeling.queue event was acknowledged; a redelivered prediction republishes
    # an item whose event was not (the row and the event cannot share a transaction).
    Column("published", Boolean, nullable=False, default=False),
)
counters = Table(
    "curation_counters",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)
rounds = Table(
    "curation_rounds",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("record", JSON, nullable=False),
)

# A waiting queue item leased to one labeler (curation/leases.py): nobody else gets it until
# the lease ends (a label, a release, or expires_at).
leases = Table(
    "curation_leases",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("input_id", String(128), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
# A model version's stored prediction per input (curation/pool_scores.py: ScorePool), for the
# gallery's filters and for sorting by uncertainty.
pool_scores = Table(
    "curation_pool_scores",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("model_id", String(128), primary_key=True),
    Column("version", String(16), primary_key=True),
    Column("input_id", String(128), primary_key=True),
    Column("predicted", String(256), nullable=False),
    Column("score", Float, nullable=False),
    Column("uncertainty", Float, nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
    Index("ix_pool_scores_filter", "app_id", "model_id", "version", "predicted", "score"),
)

# The labels and split of the app's inputs as ingestion has them (curation/input_labels.py):
# read with the pool by ScorePool, kept current by annotations.changed (the newer
# label_revision wins). The gallery's label and split filters then combine with the prediction
# filters in one query, and the pool's labeling source skips labeled inputs.
input_labels = Table(
    "curation_input_labels",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("input_id", String(128), primary_key=True),
    Column("split", Integer, nullable=False),
    Column("labeled", Boolean, nullable=False),
    Column("label_revision", BigInteger, nullable=False),
)
input_concepts = Table(
    "curation_input_concepts",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("concept", String(256), primary_key=True),
    Column("input_id", String(128), primary_key=True),
)

# Pool-scoring jobs (curation/pool_scores.py), so that one cut by a restart is resumed.
scoring_jobs = Table(
    "curation_scoring_jobs",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("app_id", String(64), nullable=False),
    Column("model_id", String(128), nullable=False),
    Column("model_version", String(16), nullable=False),
    Column("unlabeled_only", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    Column("scored", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("error", String(1024), nullable=False),
    Column("resumed", Boolean, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

QUEUED, LABELED = 1, 2
COUNTERS = ("screened", "below_threshold", "skipped_rate", "skipped_budget", "duplicates", "without_input_id")

SCHEMA = migrations.Schema("curation", schema_migrations.FOLDER, metadata, schema_migrations.legacy_revision)


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # SQLite drops the zone


class CurationStore:
    def __init__(self, url: str | None = None, engine: Engine | None = None) -> None:
        self.engine = engine if engine is not None else db.make_engine(url or "sqlite://")
        migrations.upgrade(self.engine, SCHEMA)
        # One writer at a time for read-then-write transactions (the queue, its leases, the
        # inputs' labels): the prediction and label consumers and the RPCs share the store.
        self.write_lock = threading.Lock()

    # -- policies -----------------------------------------------------------------------
    def set_policy(self, app_id: str, policy: dict) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(policies.c.app_id).where(policies.c.app_id == app_id)).first():
                conn.execute(update(policies).where(policies.c.app_id == app_id).values(policy=policy, updated_at=utcnow()))
            else:
                conn.execute(insert(policies).values(app_id=app_id, policy=policy, updated_at=utcnow()))

    def policy(self, app_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(policies.c.policy).where(policies.c.app_id == app_id)).first()
        return dict(row[0]) if row else None

    # -- queue ----------------------------------------------------------------------------
    def count(self, conn, app_id: str, name: str, n: int = 1) -> None:  # type: ignore[no-untyped-def]
        key = (counters.c.app_id == app_id, counters.c.name == name)
        if conn.execute(select(counters.c.value).where(*key)).first():
            conn.execute(update(counters).where(*key).values(value=counters.c.value + n))
        else:
            conn.execute(insert(counters).values(app_id=app_id, name=name, value=n))

    def counters(self, app_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(counters.c.name, counters.c.value).where(counters.c.app_id == app_id)).all()
            states = conn.execute(select(queue.c.state, func.count()).where(queue.c.app_id == app_id).group_by(queue.c.state)).all()
        out = dict.fromkeys(COUNTERS, 0)
        out.update({n: int(v) for n, v in rows})
        by_state = {int(s): int(c) for s, c in states}
        out["queued"], out["labeled"] = by_state.get(QUEUED, 0), by_state.get(LABELED, 0)
        return out

    def get_item(self, conn, app_id: str, input_id: str) -> dict | None:  # type: ignore[no-untyped-def]
        row = conn.execute(select(queue).where(queue.c.app_id == app_id, queue.c.input_id == input_id)).mappings().first()
        return dict(row) if row else None

    def queued_since(self, conn, app_id: str, since: datetime) -> int:  # type: ignore[no-untyped-def]
        return int(conn.execute(select(func.count()).where(queue.c.app_id == app_id, queue.c.queued_at >= since)).scalar_one())

    def total_queued(self, conn, app_id: str) -> int:  # type: ignore[no-untyped-def]
        return int(conn.execute(select(func.count()).where(queue.c.app_id == app_id)).scalar_one())

    def add_item(self, conn, **values: Any) -> dict:  # type: ignore[no-untyped-def]
        seq = conn.execute(select(func.coalesce(func.max(queue.c.seq), 0)).where(queue.c.app_id == values["app_id"])).scalar_one()
        row = dict(values, seq=int(seq) + 1, state=QUEUED, concepts=[], labeled_at=None, round=0, published=False)
        conn.execute(insert(queue).values(**row))
        return row

    def mark_published(self, app_id: str, input_ids: list[str]) -> None:
        if input_ids:
            with self.engine.begin() as conn:
                conn.execute(update(queue).where(queue.c.app_id == app_id, queue.c.input_id.in_(input_ids)).values(published=True))

    def set_labels(self, conn, app_id: str, input_id: str, concepts: list[str], now: datetime) -> bool:  # type: ignore[no-untyped-def]
        """Record labels on a queued input; True when it just went from queued to labeled."""
        item = self.get_item(conn, app_id, input_id)
        if item is None:
            return False
        if not concepts:  # labels removed again: back to waiting, unless a round already used it
            if item["state"] == LABELED and not item["round"]:
                conn.execute(update(queue).where(queue.c.app_id == app_id, queue.c.input_id == input_id).values(state=QUEUED, concepts=[], labeled_at=None))
            return False
        values: dict[str, Any] = {"concepts": sorted(concepts)}
        fresh = item["state"] == QUEUED
        if fresh:
            values.update(state=LABELED, labeled_at=now)
        conn.execute(update(queue).where(queue.c.app_id == app_id, queue.c.input_id == input_id).values(**values))
        return fresh

    def items(self, app_id: str, state: int = 0, offset: int = 0, limit: int = 100) -> list[dict]:
        q = select(queue).where(queue.c.app_id == app_id)
        if state:
            q = q.where(queue.c.state == state)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(queue.c.seq).offset(offset).limit(limit)).mappings().all()
        return [dict(r, queued_at=aware(r["queued_at"])) for r in rows]

    def unused_labels(self, app_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(queue.c.app_id == app_id, queue.c.state == LABELED, queue.c.round == 0)).scalar_one())

    # -- rounds ---------------------------------------------------------------------------
    def start_round(self, app_id: str, record: dict, min_labels: int) -> dict | None:
        """Claim the labeled items no round used yet for a new round, if there are enough and
        no round of the app is running; returns the round record (None: nothing to do)."""
        with self.engine.begin() as conn:
            records = [r for (r,) in conn.execute(select(rounds.c.record).where(rounds.c.app_id == app_id)).all()]
            if any(r["status"] == "running" for r in records):
                return None
            fresh = (queue.c.app_id == app_id, queue.c.state == LABELED, queue.c.round == 0)
            n = int(conn.execute(select(func.count()).where(*fresh)).scalar_one())
            if n < max(min_labels, 1):
                return None
            number = max((r["round"] for r in records), default=0) + 1
            conn.execute(update(queue).where(*fresh).values(round=number))
            total = sum(r["labels_spent"] for r in records if r.get("kind") != "pool") + n  # queue labels only
            record = dict(record, round=number, labels_spent=n, total_labels=total, status="running")
            conn.execute(insert(rounds).values(app_id=app_id, round=number, record=record))
        return record

    def add_round(self, app_id: str, record: dict) -> dict:
        """Append a finished round (pool-based loops record the version that suggested); returns
        it with its number."""
        with self.engine.begin() as conn:
            number = conn.execute(select(func.coalesce(func.max(rounds.c.round), 0)).where(rounds.c.app_id == app_id)).scalar_one() + 1
            record = dict(record, round=int(number))
            conn.execute(insert(rounds).values(app_id=app_id, round=int(number), record=record))
        return record

    def save_round(self, app_id: str, record: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(rounds).where(rounds.c.app_id == app_id, rounds.c.round == record["round"]).values(record=record))

    def rounds(self, app_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(rounds.c.record).where(rounds.c.app_id == app_id).order_by(rounds.c.round.desc())).all()
        return [dict(r) for (r,) in rows]

    def fail_running_rounds(self, why: str) -> None:
        """At start-up: a round that was running when the process died cannot resume."""
        with self.engine.begin() as conn:
            for app_id, number, record in conn.execute(select(rounds.c.app_id, rounds.c.round, rounds.c.record)).all():
                if record["status"] == "running":
                    conn.execute(
                        update(rounds).where(rounds.c.app_id == app_id, rounds.c.round == number).values(record=dict(record, status="failed", note=why))
                    )


def minute_ago(now: datetime) -> datetime:
    return now - timedelta(seconds=60)


#: Copied in this order (no foreign keys between them; the order only makes the log readable).
TABLES = (policies, queue, counters, rounds)


def is_empty(engine: Engine) -> bool:
    """True when none of curation's tables holds a row (a store created just now)."""
    with engine.connect() as conn:
        return all(conn.execute(select(func.count()).select_from(t)).scalar_one() == 0 for t in TABLES)


def adopt_from_training_db(store: CurationStore, training_url: str) -> dict[str, int]:
    """Copy curation's rows from the training database (where curation kept them before it was a
    service of its own) into ``store``, if ``store`` is new (every table empty) and the training
    database has them. Returns the rows copied per table ({} when there was nothing to do).

    Idempotent: once rows are copied the store is no longer empty, so a second call (every
    start-up makes one) copies nothing; and a store that was empty before copies nothing new
    since the old tables no longer change. The old tables are left in the training database,
    unused (dropping them belongs to a migration once every deployment has moved). One
    transaction on the curation side: a crash half-way leaves the store empty, and the next
    start-up copies again."""
    from sqlalchemy import create_engine

    if not training_url or not is_empty(store.engine):
        return {}
    if training_url.startswith("sqlite:///"):
        from pathlib import Path

        if not Path(training_url.removeprefix("sqlite:///")).exists():  # a fresh stack: nothing to adopt
            return {}
    source = create_engine(training_url)
    try:
        present = set(inspect(source).get_table_names())
        copied: dict[str, int] = {}
        with source.connect() as src, store.engine.begin() as dst:
            for table in TABLES:
                if table.name not in present:
                    continue
                # Only the columns both sides have (an older source may lack a later column;
                # the target's defaults fill it).
                have = {c["name"] for c in inspect(source).get_columns(table.name)}
                cols = [c for c in table.columns if c.name in have]
                rows = [dict(r) for r in src.execute(select(*cols)).mappings()]
                if rows:
                    dst.execute(insert(table), rows)
                copied[table.name] = len(rows)
    finally:
        source.dispose()
    if any(copied.values()):
        log.info("adopted curation rows from the training database: %s", copied)
    return {k: v for k, v in copied.items() if v}
