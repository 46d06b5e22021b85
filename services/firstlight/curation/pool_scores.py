"""Scoring the pool: a model version (a head on the stored embeddings, scored through the
training service's ScoreInputs) over all, or the unlabeled, inputs of an app in a background
job with progress; the top concept, its score and the margin uncertainty are stored per input
and version, for the gallery's filters (predicted concept, score range), sorting by
uncertainty, and the labeling queue. No grpc here (the core's ports).

Jobs live in memory (a restart forgets a running one: score again); their results are rows of
the curation database. Scoring a version again replaces its rows."""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import delete, func, insert, select

from firstlight.curation.store import pool_scores
from firstlight.domain import validation
from firstlight.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

BATCH = 512
#: Scoring jobs remembered for GetScoringJob (their scores are in the store): the oldest finished go first.
MAX_JOBS = 1000
MAX_POOL = 100_000
ORDERS = ("", "score", "uncertainty")


def top_and_margin(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top index, top probability, 1 - (top1 - top2)) per row."""
    if proba.shape[1] == 1:
        top = np.zeros(len(proba), dtype=np.int64)
        p1 = proba[:, 0]
        return top, p1, 1.0 - np.abs(2 * p1 - 1)
    part = np.sort(proba, axis=1)
    return proba.argmax(axis=1), part[:, -1], 1.0 - (part[:, -1] - part[:, -2])


class PoolScoring:
    def __init__(self, curation, engine, clock: Callable[[], datetime] | None = None) -> None:  # type: ignore[no-untyped-def]
        self.curation = curation  # curation.core.Curation: its platform (inputs) and training (scores) ports
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))
        self._jobs: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool-score")

    # -- jobs ---------------------------------------------------------------------------
    def start(self, app_id: str, model_id: str, version: str, unlabeled_only: bool) -> dict:
        validation.app_id(app_id)
        validation.input_id(model_id)
        _, version = self.curation._model_version(app_id, model_id, version)  # NOT_FOUND / FAILED_PRECONDITION now, not in the job
        # An empty call resolves the version and refuses a deep template (it scores pixels in Triton).
        version = self.curation.training.scores(app_id, model_id, version, []).version or version
        with self._lock:
            job = {
                "id": f"score-{next(self._ids)}-{model_id}-v{version}"[:128],
                "app_id": app_id,
                "model_id": model_id,
                "model_version": str(version),
                "state": "running",
                "scored": 0,
                "total": 0,
                "error": "",
                "started_at": self.clock(),
                "finished_at": None,
            }
            self._jobs[job["id"]] = job
            finished = [k for k, j in self._jobs.items() if j["finished_at"] is not None]
            for old in finished[: max(0, len(self._jobs) - MAX_JOBS)]:  # oldest first (insertion order)
                del self._jobs[old]
        self.pool.submit(self._run, job, unlabeled_only)
        return dict(job)

    def job(self, app_id: str, job_id: str) -> dict:
        validation.app_id(app_id)
        job = self._jobs.get(job_id)
        if job is None or job["app_id"] != app_id:
            raise NotFound(f"scoring job {job_id!r} does not exist in app {app_id!r}")
        return dict(job)

    def _run(self, job: dict, unlabeled_only: bool) -> None:
        app_id, model_id, version = job["app_id"], job["model_id"], job["model_version"]
        try:
            ids = [i for i, _, _ in self.curation.platform.inputs(app_id, labeled=False if unlabeled_only else None)][:MAX_POOL]
            job["total"] = len(ids)
            key = (pool_scores.c.app_id == app_id, pool_scores.c.model_id == model_id, pool_scores.c.version == version)
            with self.engine.begin() as conn:
                conn.execute(delete(pool_scores).where(*key))
            for start in range(0, len(ids), BATCH):
                # The training service scores the stored embeddings; inputs not indexed yet are left out.
                scored = self.curation.training.scores(app_id, model_id, version, ids[start : start + BATCH])
                if scored.input_ids:
                    top, p1, unsure = top_and_margin(np.asarray(scored.proba))
                    now = self.clock()
                    rows = [
                        {
                            "app_id": app_id,
                            "model_id": model_id,
                            "version": version,
                            "input_id": i,
                            "predicted": scored.concepts[int(t)],
                            "score": float(s),
                            "uncertainty": float(u),
                            "scored_at": now,
                        }
                        for i, t, s, u in zip(scored.input_ids, top, p1, unsure)
                    ]
                    with self.engine.begin() as conn:
                        conn.execute(insert(pool_scores), rows)
                job["scored"] = min(len(ids), start + BATCH)
            job["state"] = "succeeded"
        except Exception as exc:
            log.exception("scoring the pool of %s with %s v%s failed", app_id, model_id, version)
            job.update(state="failed", error=str(exc) or type(exc).__name__)
        job["finished_at"] = self.clock()

    # -- reading ------------------------------------------------------------------------
    def latest_version(self, app_id: str, model_id: str) -> str:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(pool_scores.c.version)
                .where(pool_scores.c.app_id == app_id, pool_scores.c.model_id == model_id)
                .order_by(pool_scores.c.scored_at.desc())
                .limit(1)
            ).first()
        if row is None:
            raise NotFound(f"model {model_id!r} has not scored the pool of app {app_id!r} yet (ScorePool)")
        return str(row[0])

    def predictions(
        self, app_id: str, model_id: str, version: str, concept: str, min_score: float, max_score: float, order: str, page_size: int, page_token: str
    ) -> tuple[list[dict], str, int, str]:
        """(rows, next page token, matching rows, version)."""
        validation.app_id(app_id)
        validation.input_id(model_id)
        if concept:
            validation.concept(concept)
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
        scope = f"{app_id}/{model_id}/{version}/{concept}/{min_score}/{max_score}/{order}"
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
        sort = (pool_scores.c.uncertainty.desc(),) if order == "uncertainty" else (pool_scores.c.score.desc(),)
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(pool_scores).where(*where)).scalar_one())
            rows = conn.execute(select(pool_scores).where(*where).order_by(*sort, pool_scores.c.input_id).offset(offset).limit(size + 1)).mappings().all()
        token = validation.encode_page_token("pool", offset + size, scope) if len(rows) > size else ""
        return [dict(r) for r in rows[:size]], token, total, version


__all__ = ["PoolScoring", "pool_scores", "top_and_margin"]
