"""What the training core needs from the outside world, as small typed protocols.

Adapters implement them: :class:`firstlight.training.store.TrainingStore` (SQLAlchemy),
:class:`firstlight.training.platform.GrpcPlatform` (the peer services), the publishers of
:mod:`firstlight.training.events` (the event bus) and :class:`firstlight.training.repository.TritonRepository`
(the Triton model repository). The template runners (:mod:`firstlight.training.head_jobs`,
:mod:`firstlight.training.deep.jobs`) implement :class:`TemplateRunner` and see the core only
through :class:`JobRun`. The unit tests pass in-memory fakes of each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from firstlight.domain.evaluation import EvaluationReport
from firstlight.training.records import Box as BoxTuple


class JobCancelled(Exception):
    """Raised inside a job when it was cancelled: the core records CANCELLED."""


class Interrupted(Exception):
    """The service is shutting down: the job stops between batches and stays RUNNING (resumed at
    the next start). Deliberately not a :class:`JobCancelled`."""


# -- the store ----------------------------------------------------------------------------------


class TrainingStorePort(Protocol):
    def save_dataset(self, app_id: str, dataset_id: str, version: str, spec: dict[str, Any], rows: list[Any]) -> datetime: ...
    def set_dataset_health(self, app_id: str, dataset_id: str, version: str, health: dict[str, Any]) -> None: ...
    def latest_dataset(self, app_id: str, dataset_id: str) -> dict[str, Any] | None: ...
    def dataset_rows(self, app_id: str, dataset_id: str, version: str) -> list[Any]: ...
    def has_dataset_version(self, app_id: str, dataset_id: str, version: str) -> bool: ...
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
    ) -> tuple[list[Any], int]: ...
    def insert_model(self, app_id: str, model_id: str, template: str, concepts: list[str], settings: dict[str, Any]) -> dict[str, Any]: ...
    def get_model(self, app_id: str, model_id: str) -> dict[str, Any] | None: ...
    def set_serving(self, app_id: str, model_id: str, version: str) -> None: ...
    def set_promotion_note(self, app_id: str, model_id: str, version: int, note: str) -> None: ...
    def next_version(self, app_id: str, model_id: str) -> int: ...
    def insert_version(self, **values: Any) -> None: ...
    def list_versions(self, app_id: str, model_id: str) -> list[dict[str, Any]]: ...
    def get_version(self, app_id: str, model_id: str, version: int) -> dict[str, Any] | None: ...
    def insert_job(self, job_id: str, app_id: str, model_id: str, dataset_id: str, settings: dict[str, Any], state: int) -> None: ...
    def update_job(self, job_id: str, **values: Any) -> None: ...
    def get_job(self, job_id: str) -> dict[str, Any] | None: ...
    def jobs_in_states(self, states: list[int]) -> list[dict[str, Any]]: ...
    def save_evaluation(self, app_id: str, model_id: str, version: int, split: int, report: dict[str, Any], markdown: str, png: bytes) -> None: ...
    def get_evaluation(self, app_id: str, model_id: str, version: int, split: int) -> dict[str, Any] | None: ...


# -- the peer services (ingestion, search, embedding, blobs) ------------------------------------


class Peers(Protocol):
    """Reads (and the split write-back) training needs from the other services."""

    def labeled_inputs(self, app_id: str, concepts: Sequence[str]) -> list[tuple[str, list[str], list[BoxTuple]]]: ...
    def inputs(self, app_id: str, *, labeled: bool | None, split: int = 0) -> list[tuple[str, list[str], int]]: ...
    def existing(self, app_id: str, input_ids: Sequence[str]) -> set[str]: ...
    def write_splits(self, app_id: str, splits_by_input: dict[str, int]) -> None: ...
    def vectors_of(self, app_id: str, input_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], str]: ...
    def flipped_vectors(self, app_id: str, input_ids: Sequence[str], model: str = "") -> dict[str, np.ndarray]: ...
    def images(self, app_id: str, input_ids: Sequence[str], short_side: int = 0) -> dict[str, np.ndarray]: ...
    def regions(self, app_id: str, input_ids: Sequence[str]) -> dict[str, list[BoxTuple]]: ...


class HealthChecks(Protocol):
    """The curation service's data health check of a frozen dataset version (RunHealthCheck
    without the pixel checks): {"status", "checks": [{"name", "status", "message", "count"}]}."""

    def dataset_health(self, app_id: str, dataset_id: str, version: str) -> dict[str, Any]: ...

    def duplicate_groups(self, app_id: str, input_ids: Sequence[str]) -> list[list[str]]:
        """Groups (2 or more input ids) of exact and near-duplicates among ``input_ids``, found by
        the health check's detector (FindDuplicateGroups): what a split by duplicate group keeps
        together."""
        ...


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionReady:
    """A version was recorded (``model.version.ready``)."""

    app_id: str
    model_id: str
    version: str
    triton_model: str
    concepts: list[str]
    serving: bool
    activation: str
    kind: str = ""
    image_size: int = 0
    embedding_model: str = ""


@dataclass(frozen=True)
class JobProgressed:
    """One row of a job's progress (``training.progress``): an epoch, or the job's end."""

    app_id: str
    job_id: str
    model_id: str
    state: int
    message: str = ""
    eta_seconds: float = 0.0
    epoch: int = 0
    num_epochs: int = 0
    loss: float = 0.0
    lrate: float = 0.0
    items_per_second: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


class EventPublisher(Protocol):
    def version_ready(self, event: VersionReady) -> None: ...
    def job_progressed(self, event: JobProgressed) -> None: ...


# -- the model repository (Triton) --------------------------------------------------------------


class ModelRepository(Protocol):
    """Where versions are exported for serving, and read back for evaluation."""

    @property
    def root(self) -> Path: ...
    def export_head(self, app_id: str, model_id: str, version: int, head: Any, concepts: list[str]) -> str: ...
    def load_head(self, triton_model: str, version: int | str, concepts: list[str]) -> Any: ...
    def export_deep(self, app_id: str, model_id: str, version: int, result: Any, concepts: list[str]) -> str: ...
    def load_deep(self, triton_model: str, version: int | str) -> tuple[Any, dict[str, Any]]: ...


# -- template runners -------------------------------------------------------------------------


@dataclass
class Exported:
    """A candidate written to the model repository as ``version``."""

    triton_model: str
    train_report: dict[str, Any]


@dataclass
class Candidate:
    """What a template's job produced, before the core records it as a version.

    ``deciding`` are the validation metrics the promotion rule may read (every metric the
    template reports); ``validation_metrics`` the ones stored with the version and shown."""

    validation_metrics: dict[str, float]
    deciding: dict[str, float | None]
    primary_metric: str
    train_seconds: float
    activation: str
    export: Callable[[int], Exported]  # write the version's artifacts (the core picks the number)
    kind: str = ""
    image_size: int = 0
    embedding_model: str = ""


@dataclass
class Scores:
    """A version's probabilities on inputs (those without a stored embedding are left out)."""

    input_ids: list[str]
    proba: np.ndarray  # [len(input_ids), concepts] float32
    activation: str  # "softmax" or "sigmoid"


class JobRun(Protocol):
    """A running job as a template runner sees it."""

    job: dict[str, Any]
    model: dict[str, Any]
    dataset: dict[str, Any]
    rows: list[Any]  # the dataset's rows restricted to the model's concepts
    work_dir: Path  # survives a restart (deep checkpoints)

    def step(self, stage: str, progress: float, metrics: dict[str, float] | None = None, message: str = "") -> None: ...
    def epoch(self, progress: float, event: JobProgressed) -> None:
        """One epoch row: the job row, the progress stream and ``training.progress``."""
        ...

    def check_cancelled(self) -> None:
        """Raise :class:`Interrupted` on shutdown, :class:`JobCancelled` after a cancel."""
        ...

    def is_cancelled(self) -> bool: ...


class TemplateRunner(Protocol):
    """Trains, and re-evaluates, versions of the templates it names (built with the
    :class:`Peers` and :class:`ModelRepository` it reads and writes)."""

    templates: tuple[str, ...]
    resumable: bool  # a job interrupted by a restart is resumed (else failed)
    progress_events: bool  # its jobs announce epochs and their end on training.progress

    def parse(self, template: str, settings: dict[str, str]) -> object:
        """Validated settings (INVALID_ARGUMENT naming a bad key)."""
        ...

    def train(self, run: JobRun) -> Candidate: ...
    def evaluate(self, app_id: str, model: dict[str, Any], version: dict[str, Any], rows: list[Any]) -> EvaluationReport: ...
    def head(self, model: dict[str, Any], version: dict[str, Any]) -> tuple[Any, str]:
        """(the version's linear head, its embedding model); FAILED_PRECONDITION for templates
        that are not a head on the stored embedding."""
        ...

    def explainer(self, model: dict[str, Any], version: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """(a deep classifier version split for Grad-CAM, as TorchScript bytes, and its meta);
        FAILED_PRECONDITION for other templates."""
        ...

    def score(self, app_id: str, model: dict[str, Any], version: dict[str, Any], input_ids: list[str]) -> Scores:
        """A version's probabilities on the inputs' stored embeddings (FAILED_PRECONDITION for
        templates that do not run on stored embeddings)."""
        ...
