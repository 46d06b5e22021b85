"""``TrainingService(store, platform, model_repository)``: the training core wired to one
platform object (peers and events on one surface, as the in-memory platforms of the tests and
curation's through-services benchmark have it). The process wires its adapters itself
(:mod:`firstlight.training.main`); new code should build :class:`TrainingCore` directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from firstlight.training.core import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    JobLog,
    Progress,
    TrainingCore,
)
from firstlight.training.deep.jobs import DEEP_TEMPLATES, DeepRunner
from firstlight.training.events import PlatformEvents
from firstlight.training.head_jobs import (
    HEAD_TEMPLATES,
    HeadRunner,
    embedding_model_ref,
)
from firstlight.training.repository import TritonRepository
from firstlight.training.store import TrainingStore

__all__ = [
    "CANCELLED", "FAILED", "HEAD_TEMPLATES", "QUEUED", "RUNNING", "SUCCEEDED", "TEMPLATES", "TERMINAL",
    "JobLog", "PlatformPeers", "Progress", "TrainingService", "embedding_model_ref", "runners",
]  # fmt: skip

TEMPLATES = HEAD_TEMPLATES + DEEP_TEMPLATES


class PlatformPeers:
    """The core's :class:`~firstlight.training.ports.Peers` over a platform object that may lack
    ``vectors_of`` (its vectors then come with no embedding model: the backbone's)."""

    def __init__(self, platform: Any) -> None:
        self._platform = platform

    def __getattr__(self, name: str) -> Any:
        return getattr(self._platform, name)

    def vectors_of(self, app_id: str, input_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], str]:
        vectors_of = getattr(self._platform, "vectors_of", None)
        if vectors_of is not None:
            got: tuple[dict[str, np.ndarray], str] = vectors_of(app_id, input_ids)
            return got
        return self._platform.vectors(app_id, input_ids), ""


def runners(peers: Any, repository: TritonRepository) -> list[Any]:
    """Every template runner: heads on embeddings, deep torch templates."""
    return [HeadRunner(peers, repository), DeepRunner(peers, repository)]


class TrainingService(TrainingCore):
    def __init__(
        self, store: TrainingStore, platform: Any, model_repository: Path, workers: int = 2, work_root: Path | None = None
    ) -> None:
        peers = PlatformPeers(platform)
        self.platform = platform
        self.repository = model_repository
        super().__init__(
            store, peers, PlatformEvents(platform), runners(peers, TritonRepository(model_repository)),
            work_root or model_repository.parent / "jobs", workers=workers,
        )  # fmt: skip
