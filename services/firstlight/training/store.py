"""TrainingService's own relational store: datasets (frozen rows), models, versions, jobs and
evaluations. SQLite by default, PostgreSQL by URL (the same SQLAlchemy Core code)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import JSON, Boolean, Column, DateTime, Float, Integer, LargeBinary, MetaData, String, Table, exists, false, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from firstlight import db, migrations
from firstlight.errors import AlreadyExists
from firstlight.training import migrations as schema_migrations
from firstlight.training.records import Box, DatasetRow

__all__ = ["Box", "DatasetRow", "TrainingStore"]

metadata = MetaData()

datasets = Table(
    "datasets",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("id", String(128), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("health", JSON, nullable=True),  # the health check recorded when frozen (0004)
)
dataset_rows = Table(
    "dataset_rows",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("dataset_id", String(128), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("input_id", String(128), primary_key=True),
    Column("concepts", JSON, nullable=False),
    Column("split", Integer, nullable=False),
    # Box labels frozen with the version ([[concept, x0, y0, x1, y1], ...]); NULL in versions
    # frozen before boxes were snapshotted (their detector jobs read today's boxes).
    Column("regions", JSON, nullable=True),
)
# One row per (row, concept) of a version: the gallery's "any of these concepts" and "labeled"
# filters as an indexed lookup, exact for any concept name (no matching inside JSON text).
dataset_row_concepts = Table(
    "dataset_row_concepts",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("dataset_id", String(128), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("concept", String(256), primary_key=True),
    Column("input_id", String(128), primary_key=True),
)
models = Table(
    "models",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("id", String(128), primary_key=True),
    Column("template", String(64), nullable=False),
    Column("concepts", JSON, nullable=False),
    Column("settings", JSON, nullable=False),
    Column("serving_version", String(16), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
versions = Table(
    "versions",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("model_id", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("dataset_id", String(128), nullable=False),
    Column("dataset_version", String(64), nullable=False),
    Column("settings", JSON, nullable=False),
    Column("validation_metrics", JSON, nullable=False),
    Column("train_report", JSON, nullable=False),
    Column("train_seconds", Float, nullable=False),
    Column("triton_model", String(256), nullable=False),
    Column("activation", String(16), nullable=False),
    Column("promotion_note", String(1024), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("app_id", String(64), nullable=False),
    Column("model_id", String(128), nullable=False),
    Column("dataset_id", String(128), nullable=False),
    Column("settings", JSON, nullable=False),
    Column("state", Integer, nullable=False),
    Column("version", String(16), nullable=False, default=""),
    Column("error", String(4096), nullable=False, default=""),
    Column("progress", Float, nullable=False, default=0.0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # A cancel asked for while the job runs: stored, so the replica running the job sees a
    # cancel sent to another replica, and a restart does not resume a cancelled job.
    Column("cancel_requested", Boolean, nullable=False, default=False, server_default=false()),
)
evaluations = Table(
    "evaluations",
    metadata,
    Column("app_id", String(64), primary_key=True),
    Column("model_id", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("split", Integer, primary_key=True),
    Column("report", JSON, nullable=False),
    Column("markdown", String, nullable=False),
    Column("png", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

SCHEMA = migrations.Schema("training", schema_migrations.FOLDER, metadata, schema_migrations.legacy_revision)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _boxes(value: object) -> list[Box] | None:
    if isinstance(value, str):  # some drivers hand JSON back as text
        value = json.loads(value)
    if value is None:
        return None
    rows = cast("list[Sequence[Any]]", value)  # a JSON list of [concept, x0, y0, x1, y1]
    return [(str(g[0]), float(g[1]), float(g[2]), float(g[3]), float(g[4])) for g in rows]


class TrainingStore:
    def __init__(self, url: str) -> None:
        self.engine: Engine = db.make_engine(url)
        migrations.upgrade(self.engine, SCHEMA)

    # -- datasets ---------------------------------------------------------------------
    def save_dataset(self, app_id: str, dataset_id: str, version: str, spec: dict, rows: list[DatasetRow]) -> datetime:
        created = utcnow()
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(datasets.c.created_at).where(datasets.c.app_id == app_id, datasets.c.id == dataset_id, datasets.c.version == version)
            ).first()
            if exists:  # same content, same version: freezing twice is a no-op
                return exists[0]
            conn.execute(insert(datasets).values(app_id=app_id, id=dataset_id, version=version, spec=spec, created_at=created))
            conn.execute(
                insert(dataset_rows),
                [
                    {
                        "app_id": app_id,
                        "dataset_id": dataset_id,
                        "version": version,
                        "input_id": r.input_id,
                        "concepts": r.concepts,
                        "split": r.split,
                        "regions": None if r.regions is None else [list(g) for g in r.regions],
                    }
                    for r in rows
                ],
            )
            pairs = [
                {"app_id": app_id, "dataset_id": dataset_id, "version": version, "concept": c, "input_id": r.input_id} for r in rows for c in set(r.concepts)
            ]
            if pairs:
                conn.execute(insert(dataset_row_concepts), pairs)
        return created

    def set_dataset_health(self, app_id: str, dataset_id: str, version: str, health: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(datasets).where(datasets.c.app_id == app_id, datasets.c.id == dataset_id, datasets.c.version == version).values(health=health))

    def latest_dataset(self, app_id: str, dataset_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(datasets).where(datasets.c.app_id == app_id, datasets.c.id == dataset_id).order_by(datasets.c.created_at.desc()).limit(1))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def dataset_rows(self, app_id: str, dataset_id: str, version: str) -> list[DatasetRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(dataset_rows.c.input_id, dataset_rows.c.concepts, dataset_rows.c.split, dataset_rows.c.regions)
                .where(dataset_rows.c.app_id == app_id, dataset_rows.c.dataset_id == dataset_id, dataset_rows.c.version == version)
                .order_by(dataset_rows.c.input_id)
            ).all()
        return [DatasetRow(i, list(c), s, _boxes(g)) for i, c, s, g in rows]

    def has_dataset_version(self, app_id: str, dataset_id: str, version: str) -> bool:
        with self.engine.connect() as conn:
            key = (datasets.c.app_id == app_id, datasets.c.id == dataset_id, datasets.c.version == version)
            return conn.execute(select(datasets.c.version).where(*key)).first() is not None

    def dataset_rows_page(
        self,
        app_id: str,
        dataset_id: str,
        version: str,
        offset: int,
        limit: int | None,
        *,
        concepts: Sequence[str] = (),
        split: int = 0,
        labeled: bool | None = None,
    ) -> tuple[list[DatasetRow], int]:
        """(the ``limit`` (None: all) rows from ``offset``, by input id, of those matching the filters: any
        of ``concepts``, ``split``, labeled or not; all on the frozen rows), and how many match."""
        r, c = dataset_rows.c, dataset_row_concepts.c
        of_version = (c.app_id == r.app_id, c.dataset_id == r.dataset_id, c.version == r.version, c.input_id == r.input_id)
        where = [r.app_id == app_id, r.dataset_id == dataset_id, r.version == version]
        if split:
            where.append(r.split == split)
        if concepts:
            where.append(exists().where(*of_version, c.concept.in_(list(concepts))))
        if labeled is not None:
            has_any = exists().where(*of_version)
            where.append(has_any if labeled else ~has_any)
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(dataset_rows).where(*where)).scalar_one())
            rows = conn.execute(select(r.input_id, r.concepts, r.split, r.regions).where(*where).order_by(r.input_id).offset(offset).limit(limit)).all()
        return [DatasetRow(i, list(cs), s, _boxes(g)) for i, cs, s, g in rows], total

    # -- models -----------------------------------------------------------------------
    def insert_model(self, app_id: str, model_id: str, template: str, concepts: list[str], settings: dict) -> dict:
        row = {
            "app_id": app_id,
            "id": model_id,
            "template": template,
            "concepts": concepts,
            "settings": settings,
            "serving_version": "",
            "created_at": utcnow(),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(models).values(**row))
        except IntegrityError:
            raise AlreadyExists(f"model {model_id!r} already exists in app {app_id!r}") from None
        return row

    def get_model(self, app_id: str, model_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(models).where(models.c.app_id == app_id, models.c.id == model_id)).mappings().first()
        return dict(row) if row else None

    def set_promotion_note(self, app_id: str, model_id: str, version: int, note: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(versions).where(versions.c.app_id == app_id, versions.c.model_id == model_id, versions.c.version == version).values(promotion_note=note)
            )

    def set_serving(self, app_id: str, model_id: str, version: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(models).where(models.c.app_id == app_id, models.c.id == model_id).values(serving_version=version))

    # -- versions ---------------------------------------------------------------------
    def next_version(self, app_id: str, model_id: str) -> int:
        with self.engine.connect() as conn:
            rows = conn.execute(select(versions.c.version).where(versions.c.app_id == app_id, versions.c.model_id == model_id)).scalars().all()
        return max(rows, default=0) + 1

    def insert_version(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(versions).values(created_at=utcnow(), **values))

    def list_versions(self, app_id: str, model_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(versions).where(versions.c.app_id == app_id, versions.c.model_id == model_id).order_by(versions.c.version.desc()))
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def get_version(self, app_id: str, model_id: str, version: int) -> dict | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(versions).where(versions.c.app_id == app_id, versions.c.model_id == model_id, versions.c.version == version))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    # -- jobs -------------------------------------------------------------------------
    def insert_job(self, job_id: str, app_id: str, model_id: str, dataset_id: str, settings: dict, state: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(jobs).values(
                    id=job_id,
                    app_id=app_id,
                    model_id=model_id,
                    dataset_id=dataset_id,
                    settings=settings,
                    state=state,
                    version="",
                    error="",
                    progress=0.0,
                    created_at=utcnow(),
                )
            )

    def update_job(self, job_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    def get_job(self, job_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return dict(row) if row else None

    def jobs_in_states(self, states: list[int]) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(jobs).where(jobs.c.state.in_(states))).mappings().all()]

    # -- evaluations ------------------------------------------------------------------
    def save_evaluation(self, app_id: str, model_id: str, version: int, split: int, report: dict, markdown: str, png: bytes) -> None:
        with self.engine.begin() as conn:
            key = (evaluations.c.app_id == app_id, evaluations.c.model_id == model_id, evaluations.c.version == version, evaluations.c.split == split)
            if conn.execute(select(evaluations.c.version).where(*key)).first():
                conn.execute(update(evaluations).where(*key).values(report=report, markdown=markdown, png=png, created_at=utcnow()))
            else:
                conn.execute(
                    insert(evaluations).values(
                        app_id=app_id, model_id=model_id, version=version, split=split, report=report, markdown=markdown, png=png, created_at=utcnow()
                    )
                )

    def get_evaluation(self, app_id: str, model_id: str, version: int, split: int) -> dict | None:
        """The latest stored evaluation report of a version on a split (None: never evaluated)."""
        with self.engine.connect() as conn:
            key = (evaluations.c.app_id == app_id, evaluations.c.model_id == model_id, evaluations.c.version == version, evaluations.c.split == split)
            row = conn.execute(select(evaluations.c.report).where(*key)).first()
        return dict(row[0]) if row else None
