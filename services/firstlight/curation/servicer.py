"""CurationService gRPC servicer."""

from __future__ import annotations

import asyncio

import grpc

from firstlight.curation.service import Curation
from firstlight.runtime.status import map_errors
from firstlight.v1 import curation_pb2, curation_pb2_grpc


@map_errors
class CurationServicer(curation_pb2_grpc.CurationServiceServicer):
    def __init__(self, curation: Curation) -> None:
        self.curation = curation

    async def SuggestInputsForLabeling(self, request, context):  # type: ignore[no-untyped-def]
        strategy, pool, suggestions = await asyncio.to_thread(
            self.curation.suggest, request.app_id, request.model_id, request.model_version, request.strategy, request.batch_size, request.seed
        )
        return curation_pb2.SuggestInputsResponse(
            strategy=strategy,
            pool_size=pool,
            suggestions=[
                curation_pb2.Suggestion(input_id=s.input_id, score=s.score, difficulty=s.difficulty, predicted_concept=s.predicted, confidence=s.confidence)
                for s in suggestions
            ],
        )

    async def FindLabelErrors(self, request, context):  # type: ignore[no-untyped-def]
        examined, errors = await asyncio.to_thread(
            self.curation.label_errors, request.app_id, list(request.concepts), request.folds, request.max_results
        )
        return curation_pb2.FindLabelErrorsResponse(
            examined=examined,
            errors=[curation_pb2.LabelError(input_id=i, given_concept=g, suggested_concept=s, score=sc) for i, g, s, sc in errors],
        )

    async def GetDriftReport(self, request, context):  # type: ignore[no-untyped-def]
        report, n_ref, n_rec = await asyncio.to_thread(
            self.curation.drift, request.app_id, request.reference_split, request.recent_count, list(request.recent_input_ids)
        )
        return curation_pb2.DriftReport(
            alert=report.alert, p_value=report.p_value, psi=report.psi, centroid_distance=report.centroid_distance,
            reference_count=n_ref, recent_count=n_rec,
        )


def add_to_server(servicer: CurationServicer, server: grpc.aio.Server) -> list[str]:
    curation_pb2_grpc.add_CurationServiceServicer_to_server(servicer, server)
    return [curation_pb2.DESCRIPTOR.services_by_name["CurationService"].full_name]
