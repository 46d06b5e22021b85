"""The ingestion core's peers (``ports.SearchPeer``, ``ports.EmbeddingPeer``) over
``firstlight.clients``: domain values to requests and back; a peer's failure is reported as
``clients.as_peer_failure`` says (the one status map)."""

from __future__ import annotations

from firstlight.clients import EmbeddingClient, SearchClient, as_peer_failure, internal_client
from firstlight.errors import FailedPrecondition, FirstlightError
from firstlight.ingestion.ports import InputFilter, SearchQuery
from firstlight.runtime.convert import labeled_proto
from firstlight.v1 import common_pb2, embedding_pb2, search_pb2


def filter_proto(flt: InputFilter) -> common_pb2.InputFilter:
    return common_pb2.InputFilter(concepts=list(flt.concepts), split=flt.split, labeled=labeled_proto(flt.labeled))  # type: ignore[arg-type]


class SearchService:
    """Resolves bulk selections given as searches (ingestion → search)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client = internal_client(SearchClient, address) if address else None

    async def search_page(self, app_id: str, query: SearchQuery, flt: InputFilter, page_size: int, page_token: str) -> tuple[list[tuple[str, float]], str]:
        if self._client is None:
            raise FailedPrecondition("bulk labeling by search needs FIRSTLIGHT_SEARCH_ADDR on the ingestion service")
        f = filter_proto(flt)
        try:
            if query.text:
                resp = await self._client.search_by_text(
                    search_pb2.SearchByTextRequest(app_id=app_id, text=query.text, filter=f, page_size=page_size, page_token=page_token)
                )
            else:
                req = search_pb2.SearchByImageRequest(app_id=app_id, filter=f, page_size=page_size, page_token=page_token)
                if query.image:
                    req.image_bytes = query.image
                else:
                    req.input_id = query.input_id
                resp = await self._client.search_by_image(req)
        except FirstlightError as exc:
            raise as_peer_failure(exc, "search failed: ") from None
        return [(h.input_id, h.score) for h in resp.hits], resp.next_page_token

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class EmbeddingService:
    """Asks the EmbeddingService whether Triton serves an embedding model."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client = internal_client(EmbeddingClient, address) if address else None

    async def check_model(self, app_id: str, model: str) -> None:
        if self._client is None:
            raise FailedPrecondition("switching embedding models needs FIRSTLIGHT_EMBEDDING_ADDR on the ingestion service")
        try:  # a read: retried while the embedding service restarts; may load the model first
            await self._client.describe_embedding_model(embedding_pb2.DescribeEmbeddingModelRequest(app_id=app_id, model=model))
        except FirstlightError as exc:
            raise as_peer_failure(exc, f"embedding model {model!r}: ") from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
