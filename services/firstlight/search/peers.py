"""The search core's peer (``ports.QueryEmbedder``) over ``firstlight.clients``: the
EmbeddingService, with a deadline and retries (embedding is a pure function of the request);
its failures reported as ``clients.as_peer_failure`` says (the one status map)."""

from __future__ import annotations

import numpy as np

from firstlight import validation
from firstlight.clients import EmbeddingClient, as_peer_failure, internal_client
from firstlight.errors import FirstlightError
from firstlight.v1 import embedding_pb2


class EmbeddingService:
    def __init__(self, address: str) -> None:
        self.address = address
        self._client = internal_client(EmbeddingClient, address)

    async def embed_image(self, data: bytes, app_id: str, model: str = "") -> np.ndarray:
        # The EmbeddingService is asked by the app's model id, never by Triton name.
        request = embedding_pb2.EmbedImagesRequest(images=[data], app_id=app_id, model=validation.public_embedding_model(app_id, model))
        try:
            resp = await self._client.embed_images(request)
        except FirstlightError as exc:
            raise as_peer_failure(exc) from None
        return np.asarray(resp.embeddings[0].vector, dtype=np.float32)

    async def text_query(self, text: str) -> tuple[np.ndarray, list[tuple[str, float]]]:
        request = embedding_pb2.EmbedTextsRequest(texts=[text], space=embedding_pb2.TEXT_SPACE_IMAGE)
        try:
            resp = await self._client.embed_texts(request)
        except FirstlightError as exc:
            raise as_peer_failure(exc) from None
        concepts = [(c.name, c.score) for c in resp.interpretations[0].concepts]
        return np.asarray(resp.embeddings[0].vector, dtype=np.float32), concepts

    async def close(self) -> None:
        await self._client.close()
