"""Embeddings from the embedding service (the backbone, or an app's own visual_embedder)."""

from __future__ import annotations

from collections.abc import Sequence

from firstlight.sdk.base import ServiceCalls
from firstlight.sdk.errors import wrap_errors
from firstlight.v1 import embedding_pb2


class EmbeddingCalls(ServiceCalls):
    @wrap_errors
    def embed_images(self, images: Sequence[bytes], *, model: str = "", app_id: str = "") -> list[list[float]]:
        """Embeddings of encoded images from the embedding service, one per image, in order.
        ``model`` empty (or "backbone"): the base backbone the live index and transfer models use;
        else one of ``app_id``'s own trained visual_embedder models by model id ("emb" or
        "emb@2"; an app key's own app when ``app_id`` is empty). Send batches of at most a few
        dozen images per call."""
        if self.embedding is None:
            raise ValueError("this client has no embedding service address")
        request = embedding_pb2.EmbedImagesRequest(images=list(images), model=model, app_id=app_id)
        # 5× the default deadline: a batch on a CPU-only backbone takes a while.
        resp = self.embedding.EmbedImages(request, timeout=self.timeout_s * 5)
        return [list(e.vector) for e in resp.embeddings]
