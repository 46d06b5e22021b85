"""The one client object: channels to the services and every service's calls."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from firstlight.clients.policy import DEFAULT_DEADLINE_S, DEFAULT_POLICY, RetryPolicy
from firstlight.clients.services import MESSAGE_OPTIONS
from firstlight.runtime.channels import client_channel
from firstlight.sdk.auth import AuthCalls
from firstlight.sdk.curation import CurationCalls
from firstlight.sdk.embedding import EmbeddingCalls
from firstlight.sdk.inference import InferenceCalls
from firstlight.sdk.ingestion import IngestionCalls
from firstlight.sdk.search import SearchCalls
from firstlight.sdk.training import TrainingCalls
from firstlight.sdk.transport import RetryingStub
from firstlight.sdk.video import VideoCalls, VideoSearchCalls
from firstlight.stack import ADMIN_KEY_ENTRY, read_stack_file
from firstlight.v1 import (
    auth_pb2_grpc,
    curation_pb2_grpc,
    embedding_pb2_grpc,
    inference_pb2_grpc,
    ingestion_pb2_grpc,
    search_pb2_grpc,
    training_pb2_grpc,
)


class Firstlight(AuthCalls, IngestionCalls, SearchCalls, EmbeddingCalls, InferenceCalls, TrainingCalls, CurationCalls, VideoCalls, VideoSearchCalls):
    """Client for a Firstlight deployment. Use as a context manager to close its channels.

    Every call has a deadline: the clients' policy (:mod:`firstlight.clients.policy`) scaled by
    ``timeout_s`` (60 s, the policy's default, leaves it as it is); side-effect-free calls retry on
    UNAVAILABLE by ``retry``."""

    def __init__(
        self,
        ingestion: str,
        search: str,
        inference: str,
        training: str = "",
        timeout_s: float = DEFAULT_DEADLINE_S,
        *,
        api_key: str | None = None,
        tls_root_cert: str | Path | bytes | None = None,
        retry: RetryPolicy = DEFAULT_POLICY,
        embedding: str = "",
        curation: str = "",
    ) -> None:
        addrs = [ingestion, search, inference] + ([training] if training else [])
        key = api_key if api_key is not None else os.environ.get("FIRSTLIGHT_API_KEY", "")
        self._channels = [client_channel(a, api_key=key, tls_root_cert=tls_root_cert, options=MESSAGE_OPTIONS) for a in addrs]
        self.retry = retry
        self.timeout_s = timeout_s
        self.ingestion = RetryingStub(ingestion_pb2_grpc.IngestionServiceStub(self._channels[0]), retry)
        # API keys are served by the ingestion process (AuthService).
        self.auth = RetryingStub(auth_pb2_grpc.AuthServiceStub(self._channels[0]), retry)
        self.search = RetryingStub(search_pb2_grpc.SearchServiceStub(self._channels[1]), retry)
        self.inference = RetryingStub(inference_pb2_grpc.InferenceServiceStub(self._channels[2]), retry)
        self.training = RetryingStub(training_pb2_grpc.TrainingServiceStub(self._channels[3]), retry) if training else None
        # The curation service (its own process and port).
        self.curation = None
        if curation:
            self._channels.append(client_channel(curation, api_key=key, tls_root_cert=tls_root_cert, options=MESSAGE_OPTIONS))
            self.curation = RetryingStub(curation_pb2_grpc.CurationServiceStub(self._channels[-1]), retry)
        # The embedding service (the backbone every index and model is built on), for
        # :meth:`embed_images`; optional since deployments need not expose it.
        self.embedding = None
        if embedding:
            self._channels.append(client_channel(embedding, api_key=key, tls_root_cert=tls_root_cert, options=MESSAGE_OPTIONS))
            self.embedding = RetryingStub(embedding_pb2_grpc.EmbeddingServiceStub(self._channels[-1]), retry)

    @classmethod
    def from_stack(cls, data_dir: str | Path = ".firstlight", **kw: Any) -> Firstlight:
        """Connect to the local stack started by ``firstlight up`` in ``data_dir``."""
        return cls.from_addresses(read_stack_file(Path(data_dir)), **kw)

    @classmethod
    def from_addresses(cls, addrs: dict[str, str], **kw: Any) -> Firstlight:
        """``addrs`` as in stack.json; its admin key is used unless ``api_key=`` or
        FIRSTLIGHT_API_KEY says otherwise."""
        kw.setdefault("api_key", os.environ.get("FIRSTLIGHT_API_KEY") or addrs.get(ADMIN_KEY_ENTRY, ""))
        kw.setdefault("embedding", addrs.get("embedding", ""))
        kw.setdefault("curation", addrs.get("curation", ""))
        return cls(addrs["ingestion"], addrs["search"], addrs["inference"], addrs.get("training", ""), **kw)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Firstlight:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: ``Client(ingestion, search, inference, training, api_key=..., tls_root_cert=...)``
Client = Firstlight
