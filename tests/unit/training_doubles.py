"""The training core built the way ``training.main`` builds it, over in-memory doubles of its
ports: the tests' peers (a double of :class:`~firstlight.training.ports.Peers`), a SQLite store,
the real template runners on a model repository under ``tmp_path``, and :class:`RecordedEvents`."""

from __future__ import annotations

import time
from pathlib import Path

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


def training_core(tmp_path: Path, peers: Peers, events: EventPublisher | None = None, db: str = "training.db") -> TrainingCore:
    """One training core (one worker) over ``tmp_path``: a second call with the same ``db`` is
    a second replica, or the next process, over the same database and model repository."""
    repository = TritonRepository(tmp_path / "repo")
    return TrainingCore(
        TrainingStore(f"sqlite:///{tmp_path / db}"), peers, events or RecordedEvents(),
        runners(peers, repository), tmp_path / "jobs", workers=1,
    )  # fmt: skip
