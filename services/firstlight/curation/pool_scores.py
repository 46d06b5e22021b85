"""Scoring the pool: a model version (a head on the stored embeddings, scored through the
training service's ScoreInputs) over all, or the unlabeled, inputs of an app in a background
job with progress; the top concept, its score and the margin uncertainty are stored per input
and version, for the gallery's filters (predicted concept, score range), sorting by
uncertainty, and the labeling queue. No grpc here (the core's ports).

Jobs are rows of the curation database, like their results: a job a restart cut short is
resumed at the next start (``resume_interrupted``) with the inputs it had not scored, and says
so (``resumed``). Scoring a version again replaces its rows. The inputs' labels and split are
recorded as the pool is read (curation/input_labels.py), for the label filters."""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from firstlight.curation import input_labels
from firstlight.curation.store import CurationStore, aware, pool_scores, scoring_jobs
from firstlight.domain import validation
from firstlight.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

BATCH = 512
MAX_POOL = 100_000
MAX_JOBS = 1000  # finished jobs kept (all apps); older ones are pruned when a job starts
ORDERS = ("", "score", "uncertainty")


def top_and_margin(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top index, top probability, 1 - (top1 - top2)) per row."""
    if proba.shape[1] == 1:
        top = np.zeros(len(proba), dtype=np.int64)
        p1 = proba[:, 0]
        return top, p1, 1.0 - np.abs(2 * p1 - 1)
    part = np.sort(proba, axis=1)
    return proba.argmax(axis=1), part[:, -1], 1.0 - (part[:, -1] - part[:, -2])


@dataclass(frozen=True)
class LabelFilter:
    """The gallery's label filters on the inputs' current labels: any of ``concepts``, ``split``
    (0: any), labeled or not (None: either)."""

    concepts: tuple[str, ...] = ()
    split: int = 0
    labeled: bool | None = None


ANY_LABELS = LabelFilter()


class PoolScoring:
    def __init__(self, curation, store: CurationStore, clock: Callable[[], datetime] | None = None) -> None:  # type: ignore[no-untyped-def]
        self.curation = curation  # curation.core.Curation: its platform (inputs) and training (scores) ports
        self.store = store
        self.engine = store.engine
        self.clock = clock or (lambda: datetime.now(UTC))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool-score")

    # -- jobs ---------------------------------------------------------------------------
    def start(self, app_id: str, model_id: str, version: str, unlabeled_only: bool) -> dict:
        validation.app_id(app_id)
        validation.input_id(model_id)
        _, version = self.curation._model_version(app_id, model_id, version)  # NOT_FOUND / FAILED_PRECONDITION now, not in the job
        # An empty call resolves the version and refuses a deep template (it scores pixels in Triton).
        version = self.curation.training.scores(app_id, model_id, version, []).version or version
        job = {
            "id": f"score-{uuid.uuid4().hex[:12]}-{model_id}-v{version}"[:128],
            "app_id": app_id,
            "model_id": model_id,
            "model_version": str(version),
            "unlabeled_only": unlabeled_only,
            "state": "running",
            "scored": 0,
            "total": 0,
            "error": "",
            "resumed": False,
            "started_at": self.clock(),
            "finished_at": None,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(scoring_jobs).values(**job))
            _prune_finished(conn)
        self.pool.submit(self._run, job)
        return _public(job)

    def resume_interrupted(self) -> list[str]:
        """At start-up: jobs a restart cut short go on with the inputs they had not scored (what
        they stored stays). Returns their ids."""
        with self.engine.begin() as conn:
            running = conn.execute(select(scoring_jobs).where(scoring_jobs.c.state == "running")).mappings().all()
            conn.execute(update(scoring_jobs).where(scoring_jobs.c.state == "running").values(resumed=True))
        for row in running:
            log.info("resuming pool-scoring job %s (%s of %s scored before the restart)", row["id"], row["scored"], row["total"])
            self.pool.submit(self._run, dict(row, resumed=True))
        return [r["id"] for r in running]

    def job(self, app_id: str, job_id: str) -> dict:
        validation.app_id(app_id)
        with self.engine.connect() as conn:
            row = conn.execute(select(scoring_jobs).where(scoring_jobs.c.id == job_id, scoring_jobs.c.app_id == app_id)).mappings().first()
        if row is None:
            raise NotFound(f"scoring job {job_id!r} does not exist in app {app_id!r}")
        return _public(dict(row))

    def _save(self, job_id: str, **values: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(scoring_jobs).where(scoring_jobs.c.id == job_id).values(**values))

    def _run(self, job: dict) -> None:
        app_id, model_id, version = job["app_id"], job["model_id"], job["model_version"]
        key = (pool_scores.c.app_id == app_id, pool_scores.c.model_id == model_id, pool_scores.c.version == version)
        try:
            states = self.curation.platform.label_states(app_id)
            with self.store.write_lock, self.engine.begin() as conn:
                input_labels.record(conn, app_id, states)
            ids = [s.input_id for s in states if not (job["unlabeled_only"] and s.concepts)][:MAX_POOL]
            done: set[str] = set()
            with self.engine.begin() as conn:
                if job["resumed"]:  # what the cut run stored stays: score the rest
                    done = set(conn.execute(select(pool_scores.c.input_id).where(*key)).scalars())
                else:  # scoring a version again replaces its rows
                    conn.execute(delete(pool_scores).where(*key))
            todo = [i for i in ids if i not in done]
            scored = len(ids) - len(todo)
            self._save(job["id"], total=len(ids), scored=scored)
            for start in range(0, len(todo), BATCH):
                batch = todo[start : start + BATCH]
                # The training service scores the stored embeddings; inputs not indexed yet are left out.
                got = self.curation.training.scores(app_id, model_id, version, batch)
                if got.input_ids:
                    top, p1, unsure = top_and_margin(np.asarray(got.proba))
                    now = self.clock()
                    rows = [
                        {
                            "app_id": app_id,
                            "model_id": model_id,
                            "version": version,
                            "input_id": i,
                            "predicted": got.concepts[int(t)],
                            "score": float(s),
                            "uncertainty": float(u),
                            "scored_at": now,
                        }
                        for i, t, s, u in zip(got.input_ids, top, p1, unsure)
                    ]
                    with self.engine.begin() as conn:
                        conn.execute(insert(pool_scores), rows)
                scored += len(batch)
                self._save(job["id"], scored=scored)
            self._save(job["id"], state="succeeded", finished_at=self.clock())
        except Exception as exc:
            log.exception("scoring the pool of %s with %s v%s failed", app_id, model_id, version)
            self._save(job["id"], state="failed", error=(str(exc) or type(exc).__name__)[:1024], finished_at=self.clock())

    # -- reading ------------------------------------------------------------------------
    def latest_version(self, app_id: str, model_id: str) -> str:
        with self.engine.connect() as conn:
            return latest_scored_version(conn, app_id, model_id)

    def predictions(
        self,
        app_id: str,
        model_id: str,
        version: str,
        concept: str,
        min_score: float,
        max_score: float,
        order: str,
        page_size: int,
        page_token: str,
        labels: LabelFilter = ANY_LABELS,
    ) -> tuple[list[dict], str, int, str]:
        """(rows, next page token, matching rows, version). ``labels`` keeps the inputs whose
        labels and split match now (curation/input_labels.py), in the same query."""
        validation.app_id(app_id)
        validation.input_id(model_id)
        for c in (concept, *labels.concepts) if concept else labels.concepts:
            validation.concept(c)
        if labels.split not in (0, 1, 2, 3):
            raise InvalidArgument(f"unknown split {labels.split}")
        max_score = max_score or 1.0
        for name, v in (("min_score", min_score), ("max_score", max_score)):
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise InvalidArgument(f"{name} must be in [0, 1] (got {v})")
        if min_score > max_score:
            raise InvalidArgument(f"min_score {min_score} is above max_score {max_score}")
        if order not in ORDERS:
            raise InvalidArgument(f"unknown order {order!r}: score or uncertainty")
        size = validation.page_size(page_size, default=100, maximum=1000)
        version = version or self.latest_version(app_id, model_id)
        scope = json.dumps([app_id, model_id, version, concept, min_score, max_score, order, sorted(labels.concepts), labels.split, labels.labeled])
        offset = validation.decode_page_token("pool", page_token, scope)
        where = [
            pool_scores.c.app_id == app_id,
            pool_scores.c.model_id == model_id,
            pool_scores.c.version == version,
            pool_scores.c.score >= min_score,
            pool_scores.c.score <= max_score,
        ]
        if concept:
            where.append(pool_scores.c.predicted == concept)
        where += input_labels.matching(app_id, pool_scores.c.input_id, labels.concepts, labels.split, labels.labeled)
        sort = (pool_scores.c.uncertainty.desc(),) if order == "uncertainty" else (pool_scores.c.score.desc(),)
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(pool_scores).where(*where)).scalar_one())
            rows = conn.execute(select(pool_scores).where(*where).order_by(*sort, pool_scores.c.input_id).offset(offset).limit(size + 1)).mappings().all()
        token = validation.encode_page_token("pool", offset + size, scope) if len(rows) > size else ""
        return [dict(r) for r in rows[:size]], token, total, version


def latest_scored_version(conn: Connection, app_id: str, model_id: str) -> str:
    """The version of ``model_id`` that scored the app's pool most recently (NOT_FOUND: none)."""
    row = conn.execute(
        select(pool_scores.c.version)
        .where(pool_scores.c.app_id == app_id, pool_scores.c.model_id == model_id)
        .order_by(pool_scores.c.scored_at.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFound(f"model {model_id!r} has not scored the pool of app {app_id!r} yet (ScorePool)")
    return str(row[0])


def stored_predictions(conn: Connection, app_id: str, model_id: str, version: str, ids: Sequence[str]) -> dict[str, tuple[str, float]] | None:
    """Input id → (predicted concept, score) that ``version``'s ScorePool stored for ``ids``;
    None when that version never scored the app's pool."""
    where = (pool_scores.c.app_id == app_id, pool_scores.c.model_id == model_id, pool_scores.c.version == version)
    if conn.execute(select(pool_scores.c.input_id).where(*where).limit(1)).first() is None:
        return None
    rows = conn.execute(select(pool_scores.c.input_id, pool_scores.c.predicted, pool_scores.c.score).where(*where, pool_scores.c.input_id.in_(ids))).all()
    return {r[0]: (r[1], float(r[2])) for r in rows}


def _public(job: dict) -> dict:
    out = {k: v for k, v in job.items() if k != "unlabeled_only"}
    return dict(out, started_at=aware(out["started_at"]), finished_at=out["finished_at"] and aware(out["finished_at"]))


__all__ = ["ANY_LABELS", "LabelFilter", "PoolScoring", "latest_scored_version", "pool_scores", "top_and_margin"]


def _prune_finished(conn: Connection) -> None:
    """Keep the newest MAX_JOBS finished jobs (their stored predictions stay): job rows would
    otherwise only grow (docs/reliability.md, state that only grows)."""
    keep = select(scoring_jobs.c.id).where(scoring_jobs.c.finished_at.is_not(None)).order_by(scoring_jobs.c.finished_at.desc()).limit(MAX_JOBS)
    conn.execute(delete(scoring_jobs).where(scoring_jobs.c.finished_at.is_not(None), scoring_jobs.c.id.not_in(keep.scalar_subquery())))
