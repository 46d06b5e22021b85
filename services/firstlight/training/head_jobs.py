"""Head templates (``transfer_classifier``, ``oneshot_classifier``): a linear head on the
embeddings the app's index already holds. Trains in seconds in the worker thread; the core
records, promotes and announces the version it returns."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from firstlight.domain import evaluation
from firstlight.domain.heads import oneshot, transfer
from firstlight.domain.heads.linear import LinearHead
from firstlight.domain.promotion import metrics_of
from firstlight.errors import FailedPrecondition
from firstlight.models import backbone
from firstlight.training import hyper
from firstlight.training.ports import (
    Candidate,
    Exported,
    JobCancelled,
    JobRun,
    ModelRepository,
    Peers,
    Scores,
)
from firstlight.training.records import DatasetRow

log = logging.getLogger(__name__)

HEAD_TEMPLATES = ("transfer_classifier", "oneshot_classifier")


def embedding_model_ref(index_model: str) -> str:
    """What a head records as its embedding model: "" for the built-in backbone (however the
    index names it), else the embedder's Triton model ref."""
    return "" if index_model in ("", backbone.BACKBONE_VERSION) else index_model


class HeadRunner:
    templates = HEAD_TEMPLATES
    resumable = False  # seconds of work: a job cut by a restart is failed, not re-run
    progress_events = False

    def __init__(self, peers: Peers, repository: ModelRepository) -> None:
        self.peers = peers
        self.repository = repository

    def parse(self, template: str, settings: dict[str, str]) -> object:
        return hyper.parse_settings(template, settings)

    def _xy(self, app_id: str, rows: Sequence[DatasetRow], embedding_model: str | None = None) -> tuple[np.ndarray, list[list[str]], str, list[DatasetRow]]:
        """(X, labels, embedding model, the rows used) of ``rows`` from the app's index. With
        ``embedding_model`` (what a version was trained on), vectors of another model are a
        FAILED_PRECONDITION: a head only understands the embeddings it was trained on. Rows
        whose input was deleted since the freeze (e.g. the dropped copies of a duplicate group)
        are left out; an input that exists but has no vector yet is a FAILED_PRECONDITION."""
        vectors, index_model = self.peers.vectors_of(app_id, [r.input_id for r in rows])
        model = embedding_model_ref(index_model)
        if embedding_model is not None and model != embedding_model:
            raise FailedPrecondition(
                f"this version was trained on {embedding_model or 'backbone'} embeddings and the app's index now "
                f"holds {model or 'backbone'} embeddings (its embedding model was switched); train a new version"
            )
        missing = [r.input_id for r in rows if r.input_id not in vectors]
        if missing:
            existing = getattr(self.peers, "existing", None)
            gone = set(missing) - (existing(app_id, missing) if existing is not None else set(missing))
            waiting = [i for i in missing if i not in gone]
            if waiting:
                raise FailedPrecondition(f"{len(waiting)} inputs are not embedded yet (e.g. {waiting[0]!r}); wait until they are searchable")
            log.info("app %s: %d inputs of the dataset version were deleted since it was frozen; left out", app_id, len(gone))
            rows = [r for r in rows if r.input_id not in gone]
            if not rows:
                raise FailedPrecondition("every input of these rows was deleted since the dataset version was frozen")
        X = np.stack([vectors[r.input_id] for r in rows]).astype(np.float32)
        return X, [r.concepts for r in rows], model, list(rows)

    def _evaluate(self, head: Any, app_id: str, rows: Sequence[DatasetRow], concepts: list[str], embedding_model: str) -> evaluation.EvaluationReport:
        X, Y, _, _ = self._xy(app_id, rows, embedding_model)
        return evaluation.evaluate(Y, head.predict_proba(X), concepts, multilabel=head.activation == "sigmoid")

    def train(self, run: JobRun) -> Candidate:
        job, model, ds, rows = run.job, run.model, run.dataset, run.rows
        app_id, model_id, concepts = job["app_id"], job["model_id"], list(model["concepts"])
        settings = hyper.parse_settings(model["template"], job["settings"])
        run.step("loading embeddings", 0.05, message=f"{len(rows)} inputs from dataset {ds['id']}")
        train_rows = [r for r in rows if r.split == 1]
        X, Y, embedding_model, train_rows = self._xy(app_id, train_rows)
        run.step("fitting", 0.3, message=f"{len(train_rows)} training inputs, template {model['template']}")
        started = time.perf_counter()
        head: LinearHead
        if isinstance(settings, transfer.TransferSettings):
            X_flip = None
            if settings.augment_flip:  # embeddings of the mirrored training images, same labels
                run.step("embedding flipped images", 0.2, message=f"{len(train_rows)} images")
                flipped = self.peers.flipped_vectors(app_id, [r.input_id for r in train_rows], model=embedding_model)
                X_flip = np.stack([flipped[r.input_id] for r in train_rows]).astype(np.float32)
            head = transfer.train_transfer(X, Y, concepts, settings, X_flip=X_flip)
        else:
            head = oneshot.train_oneshot(X, Y, concepts, settings)
        seconds = time.perf_counter() - started
        if run.is_cancelled():  # a head fits in seconds: honour a cancel before publishing
            raise JobCancelled("training job cancelled")
        run.step("evaluating", 0.7, metrics={"train_seconds": seconds})
        report = self._evaluate(head, app_id, [r for r in rows if r.split == 2], concepts, embedding_model)

        def export(version: int) -> Exported:
            triton_model = self.repository.export_head(app_id, model_id, version, head, concepts)
            return Exported(triton_model, {"validation": report.to_dict(), "fit": head.report(), "embedding_model": embedding_model})

        return Candidate(
            validation_metrics=evaluation.headline(report),
            deciding=metrics_of(report),
            primary_metric="accuracy",
            train_seconds=seconds,
            activation=head.activation,
            export=export,
            embedding_model=embedding_model,
        )

    def evaluate(self, app_id: str, model: dict[str, Any], version: dict[str, Any], rows: list[Any]) -> evaluation.EvaluationReport:
        head = self.repository.load_head(version["triton_model"], version["version"], model["concepts"])
        # Versions from before heads recorded their embedding model were trained on the backbone's.
        return self._evaluate(head, app_id, rows, model["concepts"], version["train_report"].get("embedding_model", ""))

    def explainer(self, model: dict[str, Any], version: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        raise FailedPrecondition(f"model {model['id']!r} is a {model['template']} model (a head on the embedding: GetHeadWeights gives its arrays)")

    def head(self, model: dict[str, Any], version: dict[str, Any]) -> tuple[LinearHead, str]:
        """(the version's exported head, the embedding model it was trained on: "" = the backbone)."""
        try:
            head = self.repository.load_head(version["triton_model"], version["version"], model["concepts"])
        except FileNotFoundError:
            raise FailedPrecondition(f"version {version['version']} of {model['id']!r} has no exported head") from None
        return head, str((version.get("train_report") or {}).get("embedding_model", ""))

    def score(self, app_id: str, model: dict[str, Any], version: dict[str, Any], input_ids: list[str]) -> Scores:
        try:
            head = self.repository.load_head(version["triton_model"], version["version"], model["concepts"])
        except FileNotFoundError:
            raise FailedPrecondition(f"version {version['version']} of {model['id']!r} has no exported head to score with") from None
        vectors, _ = self.peers.vectors_of(app_id, input_ids)
        kept = [i for i in input_ids if i in vectors]
        proba = head.predict_proba(np.stack([vectors[i] for i in kept]).astype(np.float32)) if kept else np.zeros((0, len(model["concepts"])))
        return Scores(kept, np.asarray(proba, np.float32), "sigmoid" if head.activation == "sigmoid" else "softmax")
