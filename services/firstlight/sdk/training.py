"""Datasets, models, training jobs and evaluations (TrainingService)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import grpc

from firstlight.sdk.base import ServiceCalls
from firstlight.sdk.errors import error_for, wrap_errors
from firstlight.sdk.items import SPLITS
from firstlight.v1 import training_pb2


class TrainingCalls(ServiceCalls):
    @wrap_errors
    def create_dataset(
        self,
        app_id: str,
        dataset_id: str,
        *,
        counts: tuple[int, int, int] | None = None,
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        concepts: Iterable[str] = (),
        write_splits: bool = True,
        from_inputs: bool = False,
        group_duplicates: bool = False,
    ) -> training_pb2.Dataset:
        """Freeze the labeled inputs into a dataset version. ``from_inputs``: keep the split each
        input already has (inputs without one: train) instead of drawing a stratified split.
        ``group_duplicates``: exact and near-duplicates (found by the curation service) stay in
        one split, as a video's frames do, so the version's leaks check passes."""
        spec = training_pb2.SplitSpec(seed=seed, from_inputs=from_inputs, group_duplicates=group_duplicates)
        if counts:
            spec.train_count, spec.validation_count, spec.test_count = counts
        else:
            spec.train_fraction, spec.validation_fraction, spec.test_fraction = fractions
        return self._training().CreateDataset(
            training_pb2.CreateDatasetRequest(app_id=app_id, dataset_id=dataset_id, concepts=list(concepts), split=spec, write_splits_to_inputs=write_splits),
            timeout=self._deadline("CreateDataset"),
        )

    @wrap_errors
    def create_model(
        self,
        app_id: str,
        model_id: str,
        concepts: Iterable[str],
        *,
        template: str = "transfer_classifier",
        settings: dict[str, str] | None = None,
        exist_ok: bool = False,
    ) -> training_pb2.Model:
        try:
            return self._training().CreateModel(
                training_pb2.CreateModelRequest(app_id=app_id, model_id=model_id, template=template, concepts=list(concepts), settings=settings or {}),
                timeout=self._deadline("CreateModel"),
            )
        except grpc.RpcError as exc:
            if exist_ok and exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                return self.versions(app_id, model_id).model
            raise

    @wrap_errors
    def train(
        self,
        app_id: str,
        model_id: str,
        dataset_id: str,
        *,
        settings: dict[str, str] | None = None,
        on_progress: Callable[[training_pb2.TrainingProgress], None] | None = None,
        require_passing_check: bool = False,
    ) -> training_pb2.TrainingJob:
        """Start a job and follow its progress stream until it ends; returns the final job.
        ``require_passing_check``: refuse a dataset version whose recorded health check failed."""
        job = self.start_training(app_id, model_id, dataset_id, settings=settings, require_passing_check=require_passing_check)
        request = training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job.id)
        for step in self._training().StreamTrainingProgress(request, timeout=self._deadline("StreamTrainingProgress")):
            if on_progress:
                on_progress(step)
        job = self.job(app_id, job.id)
        if job.state == training_pb2.JOB_STATE_FAILED:
            raise error_for(grpc.StatusCode.FAILED_PRECONDITION, f"training job {job.id} failed: {job.error}")
        if job.state == training_pb2.JOB_STATE_CANCELLED:
            raise error_for(grpc.StatusCode.CANCELLED, f"training job {job.id} was cancelled")
        return job

    @wrap_errors
    def start_training(
        self, app_id: str, model_id: str, dataset_id: str, *, settings: dict[str, str] | None = None, require_passing_check: bool = False
    ) -> training_pb2.TrainingJob:
        """Start a job and return at once (follow it with :meth:`progress`, stop it with :meth:`cancel_training`)."""
        return self._training().TrainModel(
            training_pb2.TrainModelRequest(
                app_id=app_id, model_id=model_id, dataset_id=dataset_id, settings=settings or {}, require_passing_check=require_passing_check
            ),
            timeout=self._deadline("TrainModel"),
        )

    @wrap_errors
    def progress(self, app_id: str, job_id: str, timeout_s: float = 24 * 3600) -> Iterator[training_pb2.TrainingProgress]:
        """The job's progress rows (deep templates: one per epoch with loss, lrate, metrics every
        test_freq epochs, ETA) until it ends."""
        yield from self._training().StreamTrainingProgress(training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id), timeout=timeout_s)

    @wrap_errors
    def cancel_training(self, app_id: str, job_id: str) -> training_pb2.TrainingJob:
        """Cancel a queued or running job (a deep job stops between batches)."""
        request = training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id)
        return self._training().CancelTrainingJob(request, timeout=self._deadline("CancelTrainingJob"))

    @wrap_errors
    def job(self, app_id: str, job_id: str) -> training_pb2.TrainingJob:
        request = training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id)
        return self._training().GetTrainingJob(request, timeout=self._deadline("GetTrainingJob"))

    def train_deep(
        self,
        app_id: str,
        model_id: str,
        dataset_id: str,
        concepts: Iterable[str],
        *,
        template: str = "visual_classifier",
        settings: dict[str, str] | None = None,
        on_progress: Callable[[training_pb2.TrainingProgress], None] | None = None,
    ) -> training_pb2.TrainingJob:
        """Create (or reuse) a deep-template model and train a version on ``dataset_id``; the
        hyperparameters go in ``settings`` (e.g. ``{"architecture": "resnet_scratch", "num_epochs": "5"}``)."""
        self.create_model(app_id, model_id, concepts, template=template, settings=settings or {}, exist_ok=True)
        return self.train(app_id, model_id, dataset_id, settings=settings, on_progress=on_progress)

    @wrap_errors
    def versions(self, app_id: str, model_id: str) -> training_pb2.ListModelVersionsResponse:
        request = training_pb2.ListModelVersionsRequest(app_id=app_id, model_id=model_id)
        return self._training().ListModelVersions(request, timeout=self._deadline("ListModelVersions"))

    @wrap_errors
    def evaluate(self, app_id: str, model_id: str, version: str = "", split: str = "validation") -> training_pb2.Evaluation:
        return self._training().EvaluateModelVersion(
            training_pb2.EvaluateModelVersionRequest(app_id=app_id, model_id=model_id, version=version, split=SPLITS[split]),
            timeout=self._deadline("EvaluateModelVersion"),
        )

    @wrap_errors
    def compare(self, app_id: str, model_id: str, versions: Iterable[str] = (), split: str = "validation") -> training_pb2.Comparison:
        return self._training().CompareModelVersions(
            training_pb2.CompareModelVersionsRequest(app_id=app_id, model_id=model_id, versions=list(versions), split=SPLITS[split]),
            timeout=self._deadline("CompareModelVersions"),
        )
