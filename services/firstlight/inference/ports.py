"""What the inference core needs from the outside, as typed Protocols: the model server
(Triton, through ``triton.adapter.DomainErrors`` so its failures arrive as domain errors), the
announcement of a servable version (a ``model.version.ready`` event is one) and the publisher
of predictions (``events.PredictionEvents``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class ModelServer(Protocol):
    """Raises ``errors.Unavailable`` when the server cannot be reached, ``errors.ModelNotServed``
    for a model it does not have, ``errors.ModelServerError`` for any other refusal."""

    def classify(self, batch_uint8: np.ndarray) -> np.ndarray: ...
    def embed(self, batch_uint8: np.ndarray) -> np.ndarray: ...
    def embed_with(self, ref: str, batch_uint8: np.ndarray) -> np.ndarray: ...
    def describe_embedder(self, ref: str) -> Any: ...  # .image_size
    def infer_head(self, model: str, version: str, embeddings: np.ndarray) -> np.ndarray: ...
    def infer_images(self, model: str, version: str, pixels: np.ndarray, output: str = ...) -> np.ndarray: ...


class VersionReady(Protocol):
    """A servable app model version, as the registry learns it."""

    app_id: str
    model_id: str
    version: str
    triton_model: str
    concepts: Sequence[str]
    activation: str
    kind: str
    image_size: int
    embedding_model: str
    serving: bool
