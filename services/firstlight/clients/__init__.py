"""Clients of the Firstlight services: one typed, thin client per gRPC service over the
generated stubs, with the retry/deadline policy and the gRPC-status → error map in one place.

    from firstlight.clients import Clients, Addresses
    clients = Clients(Addresses(ingestion="127.0.0.1:50051", ...))
    app = await clients.ingestion.get_app(ingestion_pb2.GetAppRequest(id="pets"), key=user_key)

Each call carries the caller's API key as metadata (``key=``), so one set of channels serves many
callers (the HTTP gateway passes each request's key through; the services check it). Failures
come back as :mod:`firstlight.errors` types (:func:`firstlight.clients.errors.from_rpc_error`).
The asyncio clients here serve the gateway and the services' calls to each other
(:func:`internal_client`: the internal key, peer failures reported with :func:`as_peer_failure`); the SDK's synchronous client uses the same policy
(:mod:`firstlight.clients.policy`) and the same error map.
"""

from firstlight.clients.errors import RpcError, as_peer_failure, from_rpc_error
from firstlight.clients.services import (
    Addresses,
    AuthClient,
    Clients,
    CurationClient,
    EmbeddingClient,
    InferenceClient,
    IngestionClient,
    SearchClient,
    TrainingClient,
    internal_client,
)

__all__ = [
    "Addresses", "AuthClient", "Clients", "CurationClient", "EmbeddingClient", "InferenceClient", "IngestionClient",
    "RpcError", "SearchClient", "TrainingClient", "as_peer_failure", "from_rpc_error", "internal_client",
]
