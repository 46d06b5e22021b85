"""Adapters of the curation core's peer ports over the services' gRPC APIs (``firstlight.clients``):
:class:`GrpcPlatform` (ingestion's inputs, search's stored vectors, the blob store) and
:class:`GrpcTraining` (the training service's models, versions, datasets, scores and jobs).

The core is synchronous and runs in worker threads (RPC handlers via ``asyncio.to_thread``, the
Kafka consumers, the round worker); the typed clients are asyncio and belong to the server's
event loop. :class:`Bridge` submits each call to that loop and waits for it in the calling
thread, so there is one set of channels, one retry/deadline policy and one status→error map
(``clients.errors``) for every call curation makes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC
from typing import Any, TypeVar

import numpy as np

from firstlight.blobstore import BlobStore
from firstlight.clients.policy import INTERNAL_POLICY
from firstlight.clients.services import MESSAGE_OPTIONS, IngestionClient, SearchClient, TrainingClient
from firstlight.curation.ports import DeepExplainer, HeadArrays, Job, LabelState, ModelInfo, Row, Scores, StoredImageFacts, VersionInfo
from firstlight.domain.generations import generation_of
from firstlight.errors import FailedPrecondition, NotFound
from firstlight.media.image_metrics import METRICS
from firstlight.runtime.channels import aio_internal_channel
from firstlight.runtime.convert import labeled_proto
from firstlight.v1 import common_pb2, ingestion_pb2, search_pb2, training_pb2

T = TypeVar("T")
PAGE = 1000  # ListInputs page
VECTORS_PER_CALL = 5000  # 5,000 x 1280 float32 = 25 MB, under the 64 MiB message limit
SCORES_PER_CALL = 20_000  # training's ScoreInputs limit
TEST_SPLIT = 3


class Bridge:
    """The asyncio clients, created on the server's loop by :meth:`bind` (``on_start``), called
    from worker threads by :meth:`call`."""

    def __init__(self, ingestion_addr: str, search_addr: str, training_addr: str, start_timeout_s: float = 60.0) -> None:
        self.addrs = (ingestion_addr, search_addr, training_addr)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.start_timeout_s = start_timeout_s
        self.ingestion: IngestionClient
        self.search: SearchClient
        self.training: TrainingClient
        self._channels: list[Any] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Create the channels on the running loop (an asyncio channel belongs to its loop)."""
        channels = [aio_internal_channel(a, options=MESSAGE_OPTIONS) for a in self.addrs]
        self._channels = channels
        # Internal calls: the internal key rides on the channel; the policy retries UNAVAILABLE
        # on the idempotent RPCs (a peer restarting).
        self.ingestion = IngestionClient(channels[0], INTERNAL_POLICY)
        self.search = SearchClient(channels[1], INTERNAL_POLICY)
        self.training = TrainingClient(channels[2], INTERNAL_POLICY)
        self._loop = loop
        self._ready.set()

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        if not self._ready.wait(self.start_timeout_s):
            raise FailedPrecondition("the curation service's peer clients are not started yet")
        assert self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:  # would wait for itself forever: the core runs in threads only
            raise RuntimeError("curation peers called on the event loop thread; use asyncio.to_thread")

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()


class GrpcPlatform:
    """Inputs from ingestion, stored vectors from search, bytes from the blob store."""

    def __init__(self, bridge: Bridge, blobs: BlobStore | None = None) -> None:
        self.bridge = bridge
        self.blobs = blobs

    def _pages(self, app_id: str, flt: common_pb2.InputFilter | None = None) -> list[common_pb2.Input]:
        out: list[common_pb2.Input] = []
        token = ""
        while True:
            req = ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=PAGE, page_token=token, filter=flt)
            resp = self.bridge.call(lambda req=req: self.bridge.ingestion.list_inputs(req))
            out += list(resp.inputs)
            token = resp.next_page_token
            if not token:
                return out

    def inputs(self, app_id: str, *, labeled: bool | None, split: int = 0) -> list[tuple[str, list[str], int]]:
        """(id, concepts, split) of the app's inputs, oldest first."""
        flt = common_pb2.InputFilter(
            labeled=labeled_proto(labeled),
            split=split,  # type: ignore[arg-type]
        )
        return [(i.id, list(i.concepts), int(i.split)) for i in self._pages(app_id, flt)]

    def label_states(self, app_id: str) -> list[LabelState]:
        return [
            LabelState(i.id, tuple(i.concepts), int(i.split), int(i.label_revision), generation_of(i.created_at.ToDatetime(tzinfo=UTC)))
            for i in self._pages(app_id)
        ]

    def metadata_values(self, app_id: str, key: str) -> dict[str, str]:
        """Input id → the value of metadata ``key``, for the app's inputs that have it."""
        return {i.id: i.metadata[key] for i in self._pages(app_id) if key in i.metadata}

    def labels_of(self, app_id: str, input_ids: Sequence[str]) -> dict[str, list[str]]:
        """Input id → its concepts, for the inputs that exist (unknown ones are left out)."""
        out: dict[str, list[str]] = {}
        for input_id in input_ids:
            req = ingestion_pb2.GetInputRequest(app_id=app_id, input_id=input_id)
            try:
                out[input_id] = list(self.bridge.call(lambda req=req: self.bridge.ingestion.get_input(req)).concepts)
            except NotFound:
                continue
        return out

    def delete_inputs(self, app_id: str, input_ids: Sequence[str]) -> int:
        req = ingestion_pb2.DeleteInputsRequest(app_id=app_id, input_ids=list(input_ids))
        return int(self.bridge.call(lambda: self.bridge.ingestion.delete_inputs(req)).deleted_count)

    def vectors(self, app_id: str, input_ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        ids = list(input_ids)
        for start in range(0, len(ids), VECTORS_PER_CALL):
            req = search_pb2.GetVectorsRequest(app_id=app_id, input_ids=ids[start : start + VECTORS_PER_CALL])
            resp = self.bridge.call(lambda req=req: self.bridge.search.get_vectors(req))
            out.update({v.input_id: np.asarray(v.vector, dtype=np.float32) for v in resp.vectors})
        return out

    def index_state(self, app_id: str) -> tuple[int, str]:
        req = search_pb2.GetIndexStatsRequest(app_id=app_id)
        stats = self.bridge.call(lambda: self.bridge.search.get_index_stats(req))
        return int(stats.indexed_count), stats.model

    def current_labels(self, app_id: str, input_ids: Sequence[str]) -> dict[str, tuple[list[str], int]]:
        out: dict[str, tuple[list[str], int]] = {}
        ids = list(input_ids)
        for start in range(0, len(ids), PAGE):
            chunk = ids[start : start + PAGE]
            req = ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=len(chunk), input_ids=chunk)
            for i in self.bridge.call(lambda req=req: self.bridge.ingestion.list_inputs(req)).inputs:
                out[i.id] = (list(i.concepts), int(i.split))
        return out

    def metadata_of(self, app_id: str, input_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Input id → its metadata (one ListInputs per 1,000 ids); inputs not in the app are left out."""
        out: dict[str, dict[str, str]] = {}
        ids = list(input_ids)
        for start in range(0, len(ids), PAGE):
            chunk = ids[start : start + PAGE]
            req = ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=len(chunk), input_ids=chunk)
            for i in self.bridge.call(lambda req=req: self.bridge.ingestion.list_inputs(req)).inputs:
                out[i.id] = dict(i.metadata)
        return out

    def stored_image_facts(self, app_id: str, input_ids: Sequence[str]) -> dict[str, StoredImageFacts]:
        """Input id → the content hash, quality metrics and pixel signatures ingestion stored
        with it (one ListInputs per 1,000 ids); inputs not in the app are left out."""
        out: dict[str, StoredImageFacts] = {}
        ids = list(input_ids)
        for start in range(0, len(ids), PAGE):
            chunk = ids[start : start + PAGE]
            req = ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=len(chunk), input_ids=chunk, with_pixel_signature=True)
            for i in self.bridge.call(lambda req=req: self.bridge.ingestion.list_inputs(req)).inputs:
                out[i.id] = StoredImageFacts(i.sha256, quality_of(i.quality) if i.HasField("quality") else None, i.pixel_signature)
        return out

    def blobs_of(self, app_id: str, input_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored bytes of inputs (the image-quality checks); inputs whose blob is gone are
        left out."""
        if self.blobs is None:
            raise FailedPrecondition("image checks need FIRSTLIGHT_BLOB_URL on the curation service")
        out: dict[str, bytes] = {}
        for input_id in input_ids:
            req = ingestion_pb2.GetInputRequest(app_id=app_id, input_id=input_id)
            uri = self.bridge.call(lambda req=req: self.bridge.ingestion.get_input(req)).blob_uri
            try:
                out[input_id] = self.blobs.get(uri, app_id=app_id)
            except (OSError, KeyError):
                continue
        return out


def quality_of(q: common_pb2.ImageQuality) -> dict[str, float]:
    """An ImageQuality message as ImageQuality.to_dict() has it."""
    return {k: float(getattr(q, k)) for k in METRICS}


class GrpcTraining:
    """The training service's API, in the core's types."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def _versions(self, app_id: str, model_id: str) -> training_pb2.ListModelVersionsResponse:
        req = training_pb2.ListModelVersionsRequest(app_id=app_id, model_id=model_id)
        return self.bridge.call(lambda req=req: self.bridge.training.list_model_versions(req))

    def model(self, app_id: str, model_id: str) -> ModelInfo:
        m = self._versions(app_id, model_id).model
        return ModelInfo(m.app_id, m.id, m.template, list(m.concepts), m.serving_version)

    def version(self, app_id: str, model_id: str, version: str) -> VersionInfo | None:
        for v in self._versions(app_id, model_id).versions:
            if v.version == str(version):
                return VersionInfo(v.version, v.dataset_id, v.dataset_version, dict(v.validation_metrics), v.promotion_note)
        return None

    def latest_dataset_version(self, app_id: str, dataset_id: str) -> str | None:
        req = training_pb2.GetDatasetRequest(app_id=app_id, dataset_id=dataset_id)
        try:
            return self.bridge.call(lambda req=req: self.bridge.training.get_dataset(req)).version
        except NotFound:
            return None

    def dataset_rows(self, app_id: str, dataset_id: str, version: str) -> list[Row]:
        req = training_pb2.ListDatasetRowsRequest(app_id=app_id, dataset_id=dataset_id, version=version)
        try:
            resp = self.bridge.call(lambda req=req: self.bridge.training.list_dataset_rows(req))
        except NotFound:
            return []
        return [Row(r.input_id, list(r.concepts), int(r.split)) for r in resp.rows]

    def scores(self, app_id: str, model_id: str, version: str, input_ids: Sequence[str]) -> Scores:
        ids = list(input_ids)
        kept: list[str] = []
        parts: list[np.ndarray] = []
        concepts: list[str] = []
        for start in range(0, max(len(ids), 1), SCORES_PER_CALL):
            req = training_pb2.ScoreInputsRequest(app_id=app_id, model_id=model_id, version=version, input_ids=ids[start : start + SCORES_PER_CALL])
            resp = self.bridge.call(lambda req=req: self.bridge.training.score_inputs(req))
            concepts, version = list(resp.concepts), resp.version
            kept += list(resp.input_ids)
            parts.append(np.asarray(resp.probabilities, dtype=np.float32).reshape(len(resp.input_ids), len(resp.concepts)))
        return Scores(version, concepts, kept, np.concatenate(parts) if parts else np.zeros((0, len(concepts)), np.float32))

    def stored_test_metrics(self, app_id: str, model_id: str, version: str) -> dict[str, float]:
        req = training_pb2.EvaluateModelVersionRequest(app_id=app_id, model_id=model_id, version=version, split=TEST_SPLIT, stored_only=True)  # type: ignore[arg-type]
        try:
            return dict(self.bridge.call(lambda req=req: self.bridge.training.evaluate_model_version(req)).metrics)
        except NotFound:
            return {}

    def head(self, app_id: str, model_id: str, version: str) -> HeadArrays:
        req = training_pb2.GetHeadWeightsRequest(app_id=app_id, model_id=model_id, version=version)
        h = self.bridge.call(lambda req=req: self.bridge.training.get_head_weights(req))
        W = np.asarray(h.weights, dtype=np.float32).reshape(len(h.concepts), h.dim)
        return HeadArrays(h.version, h.template, list(h.concepts), W, np.asarray(h.bias, dtype=np.float32), h.activation, h.normalize, h.embedding_model)

    def deep_explainer(self, app_id: str, model_id: str, version: str) -> DeepExplainer:
        req = training_pb2.GetHeadWeightsRequest(app_id=app_id, model_id=model_id, version=version)
        d = self.bridge.call(lambda req=req: self.bridge.training.get_deep_explainer(req))
        return DeepExplainer(d.version, d.template, list(d.concepts), d.activation, int(d.image_size), bytes(d.torchscript))

    def extend_dataset(self, app_id: str, dataset_id: str) -> str:
        req = training_pb2.ExtendDatasetRequest(app_id=app_id, dataset_id=dataset_id)
        return self.bridge.call(lambda req=req: self.bridge.training.extend_dataset(req)).version

    def train(self, app_id: str, model_id: str, dataset_id: str, promotion: tuple[str, float]) -> Job:
        req = training_pb2.TrainModelRequest(
            app_id=app_id, model_id=model_id, dataset_id=dataset_id, promotion_metric=promotion[0], promotion_min_gain=promotion[1]
        )
        return _job(self.bridge.call(lambda req=req: self.bridge.training.train_model(req)))

    def job(self, app_id: str, job_id: str) -> Job:
        req = training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id)
        return _job(self.bridge.call(lambda req=req: self.bridge.training.get_training_job(req)))


def _job(j: training_pb2.TrainingJob) -> Job:
    return Job(j.id, int(j.state), j.version, j.error)
