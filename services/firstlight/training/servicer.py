"""TrainingService gRPC servicer: proto ⇄ domain around :class:`~firstlight.training.core.TrainingCore`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from firstlight.domain import evaluation, validation
from firstlight.errors import InvalidArgument
from firstlight.runtime.convert import labeled_of, timestamp
from firstlight.runtime.status import map_errors
from firstlight.training.core import CANCELLED, FAILED, SUCCEEDED, RowFilter, TrainingCore
from firstlight.training.core import TERMINAL as _TERMINAL
from firstlight.v1 import common_pb2, training_pb2, training_pb2_grpc

TERMINAL = set(_TERMINAL)
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
_END_STAGE = {SUCCEEDED: "done", FAILED: "failed", CANCELLED: "cancelled"}


def _dataset(ds: dict) -> training_pb2.Dataset:
    counts: dict[str, list[int]] = {}
    for row in ds["rows"]:
        for c in row.concepts:
            counts.setdefault(c, [0, 0, 0])[row.split - 1] += 1
    return training_pb2.Dataset(
        app_id=ds["app_id"],
        id=ds["id"],
        version=ds["version"],
        counts=[training_pb2.ConceptSplitCounts(concept=c, train=n[0], validation=n[1], test=n[2]) for c, n in sorted(counts.items())],
        created_at=timestamp(ds["created_at"]),
        health=_health(ds.get("health")),
    )


def _health(h: dict | None) -> training_pb2.DatasetHealth | None:
    if not h:
        return None
    return training_pb2.DatasetHealth(
        status=h["status"],
        checks=[training_pb2.DatasetCheck(name=c["name"], status=c["status"], message=c["message"], count=c["count"]) for c in h.get("checks", [])],
        error=h.get("error", ""),
    )


def _model(m: dict) -> training_pb2.Model:
    return training_pb2.Model(
        app_id=m["app_id"], id=m["id"], template=m["template"], concepts=m["concepts"], settings=m["settings"], serving_version=m["serving_version"]
    )


def _job(j: dict) -> training_pb2.TrainingJob:
    return training_pb2.TrainingJob(
        id=j["id"], app_id=j["app_id"], model_id=j["model_id"], state=j["state"], version=j["version"], error=j["error"], progress=j["progress"]
    )


def _evaluation(model_id: str, result: dict) -> training_pb2.Evaluation:
    report = result["report"]
    return training_pb2.Evaluation(
        model_id=model_id,
        version=result["version"],
        split=result["split"],
        metrics=evaluation.headline(report),
        concepts=[
            training_pb2.ConceptMetrics(concept=c.concept, precision=c.precision, recall=c.recall, f1=c.f1, support=c.support) for c in report.per_concept
        ],
        confusion_matrix=[int(x) for row in report.confusion for x in row],
        concept_order=report.concepts,
        confusion_matrix_png=result["png"],
        report_markdown=result["markdown"],
        predictions=[training_pb2.EvaluatedInput(input_id=i, true_concept=t, predicted_concept=p, score=sc) for i, t, p, sc in result.get("predictions", ())],
        count=result["count"],
    )


@map_errors
class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, service: TrainingCore) -> None:
        self.service = service

    async def CreateDataset(self, request: training_pb2.CreateDatasetRequest, context: Context) -> training_pb2.Dataset:
        s = request.split
        counts = (s.train_count, s.validation_count, s.test_count) if (s.train_count or s.validation_count or s.test_count) else None
        fractions = None
        if not counts:
            given = (s.train_fraction, s.validation_fraction, s.test_fraction)
            fractions = given if any(given) else (0.8, 0.1, 0.1)
        ds = await asyncio.to_thread(
            self.service.create_dataset,
            request.app_id,
            request.dataset_id,
            concepts=list(request.concepts),
            fractions=fractions,
            counts=counts,
            seed=s.seed,
            write_back=request.write_splits_to_inputs,
            input_splits=s.from_inputs,
            group_duplicates=s.group_duplicates,
        )
        return _dataset(ds)

    async def GetDataset(self, request: training_pb2.GetDatasetRequest, context: Context) -> training_pb2.Dataset:
        return _dataset(await asyncio.to_thread(self.service.get_dataset, request.app_id, request.dataset_id))

    async def CreateModel(self, request: training_pb2.CreateModelRequest, context: Context) -> training_pb2.Model:
        m = await asyncio.to_thread(
            self.service.create_model, request.app_id, request.model_id, request.template, list(request.concepts), dict(request.settings)
        )
        return _model(m)

    async def TrainModel(self, request: training_pb2.TrainModelRequest, context: Context) -> training_pb2.TrainingJob:
        promotion = (request.promotion_metric, request.promotion_min_gain) if request.promotion_metric else None
        job = await asyncio.to_thread(
            self.service.train, request.app_id, request.model_id, request.dataset_id, dict(request.settings), promotion, request.require_passing_check
        )
        return _job(job)

    async def GetTrainingJob(self, request: training_pb2.GetTrainingJobRequest, context: Context) -> training_pb2.TrainingJob:
        return _job(await asyncio.to_thread(self.service.job, request.job_id, request.app_id or None))

    async def StreamTrainingProgress(self, request: training_pb2.GetTrainingJobRequest, context: Context) -> AsyncIterator[training_pb2.TrainingProgress]:
        job = await asyncio.to_thread(self.service.job, request.job_id, request.app_id or None)
        seen = 0
        while True:
            steps = await asyncio.to_thread(self.service.log.wait_after, job["id"], seen, 1.0)
            seen += len(steps)
            for step in steps:
                yield training_pb2.TrainingProgress(
                    job_id=job["id"],
                    state=training_pb2.JobState.ValueType(step.state),
                    stage=step.stage,
                    progress=step.progress,
                    metrics=step.metrics,
                    message=step.message,
                    epoch=step.epoch,
                    num_epochs=step.num_epochs,
                    loss=step.loss,
                    lrate=step.lrate,
                    eta_seconds=step.eta_seconds,
                    items_per_second=step.items_per_second,
                )
                if step.state in TERMINAL:
                    return
            if not steps:  # e.g. the service restarted: the stored state is all there is
                current = await asyncio.to_thread(self.service.job, job["id"])
                if current["state"] in TERMINAL:
                    yield training_pb2.TrainingProgress(
                        job_id=job["id"],
                        state=current["state"],
                        stage=_END_STAGE[current["state"]],
                        progress=current["progress"],
                        message=current["error"],
                    )
                    return

    async def CancelTrainingJob(self, request: training_pb2.GetTrainingJobRequest, context: Context) -> training_pb2.TrainingJob:
        return _job(await asyncio.to_thread(self.service.cancel, request.job_id, request.app_id or None))

    async def ListModelVersions(self, request: training_pb2.ListModelVersionsRequest, context: Context) -> training_pb2.ListModelVersionsResponse:
        model, rows = await asyncio.to_thread(self.service.list_versions, request.app_id, request.model_id)
        return training_pb2.ListModelVersionsResponse(
            model=_model(model),
            versions=[
                training_pb2.ModelVersion(
                    version=str(v["version"]),
                    dataset_id=v["dataset_id"],
                    dataset_version=v["dataset_version"],
                    validation_metrics={k: float(x) for k, x in v["validation_metrics"].items()},
                    serving=str(v["version"]) == model["serving_version"],
                    settings={k: str(x) for k, x in v["settings"].items()},
                    train_seconds=v["train_seconds"],
                    created_at=timestamp(v["created_at"]),
                    promotion_note=v["promotion_note"],
                    fit_report_json=json.dumps(v["train_report"].get("fit", {})),
                    test_metrics={k: float(x) for k, x in v["train_report"].get("experiment", {}).get("test", {}).items()},
                    timings={k: float(x) for k, x in v["train_report"].get("experiment", {}).get("timings", {}).items()},
                    template=model["template"],
                    embedding_model=validation.public_embedding_model(request.app_id, v["train_report"].get("embedding_model", "")),
                )
                for v in rows
            ],
        )

    async def EvaluateModelVersion(self, request: training_pb2.EvaluateModelVersionRequest, context: Context) -> training_pb2.Evaluation:
        if request.stored_only:
            version, split, metrics = await asyncio.to_thread(
                self.service.stored_evaluation, request.app_id, request.model_id, request.version, int(request.split)
            )
            return training_pb2.Evaluation(model_id=request.model_id, version=version, split=common_pb2.Split.ValueType(split), metrics=metrics)
        result = await asyncio.to_thread(self.service.evaluate, request.app_id, request.model_id, request.version, int(request.split))
        return _evaluation(request.model_id, result)

    async def PromoteModelVersion(self, request, context):  # type: ignore[no-untyped-def]
        model, promoted, note, previous = await asyncio.to_thread(
            self.service.promote, request.app_id, request.model_id, request.version, request.metric, request.min_gain, request.override_reason
        )
        return training_pb2.PromoteModelVersionResponse(model=_model(model), promoted=promoted, note=note, previous_version=previous)

    async def CompareModelVersions(self, request: training_pb2.CompareModelVersionsRequest, context: Context) -> training_pb2.Comparison:
        if len(set(request.versions)) != len(request.versions):
            raise InvalidArgument("a version appears twice")
        out = await asyncio.to_thread(self.service.compare, request.app_id, request.model_id, list(request.versions), int(request.split))
        return training_pb2.Comparison(
            evaluations=[_evaluation(request.model_id, r) for r in out["results"].values()],
            best_version=out["best"],
            report_markdown=out["markdown"],
        )

    # -- for the curation service (its rounds, strategies and reports) ------------------------
    async def ExtendDataset(self, request: training_pb2.ExtendDatasetRequest, context: Context) -> training_pb2.Dataset:
        # the core checks the ids (extend_dataset reads the latest version through get_dataset)
        return _dataset(await asyncio.to_thread(self.service.extend_dataset, request.app_id, request.dataset_id))

    async def ListDatasetRows(self, request: training_pb2.ListDatasetRowsRequest, context: Context) -> training_pb2.ListDatasetRowsResponse:
        f = request.filter
        flt = RowFilter(tuple(f.concepts), int(f.split), labeled_of(f.labeled))
        page = await asyncio.to_thread(
            self.service.dataset_rows_page, request.app_id, request.dataset_id, request.version, request.page_size, request.page_token, flt
        )
        return training_pb2.ListDatasetRowsResponse(
            version=page.version,
            rows=[training_pb2.DatasetRow(input_id=r.input_id, concepts=r.concepts, split=common_pb2.Split.ValueType(r.split)) for r in page.rows],
            next_page_token=page.next_token,
            total_size=page.total,
        )

    async def ScoreInputs(self, request: training_pb2.ScoreInputsRequest, context: Context) -> training_pb2.ScoreInputsResponse:
        r = await asyncio.to_thread(self.service.score_inputs, request.app_id, request.model_id, request.version, list(request.input_ids))
        return training_pb2.ScoreInputsResponse(
            version=r["version"],
            concepts=r["concepts"],
            input_ids=r["input_ids"],
            probabilities=r["proba"].ravel().tolist(),
            activation=r["activation"],
        )

    async def GetHeadWeights(self, request: training_pb2.GetHeadWeightsRequest, context: Context) -> training_pb2.HeadWeights:
        r = await asyncio.to_thread(self.service.head_weights, request.app_id, request.model_id, request.version)
        return training_pb2.HeadWeights(
            version=r["version"],
            template=r["template"],
            concepts=r["concepts"],
            dim=int(r["W"].shape[1]),
            weights=r["W"].ravel().tolist(),
            bias=r["b"].ravel().tolist(),
            activation=r["activation"],
            normalize=r["normalize"],
            embedding_model=r["embedding_model"],
        )

    async def GetDeepExplainer(self, request: training_pb2.GetHeadWeightsRequest, context: Context) -> training_pb2.DeepExplainer:
        r = await asyncio.to_thread(self.service.deep_explainer, request.app_id, request.model_id, request.version)
        return training_pb2.DeepExplainer(
            version=r["version"], template=r["template"], concepts=r["concepts"], activation=r["activation"],
            image_size=r["image_size"], torchscript=r["torchscript"],
        )  # fmt: skip


def add_to_server(servicer: TrainingServicer, server: grpc.aio.Server) -> list[str]:
    training_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, server)
    return [training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name]
