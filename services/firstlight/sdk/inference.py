"""Predictions, detections and workflows (InferenceService)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from firstlight.sdk.base import ServiceCalls
from firstlight.sdk.errors import wrap_errors
from firstlight.sdk.items import DetectedRegion
from firstlight.v1 import inference_pb2


class InferenceCalls(ServiceCalls):
    @wrap_errors
    def predict(
        self,
        images: Sequence[bytes],
        *,
        model: str = "general",
        version: str = "",
        app_id: str = "",
        top_k: int = 5,
        concepts: Iterable[str] = (),
        input_ids: Iterable[str] = (),
    ) -> list[list[tuple[str, float]]]:
        """``input_ids`` (the app's ids of these images) let curation queue uncertain ones for labeling."""
        resp = self.inference.Predict(
            inference_pb2.PredictRequest(
                app_id=app_id,
                model_id=model,
                model_version=version,
                images=list(images),
                top_k=top_k,
                concepts=list(concepts),
                input_ids=list(input_ids),
            ),
            timeout=self._deadline("Predict"),
        )
        return [[(c.name, c.score) for c in p.concepts] for p in resp.predictions]

    @wrap_errors
    def detect(
        self,
        images: Sequence[bytes],
        *,
        model: str,
        app_id: str,
        version: str = "",
        top_k: int = 0,
        concepts: Iterable[str] = (),
        min_score: float = 0.0,
    ) -> list[list[DetectedRegion]]:
        """Regions found by a detector model (``visual_detector``) per image, best first; boxes are
        (x0, y0, x1, y1) normalised to the image. ``top_k`` 0 returns every region it found."""
        resp = self.inference.Predict(
            inference_pb2.PredictRequest(
                app_id=app_id,
                model_id=model,
                model_version=version,
                images=list(images),
                top_k=top_k,
                concepts=list(concepts),
                min_score=min_score,
            ),
            timeout=self._deadline("Predict"),
        )
        return [[DetectedRegion(r.concept, r.score, (r.box.x0, r.box.y0, r.box.x1, r.box.y1)) for r in p.regions] for p in resp.predictions]

    @wrap_errors
    def workflow(self, app_id: str, images: Sequence[bytes], steps: Sequence[inference_pb2.WorkflowStep]) -> inference_pb2.PredictWorkflowResponse:
        return self.inference.PredictWorkflow(
            inference_pb2.PredictWorkflowRequest(app_id=app_id, images=list(images), steps=list(steps)), timeout=self._deadline("PredictWorkflow")
        )
