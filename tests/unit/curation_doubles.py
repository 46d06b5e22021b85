"""The curation core's Training port over an in-process training core: the code the training
RPCs call, so unit tests exercise curation against real training logic without a server
(the service itself reaches training through ``curation.peers`` over gRPC)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from firstlight.curation.ports import HeadArrays, Job, ModelInfo, Row, Scores, VersionInfo
from firstlight.errors import NotFound
from firstlight.training.core import RowFilter


class InProcessTraining:
    def __init__(self, service) -> None:  # type: ignore[no-untyped-def]
        self.service = service  # firstlight.training.core.TrainingCore

    def model(self, app_id: str, model_id: str) -> ModelInfo:
        m = self.service.model(app_id, model_id)
        return ModelInfo(m["app_id"], m["id"], m["template"], list(m["concepts"]), m["serving_version"])

    def version(self, app_id: str, model_id: str, version: str) -> VersionInfo | None:
        v = self.service.store.get_version(app_id, model_id, int(version)) if str(version).isdigit() else None
        if not v:
            return None
        return VersionInfo(str(v["version"]), v["dataset_id"], v["dataset_version"], dict(v["validation_metrics"]), v["promotion_note"])

    def latest_dataset_version(self, app_id: str, dataset_id: str) -> str | None:
        ds = self.service.store.latest_dataset(app_id, dataset_id)
        return ds["version"] if ds else None

    def dataset_rows(self, app_id: str, dataset_id: str, version: str) -> list[Row]:
        try:
            rows = self.service.dataset_rows_page(app_id, dataset_id, version, 0, "", RowFilter()).rows
        except NotFound:
            return []
        return [Row(r.input_id, list(r.concepts), int(r.split)) for r in rows]

    def scores(self, app_id: str, model_id: str, version: str, input_ids: Sequence[str]) -> Scores:
        r = self.service.score_inputs(app_id, model_id, version, list(input_ids))
        return Scores(r["version"], r["concepts"], r["input_ids"], np.asarray(r["proba"]))

    def stored_test_metrics(self, app_id: str, model_id: str, version: str) -> dict[str, float]:
        try:
            return self.service.stored_evaluation(app_id, model_id, version, 3)[2]
        except NotFound:
            return {}

    def head(self, app_id: str, model_id: str, version: str) -> HeadArrays:
        h = self.service.head_weights(app_id, model_id, version)
        return HeadArrays(h["version"], h["template"], h["concepts"], h["W"], h["b"], h["activation"], h["normalize"], h["embedding_model"])

    def extend_dataset(self, app_id: str, dataset_id: str) -> str:
        return self.service.extend_dataset(app_id, dataset_id)["version"]

    def train(self, app_id: str, model_id: str, dataset_id: str, promotion: tuple[str, float]) -> Job:
        return _job(self.service.train(app_id, model_id, dataset_id, {}, promotion))

    def job(self, app_id: str, job_id: str) -> Job:
        return _job(self.service.job(job_id, app_id))


def _job(j: dict) -> Job:
    return Job(j["id"], int(j["state"]), str(j["version"] or ""), j["error"] or "")
