"""Per-app, per-key and per-job state held in memory stays bounded over days (issue 13): the
curation core's image facts, the pool-scoring jobs, the per-key rate-limit buckets, the training
service's progress log and per-job bookkeeping."""

from __future__ import annotations

import io
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from firstlight.curation import core as curation_core
from firstlight.curation import pool_scores
from firstlight.curation.core import Curation
from firstlight.curation.pool_scores import PoolScoring
from firstlight.curation.store import CurationStore, scoring_jobs
from firstlight.hosting.auth import RateLimiter
from firstlight.training import core as training_core
from firstlight.training.core import JobLog, Progress


def _scoring(tmp_path: Path) -> PoolScoring:
    """PoolScoring over an app with no inputs (each job finishes at once)."""
    curation = SimpleNamespace(
        platform=SimpleNamespace(inputs=lambda app_id, labeled=None, split=0: [], label_states=lambda app_id: []),
        _model_version=lambda app_id, model_id, version: (SimpleNamespace(concepts=["cat"]), "1"),
        training=SimpleNamespace(scores=lambda *a: SimpleNamespace(version="1")),
    )
    return PoolScoring(curation, CurationStore(f"sqlite:///{tmp_path / 'c.db'}"))


def _finished(scoring: PoolScoring, job: dict) -> dict:
    for _ in range(500):
        if scoring.job(job["app_id"], job["id"])["state"] != "running":
            return job
        time.sleep(0.01)
    raise AssertionError("scoring did not finish")


def _png(n: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), n % 255, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_facts_are_an_lru(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(curation_core, "MAX_PIXEL_FACTS", 5)
    reads: list[str] = []

    def blobs_of(app_id: str, ids: list[str]) -> dict[str, bytes]:
        reads.extend(ids)
        return {i: _png(int(i[1:])) if i != "bad" else b"not an image" for i in ids}

    cur = Curation(SimpleNamespace(blobs_of=blobs_of, stored_image_facts=lambda app_id, ids: {}), SimpleNamespace())  # type: ignore[arg-type]
    facts, corrupt = cur._pixel_facts("a", ["i0", "i1", "bad"])
    assert sorted(facts) == ["i0", "i1"] and corrupt == ["bad"]
    cur._pixel_facts("a", ["i0", "i2", "i3", "i4"])  # i0 used again: the most recent
    assert len(cur._pixels) == 5 and ("a", "i1") not in cur._pixels and ("a", "i0") in cur._pixels
    reads.clear()
    cur._pixel_facts("a", ["i0", "i1"])
    assert reads == ["i1"]  # i0 kept, i1 read again


def test_finished_scoring_jobs_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_scores, "MAX_JOBS", 3)
    scoring = _scoring(tmp_path)
    jobs = [_finished(scoring, scoring.start("a", "m", "", unlabeled_only=False)) for _ in range(6)]
    with scoring.engine.connect() as conn:  # the cap, plus the job just started
        assert conn.execute(select(func.count()).select_from(scoring_jobs)).scalar_one() <= 4
    assert scoring.job("a", jobs[-1]["id"])["state"] == "succeeded"
    with pytest.raises(Exception, match="does not exist"):
        scoring.job("a", jobs[0]["id"])


def test_refilled_rate_limit_buckets_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("firstlight.hosting.auth._MAX_BUCKETS", 3)
    limiter = RateLimiter(rate=10.0, burst=2)  # refills in 0.2 s
    for n in range(3):
        assert limiter.take(f"k{n}", now=0.0) == 0.0
    assert limiter.take("k3", now=0.1) == 0.0  # at the cap, but nothing has refilled: all kept
    assert len(limiter._buckets) == 4
    waits = [limiter.take("k0", now=0.1) for _ in range(3)]  # 1 token left at 0.0, +1 refilled
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # its bucket was kept: still limited
    assert limiter.take("k4", now=1.0) == 0.0  # a new key: the refilled buckets go
    assert set(limiter._buckets) == {"k4"}


def test_job_log_keeps_recent_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training_core, "MAX_LOGGED_JOBS", 3)
    log = JobLog()
    for n in range(5):
        log.add(f"j{n}", Progress(1, "queued", 0.0))
    assert log.wait_after("j0", 0, 0.0) == [] and len(log.wait_after("j4", 0, 0.0)) == 1
    assert list(log._steps) == ["j2", "j3", "j4"]
