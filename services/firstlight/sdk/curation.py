"""Active learning, label errors, drift, data health and the stream policy (CurationService)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from firstlight.sdk.base import ServiceCalls
from firstlight.sdk.errors import wrap_errors
from firstlight.sdk.items import SPLITS
from firstlight.v1 import curation_pb2


class CurationCalls(ServiceCalls):
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
        self, app_id: str, model_id: str, *, version: str = "", split: str = "validation", min_size: int = 20, limit: int = 20
    ) -> curation_pb2.WorstSlicesResponse:
        """Where a model version does worst on a split (per concept, embedding cluster, quality
        quartile), with Wilson intervals, worst first."""
        return self._curation().GetWorstSlices(
            curation_pb2.WorstSlicesRequest(app_id=app_id, model_id=model_id, model_version=version, split=split, min_size=min_size, limit=limit),
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
        overlay per concept. Heads on the built-in backbone (transfer, one-shot)."""
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
        token = ""
        while True:
            page = self.labeling_queue(app_id, state=state, page_size=page_size, page_token=token)
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    @wrap_errors
    def learning_rounds(self, app_id: str) -> list[curation_pb2.LearningRound]:
        """Active-learning rounds, newest first."""
        request = curation_pb2.ListLearningRoundsRequest(app_id=app_id)
        return list(self._curation().ListLearningRounds(request, timeout=self._deadline("ListLearningRounds")).rounds)
