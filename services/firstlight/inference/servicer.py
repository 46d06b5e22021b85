"""InferenceService gRPC servicer."""

from __future__ import annotations

import asyncio

import grpc

from firstlight.errors import Unavailable
from firstlight.inference.core import Predictor
from firstlight.runtime.status import map_errors
from firstlight.triton.client import TritonUnavailable
from firstlight.v1 import common_pb2, inference_pb2, inference_pb2_grpc


@map_errors
class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    async def Predict(self, request, context):  # type: ignore[no-untyped-def]
        try:
            model, results = await asyncio.to_thread(
                self.predictor.predict,
                list(request.images),
                model_id=request.model_id,
                version=request.model_version,
                top_k=request.top_k,
                concepts=list(request.concepts),
                min_score=request.min_score,
            )
        except TritonUnavailable as exc:
            raise Unavailable(f"model server unavailable: {exc}") from exc
        return inference_pb2.PredictResponse(
            predictions=[
                inference_pb2.Prediction(concepts=[common_pb2.ScoredConcept(name=n, score=s) for n, s in r])
                for r in results
            ],
            model_id=model.id,
            model_version=model.versions[-1],
        )

    async def ListModels(self, request, context):  # type: ignore[no-untyped-def]
        return inference_pb2.ListModelsResponse(
            models=[
                inference_pb2.ModelInfo(
                    id=m.id, versions=m.versions, concept_count=len(m.concepts), description=m.description
                )
                for m in self.predictor.models()
            ]
        )


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> list[str]:
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
    return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]
