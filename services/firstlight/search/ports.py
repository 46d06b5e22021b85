"""What the search core needs from the outside, as typed Protocols: the vector store
(``vector_store.VectorStore``, implemented by the Qdrant twins) and the EmbeddingService that
turns a query into a vector (``peers.EmbeddingService`` over ``firstlight.clients``)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from firstlight.search.vector_store import VectorStore

__all__ = ["QueryEmbedder", "VectorStore"]


class QueryEmbedder(Protocol):
    """Embeds search queries. Errors about the query keep their type (InvalidArgument,
    NotFound, ResourceExhausted…); the service being down is Unavailable."""

    async def embed_image(self, data: bytes, app_id: str, model: str = "") -> np.ndarray:
        """The image's vector with the app's embedding model ``model`` (an internal reference,
        "" for the base backbone)."""
        ...

    async def text_query(self, text: str) -> tuple[np.ndarray, list[tuple[str, float]]]:
        """The text as a query vector in the base backbone's image space, and the concepts it
        was read as (name, weight)."""
        ...
