"""The search core's peers over ``firstlight.clients``: the EmbeddingService
(``ports.QueryEmbedder``), with a deadline and retries (embedding is a pure function of the
request), and the IngestionService's inputs for the reconcile after a broker loss
(``reconcile.LabelSource``); failures reported as ``clients.as_peer_failure`` says (the one
status map)."""

from __future__ import annotations

from datetime import UTC

import numpy as np

from firstlight.clients import EmbeddingClient, IngestionClient, as_peer_failure, internal_client
from firstlight.domain import validation
from firstlight.domain.generations import generation_of
from firstlight.errors import FirstlightError, NotFound
from firstlight.search.reconcile import InputLabels
from firstlight.v1 import embedding_pb2, ingestion_pb2


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


class IngestionInputs:
    """``reconcile.LabelSource`` over the IngestionService: an app's inputs with their labels,
    paged through ListInputs (the internal key reaches every app)."""

    PAGE = 1000  # ListInputs' largest page

    def __init__(self, address: str) -> None:
        self._client = internal_client(IngestionClient, address)

    async def labels(self, app_id: str) -> list[InputLabels] | None:
        out: list[InputLabels] = []
        token = ""
        while True:
            try:
                resp = await self._client.list_inputs(ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=self.PAGE, page_token=token))
            except NotFound:
                return None
            except FirstlightError as exc:
                raise as_peer_failure(exc) from None
            out += [
                InputLabels(i.id, list(i.concepts), int(i.split), int(i.label_revision), generation_of(i.created_at.ToDatetime(tzinfo=UTC)))
                for i in resp.inputs
            ]
            token = resp.next_page_token
            if not token:
                return out

    async def close(self) -> None:
        await self._client.close()
