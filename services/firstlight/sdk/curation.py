"""Active learning, label errors, drift, data health and the stream policy (CurationService)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from firstlight.sdk.base import ServiceCalls, pages
from firstlight.sdk.errors import wrap_errors
from firstlight.sdk.items import SPLITS
from firstlight.v1 import curation_pb2

MAP_COLOURS = ("concept", "split", "prediction")
_SPLIT_NAMES = {0: "", 1: "train", 2: "validation", 3: "test"}


def map_label(p: curation_pb2.EmbeddingMapPoint, color_by: str) -> str:
    """A point's colour label: its single concept ("" if none or several), its split name, or
    its predicted concept ("" if none)."""
    if color_by == "concept":
        return p.concepts[0] if len(p.concepts) == 1 else ""
    if color_by == "split":
        return _SPLIT_NAMES.get(int(p.split), "")
    return p.predicted_concept


class CurationCalls(ServiceCalls):
    @wrap_errors
    def start_embedding_map(self, app_id: str, *, method: str = "pca", force: bool = False) -> curation_pb2.EmbeddingMapJob:
        """Start (or join, or reuse the cached) 2-D map of the app's embeddings on the server."""
        return self._curation().StartEmbeddingMap(
            curation_pb2.StartEmbeddingMapRequest(app_id=app_id, method=method, force=force), timeout=self._deadline("StartEmbeddingMap")
        )

    @wrap_errors
    def embedding_map_job(self, app_id: str, job_id: str) -> curation_pb2.EmbeddingMapJob:
        return self._curation().GetEmbeddingMapJob(
            curation_pb2.GetEmbeddingMapJobRequest(app_id=app_id, job_id=job_id), timeout=self._deadline("GetEmbeddingMapJob")
        )

    @wrap_errors
    def embedding_map_points(
        self,
        app_id: str,
        *,
        method: str = "pca",
        dataset_id: str = "",
        dataset_version: str = "",
        model_id: str = "",
        model_version: str = "",
        page_size: int = 5000,
    ) -> Iterator[curation_pb2.EmbeddingMapPoint]:
        """Every point of the app's cached map, page by page (input-id order)."""

        def fetch(token: str) -> curation_pb2.ListEmbeddingMapPointsResponse:
            req = curation_pb2.ListEmbeddingMapPointsRequest(
                app_id=app_id,
                method=method,
                page_size=page_size,
                page_token=token,
                dataset_id=dataset_id,
                dataset_version=dataset_version,
                model_id=model_id,
                model_version=model_version,
            )
            return self._curation().ListEmbeddingMapPoints(req, timeout=self._deadline("ListEmbeddingMapPoints"))

        for page in pages(fetch):
            yield from page.points

    def embedding_map(
        self,
        app_id: str,
        *,
        method: str = "pca",
        color_by: str = "concept",
        model_id: str = "",
        model_version: str = "",
        dataset_id: str = "",
        dataset_version: str = "",
        force: bool = False,
        timeout_s: float = 1800.0,
        poll_s: float = 0.5,
    ) -> tuple[list[str], np.ndarray, list[str]]:
        """(input ids, [N, 2] coordinates in [-1, 1], one label per point) of the app's map,
        computed by the curation service (cached there until the app's inputs change) and
        labeled by ``concept`` (its single concept, "" otherwise), ``split`` (in
        ``dataset_id``'s version if given) or ``prediction`` (``model_id``'s predicted concept)."""
        if color_by not in MAP_COLOURS:
            raise ValueError(f"color_by must be one of {', '.join(MAP_COLOURS)}, got {color_by!r}")
        if color_by == "prediction" and not model_id:
            raise ValueError("color_by prediction needs model_id")
        job = self.start_embedding_map(app_id, method=method, force=force)
        deadline = time.monotonic() + timeout_s
        while job.state == "running":
            if time.monotonic() > deadline:
                raise TimeoutError(f"the map of {app_id!r} is still {job.stage} after {timeout_s:.0f} s (job {job.id})")
            time.sleep(poll_s)
            job = self.embedding_map_job(app_id, job.id)
        if job.state != "succeeded":
            raise RuntimeError(f"the map of {app_id!r} failed: {job.error}")
        pts = list(
            self.embedding_map_points(
                app_id,
                method=method,
                dataset_id=dataset_id,
                dataset_version=dataset_version,
                model_id=model_id if color_by == "prediction" else "",
                model_version=model_version if color_by == "prediction" else "",
            )
        )
        coords = np.asarray([(p.x, p.y) for p in pts], np.float32).reshape(len(pts), 2)
        return [p.input_id for p in pts], coords, [map_label(p, color_by) for p in pts]

    @wrap_errors
    def suggest(
        self, app_id: str, model_id: str, *, batch_size: int = 50, strategy: str = "", version: str = "", seed: int = 0, record_round: bool = False
    ) -> curation_pb2.SuggestInputsResponse:
        """Unlabeled inputs worth labeling next, best first (active learning). ``record_round``
        logs the call as a round of the experiment record (see :meth:`learning_rounds`)."""
        return self._curation().SuggestInputsForLabeling(
            curation_pb2.SuggestInputsRequest(
                app_id=app_id, model_id=model_id, model_version=version, strategy=strategy, batch_size=batch_size, seed=seed, record_round=record_round
            ),
            timeout=self._deadline("SuggestInputsForLabeling"),
        )

    @wrap_errors
    def health_check(
        self,
        app_id: str,
        *,
        dataset_id: str = "",
        dataset_version: str = "",
        images: bool = True,
        near_duplicate_threshold: float = 0.0,
        max_examples: int = 20,
        group_key: str = "",
        timeout_s: float = 600.0,
    ) -> curation_pb2.HealthCheckResponse:
        """Data health report (pass / warn / fail per check: duplicates, leaks, tiny concepts,
        imbalance, outliers, blank or corrupt images) of the app's inputs or of a dataset version."""
        return self._curation().RunHealthCheck(
            curation_pb2.HealthCheckRequest(
                app_id=app_id,
                dataset_id=dataset_id,
                dataset_version=dataset_version,
                images=images,
                near_duplicate_threshold=near_duplicate_threshold,
                max_examples=max_examples,
                group_key=group_key,
            ),
            timeout=timeout_s,  # the first check of an app reads and decodes every image
        )

    @wrap_errors
    def keep_one(
        self, app_id: str, keep: str, drop: Iterable[str], *, near_duplicate_threshold: float = 0.0, timeout_s: float = 300.0
    ) -> curation_pb2.KeepOneResponse:
        """Keep ``keep`` and delete its duplicates ``drop``. The service checks again that each is
        a duplicate of ``keep`` and carries no label ``keep`` lacks, and deletes nothing otherwise
        (FAILED_PRECONDITION naming them)."""
        return self._curation().KeepOneDuplicate(
            curation_pb2.KeepOneRequest(app_id=app_id, keep=keep, drop=list(drop), near_duplicate_threshold=near_duplicate_threshold),
            timeout=timeout_s,  # reads the group's images unless a health check already did
        )

    @wrap_errors
    def worst_slices(
        self,
        app_id: str,
        model_id: str,
        *,
        version: str = "",
        split: str = "validation",
        min_size: int = 20,
        limit: int = 20,
        rank_by: str = "",
        metadata_keys: Iterable[str] = (),
    ) -> curation_pb2.WorstSlicesResponse:
        """Where a model version does worst on a split (per concept, embedding cluster, input
        metadata value, quality quartile), worst first: accuracy, F1 and Brier score each with a
        95% interval, ranked by ``rank_by`` (``brier`` by default, ``accuracy`` or ``f1``)
        through the pessimistic gap. ``metadata_keys``: the metadata keys to slice by (at most
        8); none: the service chooses the categorical ones, listed in the reply's
        ``metadata_keys``."""
        return self._curation().GetWorstSlices(
            curation_pb2.WorstSlicesRequest(
                app_id=app_id,
                model_id=model_id,
                model_version=version,
                split=split,
                min_size=min_size,
                limit=limit,
                rank_by=rank_by,
                metadata_keys=list(metadata_keys),
            ),
            timeout=self._deadline("GetWorstSlices"),
        )

    @wrap_errors
    def explain(
        self,
        app_id: str,
        model_id: str,
        *,
        input_id: str = "",
        image: bytes | str | Path = b"",
        version: str = "",
        top_k: int = 3,
        evidence: int = 6,
        method: str = "",
    ) -> curation_pb2.ExplainPredictionResponse:
        """Why a model version predicts what it does on one stored input (``input_id``) or image
        (``image``: bytes or a file path): per top concept its score, a saliency overlay PNG on the
        image, the raw map, and its nearest labeled training examples; ``grid_png``: image | map |
        overlay per concept. Heads on the built-in backbone (transfer, one-shot) and deep classifier
        versions (visual_classifier: the map on the network's own last feature map)."""
        data = Path(image).read_bytes() if isinstance(image, str | Path) and image else image
        req = curation_pb2.ExplainPredictionRequest(
            app_id=app_id, model_id=model_id, model_version=version, top_k=top_k, evidence_count=evidence, method=method
        )
        if input_id:
            req.input_id = input_id
        if data:
            req.image_bytes = bytes(data)
        return self._curation().ExplainPrediction(req, timeout=self._deadline("ExplainPrediction"))

    @wrap_errors
    def uniqueness(
        self,
        app_id: str,
        *,
        scope: str = "app",
        order: str = "unusual",
        concept: str = "",
        page_size: int = 100,
        page_token: str = "",
        per_concept: int = 0,
    ) -> curation_pb2.ScoreUniquenessResponse:
        """One page of the app's indexed inputs by uniqueness: ``scope="app"`` their mean cosine
        distance to the 50 nearest inputs of the app, ``"concept"`` to the 10 nearest of their
        concept; ``order="unusual"`` highest first, ``"typical"`` lowest; ``concept`` lists only
        its inputs. ``per_concept``: the most representative inputs of each concept (first page)."""
        req = curation_pb2.ScoreUniquenessRequest(
            app_id=app_id, scope=scope, order=order, concept=concept, page_size=page_size, page_token=page_token, per_concept=per_concept
        )
        return self._curation().ScoreUniqueness(req, timeout=self._deadline("ScoreUniqueness"))

    @wrap_errors
    def label_errors(self, app_id: str, *, concepts: Iterable[str] = (), folds: int = 5, max_results: int = 100) -> curation_pb2.FindLabelErrorsResponse:
        return self._curation().FindLabelErrors(
            curation_pb2.FindLabelErrorsRequest(app_id=app_id, concepts=list(concepts), folds=folds, max_results=max_results),
            timeout=self._deadline("FindLabelErrors"),
        )

    @wrap_errors
    def drift(
        self, app_id: str, *, recent_input_ids: Iterable[str] = (), recent_count: int = 200, reference_split: str = "train", stream: bool = False
    ) -> curation_pb2.DriftReport:
        """Drift of stored inputs against a split, or (``stream=True``) of the policy model's recent
        predictions against its serving version's training split."""
        return self._curation().GetDriftReport(
            curation_pb2.GetDriftReportRequest(
                app_id=app_id,
                reference_split=SPLITS[reference_split],
                recent_count=recent_count,
                recent_input_ids=list(recent_input_ids),
                stream=stream,
            ),
            timeout=self._deadline("GetDriftReport"),
        )

    @wrap_errors
    def set_policy(self, app_id: str, model_id: str, **fields: Any) -> curation_pb2.CurationPolicy:
        """Stream policy: ``strategy``, ``threshold``, ``max_per_minute``, ``budget``,
        ``retrain_after_labels``, ``dataset_id``, ``promotion_metric``, ``promotion_min_gain``,
        ``drift_window`` (see CurationPolicy in curation.proto; unset = default)."""
        policy = curation_pb2.CurationPolicy(app_id=app_id, model_id=model_id, **fields)
        return self._curation().SetCurationPolicy(policy, timeout=self._deadline("SetCurationPolicy"))

    @wrap_errors
    def get_policy(self, app_id: str) -> curation_pb2.CurationPolicy:
        request = curation_pb2.GetCurationPolicyRequest(app_id=app_id)
        return self._curation().GetCurationPolicy(request, timeout=self._deadline("GetCurationPolicy"))

    @wrap_errors
    def labeling_queue(self, app_id: str, *, state: str = "all", page_size: int = 100, page_token: str = "") -> curation_pb2.ListLabelingQueueResponse:
        """One page of the labeling queue (oldest first) with the app's counters;
        ``state``: all, queued or labeled."""
        states = {
            "all": curation_pb2.QUEUE_ITEM_STATE_UNSPECIFIED,
            "queued": curation_pb2.QUEUE_ITEM_STATE_QUEUED,
            "labeled": curation_pb2.QUEUE_ITEM_STATE_LABELED,
        }
        if state not in states:
            raise ValueError(f"state must be one of {', '.join(states)}")
        return self._curation().ListLabelingQueue(
            curation_pb2.ListLabelingQueueRequest(app_id=app_id, state=states[state], page_size=page_size, page_token=page_token),
            timeout=self._deadline("ListLabelingQueue"),
        )

    def queue_items(self, app_id: str, *, state: str = "all", page_size: int = 100) -> Iterator[curation_pb2.QueueItem]:
        """Every queue item, following the pages."""
        for page in pages(lambda token: self.labeling_queue(app_id, state=state, page_size=page_size, page_token=token)):
            yield from page.items

    @wrap_errors
    def learning_rounds(self, app_id: str) -> list[curation_pb2.LearningRound]:
        """Active-learning rounds, newest first."""
        request = curation_pb2.ListLearningRoundsRequest(app_id=app_id)
        return list(self._curation().ListLearningRounds(request, timeout=self._deadline("ListLearningRounds")).rounds)
