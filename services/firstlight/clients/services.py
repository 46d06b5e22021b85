"""Typed asyncio clients, one per service, over the generated stubs.

A method per RPC: it takes the request message (and the caller's ``key``), applies the deadline
and retry policy of :mod:`firstlight.clients.policy`, and raises :mod:`firstlight.errors` types
mapped by :func:`firstlight.clients.errors.from_rpc_error`. No other logic lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from firstlight.clients.errors import from_rpc_error
from firstlight.clients.policy import DEFAULT_POLICY, IDEMPOTENT_RPCS, INTERNAL_POLICY, RetryPolicy, deadline_for
from firstlight.runtime.channels import aio_client_channel, aio_internal_channel, auth_metadata
from firstlight.runtime.retry import CHANNEL_OPTIONS
from firstlight.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    curation_pb2,
    curation_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
    video_pb2,
)

#: Messages up to 64 MiB each way (the services' own default limit).
MESSAGE_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    *CHANNEL_OPTIONS,
]


@dataclass(frozen=True)
class Addresses:
    """Where the services listen (curation is a service of its own, on its own port)."""

    ingestion: str
    search: str
    inference: str
    training: str
    curation: str

    @classmethod
    def from_mapping(cls, addrs: dict[str, str]) -> Addresses:
        """From a stack.json-like mapping (``firstlight.stack.LocalStack.addresses``)."""
        return cls(addrs["ingestion"], addrs["search"], addrs["inference"], addrs["training"], addrs["curation"])


class _Service:
    stub_class: Any = None

    def __init__(self, channel: grpc.aio.Channel | Callable[[], grpc.aio.Channel], policy: RetryPolicy, default_key: str = "") -> None:
        # A factory makes the channel on the first call (an aio channel belongs to the event loop
        # running when it is made; a service wires its peers before its loop runs).
        self._channel_factory = channel if callable(channel) and not isinstance(channel, grpc.aio.Channel) else None
        self._own_channel: grpc.aio.Channel | None = None
        self._stub: Any = None if self._channel_factory else self.stub_class(channel)
        self._policy = policy
        self._default_key = default_key

    def _stub_now(self) -> Any:
        if self._stub is None:
            assert self._channel_factory is not None
            self._own_channel = self._channel_factory()
            self._stub = self.stub_class(self._own_channel)
        return self._stub

    async def close(self) -> None:
        """Close the channel this client made itself (a shared one is closed by its owner)."""
        if getattr(self, "_own_channel", None) is not None:
            await self._own_channel.close()  # type: ignore[union-attr]
            self._own_channel, self._stub = None, None

    def _metadata(self, key: str | None) -> tuple[tuple[str, str], ...]:
        return auth_metadata(self._default_key if key is None else key)

    async def _unary(self, rpc: str, request: Any, key: str | None, timeout: float | None = None) -> Any:
        method = getattr(self._stub_now(), rpc)
        metadata = self._metadata(key)
        deadline = timeout or deadline_for(rpc)

        async def once() -> Any:
            return await method(request, timeout=deadline, metadata=metadata)

        try:
            if rpc in IDEMPOTENT_RPCS:
                return await self._policy.acall(once)
            return await once()
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def _stream_out(self, rpc: str, request: Any, key: str | None, timeout: float | None = None) -> AsyncIterator[Any]:
        call = getattr(self._stub_now(), rpc)(request, timeout=timeout or deadline_for(rpc), metadata=self._metadata(key))
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def _stream_in(self, rpc: str, requests: Iterable[Any] | AsyncIterable[Any], key: str | None, timeout: float | None = None) -> Any:
        sent = _Requests(requests)
        try:
            return await getattr(self._stub_now(), rpc)(sent.each(), timeout=timeout or deadline_for(rpc), metadata=self._metadata(key))
        except grpc.aio.AioRpcError as exc:
            sent.reraise()
            raise from_rpc_error(exc) from None
        except asyncio.CancelledError:
            sent.reraise()
            raise

    async def _stream_both(self, rpc: str, requests: Iterable[Any] | AsyncIterable[Any], key: str | None, timeout: float | None = None) -> AsyncIterator[Any]:
        sent = _Requests(requests)
        call = getattr(self._stub_now(), rpc)(sent.each(), timeout=timeout or deadline_for(rpc), metadata=self._metadata(key))
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            sent.reraise()
            raise from_rpc_error(exc) from None
        except asyncio.CancelledError:
            sent.reraise()
            raise
        finally:
            call.cancel()


class _Requests:
    """The caller's request stream (sync or async). grpc cancels the call when that stream
    raises (a body over its limit, a malformed upload) and reports only the cancellation: the
    caller's own exception is kept here and re-raised in its place."""

    def __init__(self, requests: Iterable[Any] | AsyncIterable[Any]) -> None:
        self.requests = requests
        self.error: BaseException | None = None

    async def each(self) -> AsyncIterator[Any]:
        try:
            if isinstance(self.requests, AsyncIterable):
                async for r in self.requests:
                    yield r
            else:
                for r in self.requests:
                    yield r
        except Exception as exc:
            self.error = exc
            raise

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


class IngestionClient(_Service):
    stub_class = ingestion_pb2_grpc.IngestionServiceStub

    async def create_app(self, req: ingestion_pb2.CreateAppRequest, *, key: str | None = None) -> common_pb2.App:
        return await self._unary("CreateApp", req, key)

    async def get_app(self, req: ingestion_pb2.GetAppRequest, *, key: str | None = None) -> common_pb2.App:
        return await self._unary("GetApp", req, key)

    async def post_inputs(self, req: ingestion_pb2.PostInputsRequest, *, key: str | None = None) -> ingestion_pb2.PostInputsResponse:
        return await self._unary("PostInputs", req, key)

    async def stream_inputs(self, reqs: Iterable[ingestion_pb2.StreamInputsRequest], *, key: str | None = None) -> ingestion_pb2.StreamInputsResponse:
        return await self._stream_in("StreamInputs", reqs, key)

    async def get_input(self, req: ingestion_pb2.GetInputRequest, *, key: str | None = None) -> common_pb2.Input:
        return await self._unary("GetInput", req, key)

    async def list_inputs(self, req: ingestion_pb2.ListInputsRequest, *, key: str | None = None) -> ingestion_pb2.ListInputsResponse:
        return await self._unary("ListInputs", req, key)

    async def delete_inputs(self, req: ingestion_pb2.DeleteInputsRequest, *, key: str | None = None) -> ingestion_pb2.DeleteInputsResponse:
        return await self._unary("DeleteInputs", req, key)

    async def post_annotations(self, req: ingestion_pb2.PostAnnotationsRequest, *, key: str | None = None) -> ingestion_pb2.PostAnnotationsResponse:
        return await self._unary("PostAnnotations", req, key)

    async def list_concepts(self, req: ingestion_pb2.ListConceptsRequest, *, key: str | None = None) -> ingestion_pb2.ListConceptsResponse:
        return await self._unary("ListConcepts", req, key)

    async def get_quality_histogram(
        self, req: ingestion_pb2.GetQualityHistogramRequest, *, key: str | None = None
    ) -> ingestion_pb2.GetQualityHistogramResponse:
        return await self._unary("GetQualityHistogram", req, key)

    async def bulk_annotate(self, req: ingestion_pb2.BulkAnnotateRequest, *, key: str | None = None) -> ingestion_pb2.BulkAnnotateResponse:
        return await self._unary("BulkAnnotate", req, key)

    async def set_embedding_model(self, req: ingestion_pb2.SetEmbeddingModelRequest, *, key: str | None = None) -> ingestion_pb2.SetEmbeddingModelResponse:
        return await self._unary("SetEmbeddingModel", req, key)

    async def reembed_inputs(self, req: ingestion_pb2.ReembedInputsRequest, *, key: str | None = None) -> ingestion_pb2.ReembedInputsResponse:
        return await self._unary("ReembedInputs", req, key)

    async def get_indexing_backlog(self, req: ingestion_pb2.GetIndexingBacklogRequest, *, key: str | None = None) -> ingestion_pb2.IndexingBacklog:
        return await self._unary("GetIndexingBacklog", req, key)

    async def upload_video(
        self, reqs: Iterable[video_pb2.UploadVideoRequest] | AsyncIterable[video_pb2.UploadVideoRequest], *, key: str | None = None
    ) -> video_pb2.UploadVideoResponse:
        """A header, then the file in chunks; an exception the stream raises is raised here."""
        return await self._stream_in("UploadVideo", reqs, key)

    async def get_video_upload(self, req: video_pb2.GetVideoUploadRequest, *, key: str | None = None) -> video_pb2.VideoUploadStatus:
        return await self._unary("GetVideoUpload", req, key)

    async def annotate_video_segment(self, req: video_pb2.AnnotateVideoSegmentRequest, *, key: str | None = None) -> video_pb2.AnnotateVideoSegmentResponse:
        return await self._unary("AnnotateVideoSegment", req, key)


class AuthClient(_Service):
    """API keys (served by the ingestion process)."""

    stub_class = auth_pb2_grpc.AuthServiceStub

    async def create_api_key(self, req: auth_pb2.CreateApiKeyRequest, *, key: str | None = None) -> auth_pb2.CreateApiKeyResponse:
        return await self._unary("CreateApiKey", req, key)

    async def list_api_keys(self, req: auth_pb2.ListApiKeysRequest, *, key: str | None = None) -> auth_pb2.ListApiKeysResponse:
        return await self._unary("ListApiKeys", req, key)

    async def revoke_api_key(self, req: auth_pb2.RevokeApiKeyRequest, *, key: str | None = None) -> auth_pb2.ApiKey:
        return await self._unary("RevokeApiKey", req, key)

    async def resolve_api_key(self, req: auth_pb2.ResolveApiKeyRequest, *, key: str | None = None) -> auth_pb2.ResolveApiKeyResponse:
        """For the services' interceptors (internal key). Sent once: a caller waiting on it
        would rather fall back on its cache than wait out retries."""
        return await self._unary("ResolveApiKey", req, key)


class SearchClient(_Service):
    stub_class = search_pb2_grpc.SearchServiceStub

    async def search_by_image(self, req: search_pb2.SearchByImageRequest, *, key: str | None = None) -> search_pb2.SearchResponse:
        return await self._unary("SearchByImage", req, key)

    async def search_by_text(self, req: search_pb2.SearchByTextRequest, *, key: str | None = None) -> search_pb2.SearchResponse:
        return await self._unary("SearchByText", req, key)

    async def get_index_stats(self, req: search_pb2.GetIndexStatsRequest, *, key: str | None = None) -> search_pb2.IndexStats:
        return await self._unary("GetIndexStats", req, key)

    async def get_vectors(self, req: search_pb2.GetVectorsRequest, *, key: str | None = None) -> search_pb2.GetVectorsResponse:
        return await self._unary("GetVectors", req, key)


class InferenceClient(_Service):
    stub_class = inference_pb2_grpc.InferenceServiceStub

    async def predict(self, req: inference_pb2.PredictRequest, *, key: str | None = None) -> inference_pb2.PredictResponse:
        return await self._unary("Predict", req, key)

    async def list_models(self, req: inference_pb2.ListModelsRequest, *, key: str | None = None) -> inference_pb2.ListModelsResponse:
        return await self._unary("ListModels", req, key)

    async def predict_workflow(self, req: inference_pb2.PredictWorkflowRequest, *, key: str | None = None) -> inference_pb2.PredictWorkflowResponse:
        return await self._unary("PredictWorkflow", req, key)

    def predict_video(
        self, reqs: Iterable[inference_pb2.PredictVideoRequest] | AsyncIterable[inference_pb2.PredictVideoRequest], *, key: str | None = None
    ) -> AsyncIterator[inference_pb2.PredictVideoResponse]:
        """A header, then the file in chunks; results come back as the video decodes."""
        return self._stream_both("PredictVideo", reqs, key)


class TrainingClient(_Service):
    stub_class = training_pb2_grpc.TrainingServiceStub

    async def create_dataset(self, req: training_pb2.CreateDatasetRequest, *, key: str | None = None) -> training_pb2.Dataset:
        return await self._unary("CreateDataset", req, key)

    async def get_dataset(self, req: training_pb2.GetDatasetRequest, *, key: str | None = None) -> training_pb2.Dataset:
        return await self._unary("GetDataset", req, key)

    async def create_model(self, req: training_pb2.CreateModelRequest, *, key: str | None = None) -> training_pb2.Model:
        return await self._unary("CreateModel", req, key)

    async def train_model(self, req: training_pb2.TrainModelRequest, *, key: str | None = None) -> training_pb2.TrainingJob:
        return await self._unary("TrainModel", req, key)

    async def get_training_job(self, req: training_pb2.GetTrainingJobRequest, *, key: str | None = None) -> training_pb2.TrainingJob:
        return await self._unary("GetTrainingJob", req, key)

    def stream_training_progress(self, req: training_pb2.GetTrainingJobRequest, *, key: str | None = None) -> AsyncIterator[training_pb2.TrainingProgress]:
        return self._stream_out("StreamTrainingProgress", req, key)

    async def list_model_versions(self, req: training_pb2.ListModelVersionsRequest, *, key: str | None = None) -> training_pb2.ListModelVersionsResponse:
        return await self._unary("ListModelVersions", req, key)

    async def evaluate_model_version(self, req: training_pb2.EvaluateModelVersionRequest, *, key: str | None = None) -> training_pb2.Evaluation:
        return await self._unary("EvaluateModelVersion", req, key)

    async def compare_model_versions(self, req: training_pb2.CompareModelVersionsRequest, *, key: str | None = None) -> training_pb2.Comparison:
        return await self._unary("CompareModelVersions", req, key)

    async def promote_model_version(self, req: training_pb2.PromoteModelVersionRequest, *, key: str | None = None) -> training_pb2.PromoteModelVersionResponse:
        return await self._unary("PromoteModelVersion", req, key)

    async def cancel_training_job(self, req: training_pb2.GetTrainingJobRequest, *, key: str | None = None) -> training_pb2.TrainingJob:
        return await self._unary("CancelTrainingJob", req, key)

    async def extend_dataset(self, req: training_pb2.ExtendDatasetRequest, *, key: str | None = None) -> training_pb2.Dataset:
        return await self._unary("ExtendDataset", req, key)

    async def list_dataset_rows(self, req: training_pb2.ListDatasetRowsRequest, *, key: str | None = None) -> training_pb2.ListDatasetRowsResponse:
        return await self._unary("ListDatasetRows", req, key)

    async def score_inputs(self, req: training_pb2.ScoreInputsRequest, *, key: str | None = None) -> training_pb2.ScoreInputsResponse:
        return await self._unary("ScoreInputs", req, key)

    async def get_head_weights(self, req: training_pb2.GetHeadWeightsRequest, *, key: str | None = None) -> training_pb2.HeadWeights:
        return await self._unary("GetHeadWeights", req, key)

    async def get_deep_explainer(self, req: training_pb2.GetHeadWeightsRequest, *, key: str | None = None) -> training_pb2.DeepExplainer:
        return await self._unary("GetDeepExplainer", req, key)


class CurationClient(_Service):
    stub_class = curation_pb2_grpc.CurationServiceStub

    async def suggest_inputs(self, req: curation_pb2.SuggestInputsRequest, *, key: str | None = None) -> curation_pb2.SuggestInputsResponse:
        return await self._unary("SuggestInputsForLabeling", req, key)

    async def find_label_errors(self, req: curation_pb2.FindLabelErrorsRequest, *, key: str | None = None) -> curation_pb2.FindLabelErrorsResponse:
        return await self._unary("FindLabelErrors", req, key)

    async def get_drift_report(self, req: curation_pb2.GetDriftReportRequest, *, key: str | None = None) -> curation_pb2.DriftReport:
        return await self._unary("GetDriftReport", req, key)

    async def set_curation_policy(self, req: curation_pb2.CurationPolicy, *, key: str | None = None) -> curation_pb2.CurationPolicy:
        return await self._unary("SetCurationPolicy", req, key)

    async def get_curation_policy(self, req: curation_pb2.GetCurationPolicyRequest, *, key: str | None = None) -> curation_pb2.CurationPolicy:
        return await self._unary("GetCurationPolicy", req, key)

    async def list_labeling_queue(self, req: curation_pb2.ListLabelingQueueRequest, *, key: str | None = None) -> curation_pb2.ListLabelingQueueResponse:
        return await self._unary("ListLabelingQueue", req, key)

    async def lease_queue_item(self, req: curation_pb2.LeaseQueueItemRequest, *, key: str | None = None) -> curation_pb2.LeaseQueueItemResponse:
        return await self._unary("LeaseQueueItem", req, key)

    async def score_pool(self, req: curation_pb2.ScorePoolRequest, *, key: str | None = None) -> curation_pb2.ScoringJob:
        return await self._unary("ScorePool", req, key)

    async def get_scoring_job(self, req: curation_pb2.GetScoringJobRequest, *, key: str | None = None) -> curation_pb2.ScoringJob:
        return await self._unary("GetScoringJob", req, key)

    async def list_pool_predictions(self, req: curation_pb2.ListPoolPredictionsRequest, *, key: str | None = None) -> curation_pb2.ListPoolPredictionsResponse:
        return await self._unary("ListPoolPredictions", req, key)

    async def run_health_check(self, req: curation_pb2.HealthCheckRequest, *, key: str | None = None) -> curation_pb2.HealthCheckResponse:
        return await self._unary("RunHealthCheck", req, key)

    async def get_worst_slices(self, req: curation_pb2.WorstSlicesRequest, *, key: str | None = None) -> curation_pb2.WorstSlicesResponse:
        return await self._unary("GetWorstSlices", req, key)

    async def keep_one_duplicate(self, req: curation_pb2.KeepOneRequest, *, key: str | None = None) -> curation_pb2.KeepOneResponse:
        return await self._unary("KeepOneDuplicate", req, key)

    async def list_learning_rounds(self, req: curation_pb2.ListLearningRoundsRequest, *, key: str | None = None) -> curation_pb2.ListLearningRoundsResponse:
        return await self._unary("ListLearningRounds", req, key)

    async def start_embedding_map(self, req: curation_pb2.StartEmbeddingMapRequest, *, key: str | None = None) -> curation_pb2.EmbeddingMapJob:
        return await self._unary("StartEmbeddingMap", req, key)

    async def get_embedding_map_job(self, req: curation_pb2.GetEmbeddingMapJobRequest, *, key: str | None = None) -> curation_pb2.EmbeddingMapJob:
        return await self._unary("GetEmbeddingMapJob", req, key)

    async def list_embedding_map_points(
        self, req: curation_pb2.ListEmbeddingMapPointsRequest, *, key: str | None = None
    ) -> curation_pb2.ListEmbeddingMapPointsResponse:
        return await self._unary("ListEmbeddingMapPoints", req, key)

    async def explain_prediction(self, req: curation_pb2.ExplainPredictionRequest, *, key: str | None = None) -> curation_pb2.ExplainPredictionResponse:
        return await self._unary("ExplainPrediction", req, key)

    async def score_uniqueness(self, req: curation_pb2.ScoreUniquenessRequest, *, key: str | None = None) -> curation_pb2.ScoreUniquenessResponse:
        return await self._unary("ScoreUniqueness", req, key)


class EmbeddingClient(_Service):
    """The internal EmbeddingService (called by search and ingestion, not by users)."""

    stub_class = embedding_pb2_grpc.EmbeddingServiceStub

    async def embed_images(self, req: embedding_pb2.EmbedImagesRequest, *, key: str | None = None) -> embedding_pb2.EmbedImagesResponse:
        return await self._unary("EmbedImages", req, key)

    async def embed_texts(self, req: embedding_pb2.EmbedTextsRequest, *, key: str | None = None) -> embedding_pb2.EmbedTextsResponse:
        return await self._unary("EmbedTexts", req, key)

    async def describe_embedding_model(self, req: embedding_pb2.DescribeEmbeddingModelRequest, *, key: str | None = None) -> embedding_pb2.EmbeddingModelInfo:
        return await self._unary("DescribeEmbeddingModel", req, key)


S = TypeVar("S", bound=_Service)


def internal_client(client_class: type[S], address: str, *, policy: RetryPolicy = INTERNAL_POLICY) -> S:
    """A client for a service calling a peer: the internal key and TLS root from the settings
    (``runtime.channels.aio_internal_channel``), the shorter internal retry budget, and the
    channel made on the first call. ``await client.close()`` at the end."""
    return client_class(lambda: aio_internal_channel(address, options=MESSAGE_OPTIONS), policy)


class Clients:
    """Channels to every service and a client per service. Create it inside the running event
    loop (an asyncio channel belongs to its loop); ``await close()`` at the end.

    ``default_key`` is sent when a call gives no ``key=`` (a service calling with the internal
    key); the gateway passes each request's own key instead."""

    def __init__(
        self,
        addresses: Addresses,
        *,
        default_key: str = "",
        tls_root_cert: str | Path | bytes | None = None,
        policy: RetryPolicy = DEFAULT_POLICY,
    ) -> None:
        self.addresses = addresses
        self._channels: dict[str, grpc.aio.Channel] = {}

        def channel(address: str) -> grpc.aio.Channel:
            if address not in self._channels:
                self._channels[address] = aio_client_channel(address, tls_root_cert=tls_root_cert, options=MESSAGE_OPTIONS)
            return self._channels[address]

        self.ingestion = IngestionClient(channel(addresses.ingestion), policy, default_key)
        self.auth = AuthClient(channel(addresses.ingestion), policy, default_key)
        self.search = SearchClient(channel(addresses.search), policy, default_key)
        self.inference = InferenceClient(channel(addresses.inference), policy, default_key)
        self.training = TrainingClient(channel(addresses.training), policy, default_key)
        self.curation = CurationClient(channel(addresses.curation), policy, default_key)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
