"""What the curation core needs from the rest of the platform, as typed interfaces.

Adapters: :mod:`firstlight.curation.peers` implements :class:`Platform` and :class:`Training`
over the services' gRPC APIs (``firstlight.clients``); :mod:`firstlight.curation.store` is the
store; :mod:`firstlight.curation.events` consumes and publishes the events. The core never
reaches into another service's database, files or modules: only these calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Row:
    """One input of a dataset version (as the training service froze it)."""

    input_id: str
    concepts: list[str]
    split: int  # 1 train, 2 validation, 3 test


@dataclass(frozen=True)
class Scores:
    """A head version's probabilities on inputs (rows in ``input_ids`` order)."""

    version: str
    concepts: list[str]
    input_ids: list[str]
    proba: np.ndarray  # [len(input_ids), len(concepts)]

    def predict(self) -> list[str]:
        return [self.concepts[int(k)] for k in self.proba.argmax(axis=1)] if len(self.proba) else []


@dataclass(frozen=True)
class ModelInfo:
    app_id: str
    id: str
    template: str
    concepts: list[str]
    serving_version: str


@dataclass(frozen=True)
class VersionInfo:
    version: str
    dataset_id: str
    dataset_version: str
    validation_metrics: dict[str, float] = field(default_factory=dict)
    promotion_note: str = ""


@dataclass(frozen=True)
class HeadArrays:
    """A head version on the embedding: ``logits = W · x + b`` (x L2-normalised when ``normalize``)."""

    version: str
    template: str
    concepts: list[str]
    W: np.ndarray  # [len(concepts), dim] float32
    b: np.ndarray  # [len(concepts)]
    activation: str  # "softmax" or "sigmoid"
    normalize: bool
    embedding_model: str  # "" = the built-in backbone


@dataclass(frozen=True)
class DeepExplainer:
    """A deep classifier version split for Grad-CAM: ``torchscript`` loads (torch.jit.load) to a
    module whose ``forward`` maps uint8 N×S×S×3 to the last feature map and ``head`` that map to logits."""

    version: str
    template: str
    concepts: list[str]
    activation: str  # "softmax" or "sigmoid"
    image_size: int
    torchscript: bytes


@dataclass(frozen=True)
class Job:
    id: str
    state: int  # training.proto JobState: 3 succeeded, 4 failed, 5 cancelled
    version: str = ""
    error: str = ""


@dataclass(frozen=True)
class LabelState:
    """An input's labels and split as ingestion has them, at ``revision`` (its label_revision)."""

    input_id: str
    concepts: tuple[str, ...]
    split: int
    revision: int
    generation: int = 0  # when this incarnation of the input was stored (domain.generations)


@dataclass(frozen=True)
class StoredImageFacts:
    """What ingestion stored about an input's pixels, measured on the decode that validated it."""

    sha256: str
    quality: dict[str, float] | None  # ImageQuality.to_dict(); None: stored before metrics
    pixel_signature: bytes = b""  # firstlight.media.pixel_signature.pack; b"": stored before


class Platform(Protocol):
    """The app's inputs (ingestion), their stored embeddings (search) and bytes (blob store)."""

    def inputs(self, app_id: str, *, labeled: bool | None, split: int = 0) -> list[tuple[str, list[str], int]]: ...
    def label_states(self, app_id: str) -> list[LabelState]:
        """Every input of the app, oldest first."""
        ...

    def vectors(self, app_id: str, input_ids: Sequence[str]) -> dict[str, np.ndarray]: ...
    def index_state(self, app_id: str) -> tuple[int, str]:
        """(indexed inputs, embedding model) of the app's index."""
        ...

    def current_labels(self, app_id: str, input_ids: Sequence[str]) -> dict[str, tuple[list[str], int]]:
        """Input id → (concepts, split) now, for the inputs that exist."""
        ...

    def blobs_of(self, app_id: str, input_ids: Sequence[str]) -> dict[str, bytes]: ...
    def stored_image_facts(self, app_id: str, input_ids: Sequence[str]) -> dict[str, StoredImageFacts]:
        """What ingestion stored about each input's pixels (inputs not in the app are left out)."""
        ...

    def metadata_values(self, app_id: str, key: str) -> dict[str, str]: ...
    def metadata_of(self, app_id: str, input_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Input id → its metadata, for the inputs that exist."""
        ...

    def labels_of(self, app_id: str, input_ids: Sequence[str]) -> dict[str, list[str]]: ...
    def delete_inputs(self, app_id: str, input_ids: Sequence[str]) -> int: ...


class Training(Protocol):
    """The training service's API as curation uses it. Unknown models, versions and datasets
    raise :class:`firstlight.errors.NotFound`."""

    def model(self, app_id: str, model_id: str) -> ModelInfo: ...
    def version(self, app_id: str, model_id: str, version: str) -> VersionInfo | None: ...
    def latest_dataset_version(self, app_id: str, dataset_id: str) -> str | None: ...
    def dataset_rows(self, app_id: str, dataset_id: str, version: str) -> list[Row]: ...
    def scores(self, app_id: str, model_id: str, version: str, input_ids: Sequence[str]) -> Scores: ...
    def stored_test_metrics(self, app_id: str, model_id: str, version: str) -> dict[str, float]: ...
    def head(self, app_id: str, model_id: str, version: str) -> HeadArrays:
        """A head version's arrays ("" = serving); FailedPrecondition for a template that is not a
        head on the embedding."""
        ...

    def deep_explainer(self, app_id: str, model_id: str, version: str) -> DeepExplainer:
        """A deep classifier version split for Grad-CAM ("" = serving); FailedPrecondition for
        other templates."""
        ...

    # the rounds of the live loop
    def extend_dataset(self, app_id: str, dataset_id: str) -> str: ...
    def train(self, app_id: str, model_id: str, dataset_id: str, promotion: tuple[str, float]) -> Job: ...
    def job(self, app_id: str, job_id: str) -> Job: ...


class RoundLog(Protocol):
    """The experiment record of pool rounds (:class:`firstlight.curation.store.CurationStore`)."""

    def rounds(self, app_id: str) -> list[dict]: ...
    def add_round(self, app_id: str, record: dict) -> dict: ...
