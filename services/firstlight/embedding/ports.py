"""What the embedding core needs from the outside, as typed Protocols: the model server (Triton,
through ``triton.adapter.DomainErrors`` so its failures arrive as domain errors) and the event
publisher of the worker (``events.py``)."""

from __future__ import annotations


from pathlib import Path
from typing import Any, Protocol

import numpy as np


class EmbedderInfo(Protocol):
    @property
    def dim(self) -> int: ...
    @property
    def image_size(self) -> int: ...


class ImageModels(Protocol):
    """The model server. Raises ``errors.Unavailable`` when it cannot be reached,
    ``errors.ModelNotServed`` for a model it does not have, ``errors.ModelServerError`` for
    any other refusal."""

    #: The model repository training exports app models to (None: only the backbone embeds).
    model_repository: Path | None

    def embed(self, batch_uint8: np.ndarray) -> np.ndarray:
        """[N,S,S,3] uint8 → [N,D] unit vectors of the base backbone."""
        ...

    def embed_with(self, ref: str, batch_uint8: np.ndarray) -> np.ndarray:
        """The same with a trained visual_embedder ("name" or "name@version")."""
        ...

    def describe_embedder(self, ref: str) -> EmbedderInfo: ...

    def max_batch_size(self, model: str) -> int: ...


class EmbeddingsPublisher(Protocol):
    """Publishes ``embeddings.computed`` for the worker (``events.EmbeddingEvents``)."""

    def computed(self, source: Any, model: str, vector: np.ndarray) -> Any:
        """Send the embedding of the input ``source`` (an ``inputs.ingested`` event) announced;
        returns a future that raises if the broker did not take it."""
        ...

    def flush(self) -> None: ...



