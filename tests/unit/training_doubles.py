"""The training core built the way ``training.main`` builds it, over in-memory doubles of its
ports: the tests' peers (a double of :class:`~firstlight.training.ports.Peers`), a SQLite store,
the real template runners on a model repository under ``tmp_path``, and :class:`RecordedEvents`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from firstlight.training.core import TrainingCore
from firstlight.training.ports import EventPublisher, JobProgressed, Peers, VersionReady
from firstlight.training.repository import TritonRepository
from firstlight.training.runners import runners
from firstlight.training.store import TrainingStore


class RecordedEvents:
    """The core's :class:`~firstlight.training.ports.EventPublisher` in memory. ``delay`` slows
    each progress row down (tests that must land a cancel or a shutdown mid-job)."""

    def __init__(self) -> None:
        self.ready: list[VersionReady] = []
        self.progress: list[JobProgressed] = []
        self.delay = 0.0

    def version_ready(self, event: VersionReady) -> None:
        self.ready.append(event)

    def job_progressed(self, event: JobProgressed) -> None:
        self.progress.append(event)
        time.sleep(self.delay)


class DarkLightPeers:
    """The peers a deep job reads, in memory: ``n`` labeled 28x28 images, dark ("dark") or light
    ("light") by parity; ``short_side`` is the size the last ``images`` call asked for."""

    def __init__(self, n: int = 24) -> None:
        rng = np.random.default_rng(0)
        self.items = {f"i{k}": (rng.integers(0, 80, (28, 28, 3)) + (150 if k % 2 else 0)).astype(np.uint8) for k in range(n)}
        self.short_side = 0

    def labeled_inputs(self, app_id: str, concepts: object) -> list[tuple[str, list[str], list[Any]]]:
        return [(i, ["light" if int(i[1:]) % 2 else "dark"], []) for i in self.items]

    def write_splits(self, app_id: str, splits_by_input: object) -> None:
        pass

    def images(self, app_id: str, input_ids: list[str], short_side: int = 0) -> dict[str, np.ndarray]:
        self.short_side = short_side
        return {i: self.items[i] for i in input_ids}


def wait_for_job(core: TrainingCore, job_id: str, states: tuple[int, ...], timeout: float = 120) -> dict[str, Any]:
    """The job once it is in one of ``states`` (AssertionError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = core.job(job_id)
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {core.job(job_id)}")


def training_core(tmp_path: Path, peers: Peers, events: EventPublisher | None = None, db: str = "training.db") -> TrainingCore:
    """One training core (one worker) over ``tmp_path``: a second call with the same ``db`` is
    a second replica, or the next process, over the same database and model repository."""
    repository = TritonRepository(tmp_path / "repo")
    return TrainingCore(
        TrainingStore(f"sqlite:///{tmp_path / db}"), peers, events or RecordedEvents(),
        runners(peers, repository), tmp_path / "jobs", workers=1,
    )  # fmt: skip
