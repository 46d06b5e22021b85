"""CurationService gRPC servicer: proto <-> the core's types; domain errors -> status (map_errors)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import grpc

from firstlight.curation.core import Curation
from firstlight.curation.embedding_map import EmbeddingMaps
from firstlight.curation.explanations import Explained, Explanations
from firstlight.curation.leases import PoolSource, QueueLeases
from firstlight.curation.pool_scores import LabelFilter, PoolScoring
from firstlight.curation.stream import Policy, Rounds, StreamCuration, StreamDrift, make_policy
from firstlight.domain import validation
from firstlight.errors import NotFound
from firstlight.runtime.convert import labeled_of, timestamp
from firstlight.runtime.status import map_errors
from firstlight.v1 import common_pb2, curation_pb2, curation_pb2_grpc


def _policy(p: Policy) -> curation_pb2.CurationPolicy:
    return curation_pb2.CurationPolicy(
        app_id=p.app_id,
        model_id=p.model_id,
        strategy=p.strategy,
        threshold=p.threshold,
        max_per_minute=p.max_per_minute,
        budget=p.budget,
        retrain_after_labels=p.retrain_after_labels,
        dataset_id=p.dataset_id,
        promotion_metric=p.promotion_metric,
        promotion_min_gain=p.promotion_min_gain,
        drift_window=p.drift_window,
    )


def _queue_item(r: dict) -> curation_pb2.QueueItem:
    return curation_pb2.QueueItem(
        input_id=r["input_id"],
        model_id=r["model_id"],
        model_version=r["model_version"],
        score=r["score"],
        strategy=r["strategy"],
        predicted_concept=r["predicted"],
        state=r["state"],
        concepts=r["concepts"],
        queued_at=timestamp(r["queued_at"]),
        round=r["round"],
    )


def _label_filter(f: common_pb2.InputFilter) -> LabelFilter:
    return LabelFilter(tuple(f.concepts), int(f.split), labeled_of(f.labeled))


def _scoring_job(j: dict) -> curation_pb2.ScoringJob:
    return curation_pb2.ScoringJob(
        id=j["id"],
        app_id=j["app_id"],
        model_id=j["model_id"],
        model_version=j["model_version"],
        state=j["state"],
        scored=j["scored"],
        total=j["total"],
        progress=(j["scored"] / j["total"]) if j["total"] else float(j["state"] != "running"),
        error=j["error"],
        started_at=timestamp(j["started_at"]),
        finished_at=timestamp(j["finished_at"]) if j["finished_at"] else None,
        resumed=j["resumed"],
    )


def _round(r: dict) -> curation_pb2.LearningRound:
    out = curation_pb2.LearningRound(
        app_id=r["app_id"],
        model_id=r["model_id"],
        round=r["round"],
        strategy=r["strategy"],
        labels_spent=r["labels_spent"],
        total_labels=r["total_labels"],
        dataset_version=r["dataset_version"],
        previous_version=r["previous_version"],
        candidate_version=r["candidate_version"],
        promoted=r["promoted"],
        note=r["note"],
        metrics=r["metrics"],
        previous_metrics=r["previous_metrics"],
        status=r["status"],
    )
    for name in ("started_at", "finished_at"):
        if r.get(name):
            getattr(out, name).CopyFrom(timestamp(datetime.fromisoformat(r[name])))
    return out


@map_errors
class CurationServicer(curation_pb2_grpc.CurationServiceServicer):
    def __init__(
        self,
        curation: Curation,
        stream: StreamCuration | None = None,
        rounds: Rounds | None = None,
        drift: StreamDrift | None = None,
        maps: EmbeddingMaps | None = None,
        explanations: Explanations | None = None,
    ) -> None:
        self.curation = curation
        self.maps = maps
        self.explanations = explanations or Explanations(curation.platform, curation.training)
        self.stream = stream
        self.rounds = rounds
        self.stream_drift = drift
        self.leases = QueueLeases(stream) if stream is not None else None
        self.scoring = PoolScoring(curation, stream.store) if stream is not None else None

    def _stream(self) -> StreamCuration:
        if self.stream is None:  # only in tests that build the servicer without the stream side
            raise NotFound("stream curation is not running in this process")
        return self.stream

    async def SuggestInputsForLabeling(self, request, context):  # type: ignore[no-untyped-def]
        strategy, pool, suggestions, number = await asyncio.to_thread(
            self.curation.suggest,
            request.app_id,
            request.model_id,
            request.model_version,
            request.strategy,
            request.batch_size,
            request.seed,
            request.record_round,
        )
        return curation_pb2.SuggestInputsResponse(
            strategy=strategy,
            pool_size=pool,
            round=number,
            suggestions=[
                curation_pb2.Suggestion(input_id=s.input_id, score=s.score, difficulty=s.difficulty, predicted_concept=s.predicted, confidence=s.confidence)
                for s in suggestions
            ],
        )

    async def FindLabelErrors(self, request, context):  # type: ignore[no-untyped-def]
        examined, errors = await asyncio.to_thread(self.curation.label_errors, request.app_id, list(request.concepts), request.folds, request.max_results)
        return curation_pb2.FindLabelErrorsResponse(
            examined=examined,
            errors=[curation_pb2.LabelError(input_id=i, given_concept=g, suggested_concept=s, score=sc) for i, g, s, sc in errors],
        )

    async def GetDriftReport(self, request, context):  # type: ignore[no-untyped-def]
        if request.stream:
            policy = await asyncio.to_thread(self._stream().get_policy, request.app_id)
            if self.stream_drift is None:
                raise NotFound("stream curation is not running in this process")
            r = await asyncio.to_thread(self.stream_drift.report, request.app_id, policy.model_id)
            return curation_pb2.DriftReport(
                alert=r.report.alert,
                p_value=r.report.p_value,
                psi=r.report.psi,
                centroid_distance=r.report.centroid_distance,
                reference_count=r.reference_count,
                recent_count=r.window,
                psi_predictions=float(r.report.details.get("psi_pred", 0.0)),
                model_id=r.model_id,
                model_version=r.model_version,
            )
        report, n_ref, n_rec = await asyncio.to_thread(
            self.curation.drift, request.app_id, request.reference_split, request.recent_count, list(request.recent_input_ids)
        )
        return curation_pb2.DriftReport(
            alert=report.alert,
            p_value=report.p_value,
            psi=report.psi,
            centroid_distance=report.centroid_distance,
            reference_count=n_ref,
            recent_count=n_rec,
        )

    async def SetCurationPolicy(self, request, context):  # type: ignore[no-untyped-def]
        policy = make_policy(
            request.app_id,
            request.model_id,
            strategy=request.strategy,
            threshold=request.threshold,
            max_per_minute=request.max_per_minute,
            budget=request.budget,
            retrain_after_labels=request.retrain_after_labels,
            dataset_id=request.dataset_id,
            promotion_metric=request.promotion_metric,
            promotion_min_gain=request.promotion_min_gain,
            drift_window=request.drift_window,
        )
        await asyncio.to_thread(self.curation.check_policy_targets, policy.app_id, policy.model_id, policy.dataset_id)
        saved = await asyncio.to_thread(self._stream().set_policy, policy)
        if self.rounds is not None:  # labels may already be waiting for the new rule
            await asyncio.to_thread(self.rounds.maybe_start, policy.app_id)
        return _policy(saved)

    async def GetCurationPolicy(self, request, context):  # type: ignore[no-untyped-def]
        return _policy(await asyncio.to_thread(self._stream().get_policy, request.app_id))

    async def ListLabelingQueue(self, request, context):  # type: ignore[no-untyped-def]
        rows, token, stats = await asyncio.to_thread(self._stream().queue, request.app_id, int(request.state), request.page_size, request.page_token)
        return curation_pb2.ListLabelingQueueResponse(
            items=[_queue_item(r) for r in rows],
            next_page_token=token,
            stats=curation_pb2.QueueStats(**stats),
        )

    async def LeaseQueueItem(self, request, context):  # type: ignore[no-untyped-def]
        if self.leases is None:
            raise NotFound("stream curation is not running in this process")
        row, expires, others = await asyncio.to_thread(
            self.leases.lease,
            request.app_id,
            request.holder,
            request.lease_seconds,
            request.release_input_id,
            list(request.exclude_input_ids),
            PoolSource(request.model_id, request.model_version) if request.model_id else None,
        )
        if row is None:
            return curation_pb2.LeaseQueueItemResponse(leased_to_others=others)
        return curation_pb2.LeaseQueueItemResponse(item=_queue_item(row), lease_expires_at=timestamp(expires), leased_to_others=others)

    def _scoring(self) -> PoolScoring:
        if self.scoring is None:
            raise NotFound("stream curation is not running in this process")
        return self.scoring

    async def ScorePool(self, request, context):  # type: ignore[no-untyped-def]
        job = await asyncio.to_thread(self._scoring().start, request.app_id, request.model_id, request.model_version, request.unlabeled_only)
        return _scoring_job(job)

    async def GetScoringJob(self, request, context):  # type: ignore[no-untyped-def]
        return _scoring_job(self._scoring().job(request.app_id, request.job_id))

    async def ListPoolPredictions(self, request, context):  # type: ignore[no-untyped-def]
        rows, token, total, version = await asyncio.to_thread(
            self._scoring().predictions,
            request.app_id,
            request.model_id,
            request.model_version,
            request.predicted_concept,
            request.min_score,
            request.max_score,
            request.order,
            request.page_size,
            request.page_token,
            _label_filter(request.filter),
        )
        return curation_pb2.ListPoolPredictionsResponse(
            predictions=[
                curation_pb2.PoolPrediction(input_id=r["input_id"], predicted_concept=r["predicted"], score=r["score"], uncertainty=r["uncertainty"])
                for r in rows
            ],
            next_page_token=token,
            total_size=total,
            model_version=version,
        )

    async def ListLearningRounds(self, request, context):  # type: ignore[no-untyped-def]
        validation.app_id(request.app_id)
        rows = await asyncio.to_thread(self._stream().store.rounds, request.app_id)
        return curation_pb2.ListLearningRoundsResponse(rounds=[_round(r) for r in rows])

    async def RunHealthCheck(self, request, context):  # type: ignore[no-untyped-def]
        r = await asyncio.to_thread(
            self.curation.health_check,
            request.app_id,
            request.dataset_id,
            request.dataset_version,
            request.images,
            request.near_duplicate_threshold,
            request.max_examples,
            request.group_key,
        )
        return curation_pb2.HealthCheckResponse(
            status=r["status"],
            examined=r["examined"],
            checks=[curation_pb2.HealthCheckResult(name=n, status=s, message=m, count=c, input_ids=ids) for n, s, m, c, ids in r["checks"]],
            duplicate_groups=[curation_pb2.DuplicateGroup(input_ids=m, keep=k, kind=kind, similarity=sim) for m, k, kind, sim in r["duplicate_groups"]],
            outliers=[curation_pb2.OutlierScore(input_id=i, score=sc) for i, sc in r["outliers"]],
            flagged_images=[curation_pb2.ImageQualityMetrics(input_id=i, metrics=m, issues=iss) for i, m, iss in r["flagged_images"]],
            markdown=r["markdown"],
        )

    async def FindDuplicateGroups(self, request, context):  # type: ignore[no-untyped-def]
        r = await asyncio.to_thread(self.curation.duplicate_groups, request.app_id, list(request.input_ids), request.near_duplicate_threshold, request.images)
        groups = [curation_pb2.DuplicateGroup(input_ids=m, keep=k, kind=kind, similarity=sim) for m, k, kind, sim in r["groups"]]
        return curation_pb2.FindDuplicateGroupsResponse(groups=groups, examined=r["examined"])

    async def KeepOneDuplicate(self, request, context):  # type: ignore[no-untyped-def]
        r = await asyncio.to_thread(self.curation.keep_one, request.app_id, request.keep, list(request.drop), request.near_duplicate_threshold)
        return curation_pb2.KeepOneResponse(kept=r["kept"], deleted_input_ids=r["deleted"], kind=r["kind"], similarity=r["similarity"])

    async def GetWorstSlices(self, request, context):  # type: ignore[no-untyped-def]
        r = await asyncio.to_thread(
            self.curation.worst_slices,
            request.app_id,
            request.model_id,
            request.model_version,
            request.split,
            request.min_size,
            request.limit,
            request.rank_by,
            list(request.metadata_keys),
        )
        overall = r["overall"]
        return curation_pb2.WorstSlicesResponse(
            model_version=r["version"],
            split=r["split"],
            count=r["count"],
            accuracy=overall["accuracy"],
            f1=overall["f1"],
            brier=overall["brier"],
            rank_by=r["rank_by"],
            slices=[
                curation_pb2.Slice(
                    field=s.field,
                    value=s.value,
                    count=s.n,
                    accuracy=s.accuracy,
                    accuracy_low=s.low,
                    accuracy_high=s.high,
                    gap=s.gap,
                    confident_gap=s.confident_gap,
                    f1=s.f1 or 0.0,
                    majority_concept=m,
                    majority_share=share,
                    f1_low=s.figures["f1"].low,
                    f1_high=s.figures["f1"].high,
                    brier=s.figures["brier"].value,
                    brier_low=s.figures["brier"].low,
                    brier_high=s.figures["brier"].high,
                    rank_gap=s.rank_gap,
                )
                for s, m, share in r["slices"]
            ],
            metadata_keys=r["metadata_keys"],
        )

    def _maps(self) -> EmbeddingMaps:
        if self.maps is None:  # only in tests that build the servicer without it
            raise NotFound("embedding maps are not served by this process")
        return self.maps

    async def StartEmbeddingMap(self, request, context):  # type: ignore[no-untyped-def]
        return _map_job(await asyncio.to_thread(self._maps().start, request.app_id, request.method, request.force))

    async def GetEmbeddingMapJob(self, request, context):  # type: ignore[no-untyped-def]
        return _map_job(self._maps().job(request.app_id, request.job_id))

    async def ListEmbeddingMapPoints(self, request, context):  # type: ignore[no-untyped-def]
        r = await asyncio.to_thread(
            self._maps().points,
            request.app_id,
            request.method,
            request.page_size,
            request.page_token,
            request.dataset_id,
            request.dataset_version,
            request.model_id,
            request.model_version,
        )
        return curation_pb2.ListEmbeddingMapPointsResponse(
            points=[
                curation_pb2.EmbeddingMapPoint(
                    input_id=p["input_id"],
                    x=p["x"],
                    y=p["y"],
                    concepts=p["concepts"],
                    split=p["split"],
                    predicted_concept=p["predicted"],
                    score=p["score"],
                    in_dataset=p["in_dataset"],
                )
                for p in r["points"]
            ],
            next_page_token=r["next_page_token"],
            total_size=r["total_size"],
            method=r["method"],
            map_key=r["map_key"],
            model_version=r["model_version"],
            predictions_source=r["predictions_source"],
            dataset_version=r["dataset_version"],
            computed_at=timestamp(r["computed_at"]),
        )

    async def ExplainPrediction(self, request, context):  # type: ignore[no-untyped-def]
        which = request.WhichOneof("query")
        r = await asyncio.to_thread(
            self.explanations.explain,
            request.app_id,
            request.model_id,
            request.model_version,
            request.input_id if which == "input_id" else "",
            request.image_bytes if which == "image_bytes" else b"",
            request.top_k,
            request.evidence_count,
            request.method,
        )
        return _explained(r)

    async def ScoreUniqueness(self, request, context):  # type: ignore[no-untyped-def]
        r = await asyncio.to_thread(
            self.curation.uniqueness,
            request.app_id,
            request.scope,
            request.order,
            request.concept,
            request.page_size,
            request.page_token,
            request.per_concept,
        )
        return curation_pb2.ScoreUniquenessResponse(
            inputs=[_uniqueness_score(u) for u in r["inputs"]],
            next_page_token=r["next_page_token"],
            total_size=r["total_size"],
            examined=r["examined"],
            representatives=[
                curation_pb2.ConceptRepresentatives(concept=c, inputs=[_uniqueness_score(u) for u in us]) for c, us in r["representatives"].items()
            ],
            scope=r["scope"],
            order=r["order"],
        )


def _uniqueness_score(u: dict) -> curation_pb2.UniquenessScore:
    return curation_pb2.UniquenessScore(input_id=u["input_id"], score=u["score"], concept_score=u["concept_score"], concepts=u["concepts"])


def _map_job(j: dict) -> curation_pb2.EmbeddingMapJob:
    return curation_pb2.EmbeddingMapJob(
        id=j["id"],
        app_id=j["app_id"],
        method=j["method"],
        state=j["state"],
        stage=j["stage"],
        progress=j["progress"],
        points=j["points"],
        total_inputs=j["total_inputs"],
        cached=j["cached"],
        map_key=j["map_key"],
        error=j["error"],
        started_at=timestamp(j["started_at"]),
        finished_at=timestamp(j["finished_at"]) if j["finished_at"] else None,
        projection_seconds=j["projection_seconds"],
    )


def _explained(r: Explained) -> curation_pb2.ExplainPredictionResponse:
    x0, y0, x1, y1 = r.box
    return curation_pb2.ExplainPredictionResponse(
        model_version=r.version,
        template=r.template,
        activation=r.activation,
        method=r.method,
        concepts=[
            curation_pb2.ConceptExplanation(
                concept=c.concept,
                score=c.score,
                overlay_png=c.overlay_png,
                map_height=int(c.saliency.shape[0]),
                map_width=int(c.saliency.shape[1]),
                saliency=c.saliency.ravel().tolist(),
                evidence=[curation_pb2.ExplanationEvidence(input_id=i, similarity=s, concepts=cs) for i, s, cs in c.evidence],
            )
            for c in r.concepts
        ],
        grid_png=r.grid_png,
        image_width=r.width,
        image_height=r.height,
        model_input_box=common_pb2.BoundingBox(x0=x0, y0=y0, x1=x1, y1=y1),
        input_id=r.input_id,
    )


def add_to_server(servicer: CurationServicer, server: grpc.aio.Server) -> list[str]:
    curation_pb2_grpc.add_CurationServiceServicer_to_server(servicer, server)
    return [curation_pb2.DESCRIPTOR.services_by_name["CurationService"].full_name]
