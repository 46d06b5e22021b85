"""InferenceService gRPC servicer."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from firstlight.inference.core import Predictor
from firstlight.inference.servicer_video import VideoPredictions, workflow_output
from firstlight.inference.steps import step_from_proto
from firstlight.runtime.status import map_errors
from firstlight.v1 import common_pb2, inference_pb2, inference_pb2_grpc

T = TypeVar("T")


@map_errors
class InferenceServicer(VideoPredictions, inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, predictor: Predictor, threads: int = 32) -> None:
        self.predictor = predictor
        # Its own pool, sized for concurrency (config.InferenceSettings.predict_threads): decode
        # and preprocessing release the GIL, and the rest of a call waits on Triton.
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        ctx = contextvars.copy_context()  # as asyncio.to_thread does
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(ctx.run, fn, *args, **kwargs))

    async def Predict(self, request, context):  # type: ignore[no-untyped-def]
        model, results, found = await self._run(
            self.predictor.predict_regions,
            list(request.images),
            app_id=request.app_id,
            model_id=request.model_id,
            version=request.model_version,
            top_k=request.top_k,
            concepts=list(request.concepts),
            min_score=request.min_score,
            input_ids=list(request.input_ids),
        )
        return inference_pb2.PredictResponse(
            predictions=[
                inference_pb2.Prediction(
                    concepts=[common_pb2.ScoredConcept(name=n, score=s) for n, s in r],
                    regions=[
                        common_pb2.Region(concept=g.concept, score=g.score, box=common_pb2.BoundingBox(x0=g.box[0], y0=g.box[1], x1=g.box[2], y1=g.box[3]))
                        for g in regs
                    ],
                )
                for r, regs in zip(results, found)
            ],
            model_id=model.id,
            model_version=model.version,
        )

    async def ListModels(self, request, context):  # type: ignore[no-untyped-def]
        return inference_pb2.ListModelsResponse(
            models=[
                inference_pb2.ModelInfo(id=m.id, versions=m.versions, concept_count=len(m.concepts), description=m.description)
                for m in self.predictor.models(request.app_id)
            ]
        )

    async def PredictWorkflow(self, request, context):  # type: ignore[no-untyped-def]
        steps = [step_from_proto(s) for s in request.steps]
        results = await self._run(self.predictor.workflow, list(request.images), request.app_id, steps)
        return inference_pb2.PredictWorkflowResponse(outputs=[workflow_output(per_image) for per_image in results])


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> list[str]:
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
    return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]
