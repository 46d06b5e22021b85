"""Embedding domain logic: bytes → validated images → Triton backbone → vectors; texts →
MiniLM → (optionally) the image space through the concept bridge."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firstlight.config import ImageLimits
from firstlight.embedding.bridge import ConceptBridge, Match
from firstlight.errors import InvalidArgument, ResourceExhausted
from firstlight.images import decode_batch
from firstlight.models import backbone
from firstlight.models.preprocess import batch_from_images

log = logging.getLogger(__name__)

MAX_TEXTS = 256
MAX_TEXT_CHARS = 2000


@dataclass(frozen=True)
class TextResult:
    vectors: np.ndarray
    interpretations: list[list[Match]]


class Embedder:
    """Owns the model handles. ``triton`` is a :class:`firstlight.triton.client.TritonModels`."""

    def __init__(self, triton, limits: ImageLimits, cache_dir: Path | None = None) -> None:  # type: ignore[no-untyped-def]
        self.triton = triton
        self.limits = limits
        self.cache_dir = cache_dir
        self.model_name = backbone.BACKBONE_VERSION
        self._text_lock = threading.Lock()
        self._encoder = None
        self._bridge: ConceptBridge | None = None

    # -- images -----------------------------------------------------------------------
    def decode_batch(self, images: Sequence[bytes], label: str = "image") -> np.ndarray:
        return batch_from_images(decode_batch(images, self.limits, label))

    def embed_pixels(self, batch: np.ndarray) -> np.ndarray:
        """[N,224,224,3] uint8 → [N,1280] L2-normalised (raises TritonUnavailable when down)."""
        return self.triton.embed(batch)

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        return self.embed_pixels(self.decode_batch(images))

    # -- texts ------------------------------------------------------------------------
    def warm_up_text(self) -> None:
        """Load MiniLM and the concept-name vectors (a few seconds; cached on disk after)."""
        with self._text_lock:
            if self._bridge is None:
                from firstlight.models.text_encoder import TextEncoder

                self._encoder = TextEncoder()
                weights, _bias = backbone.classifier_head()
                self._bridge = ConceptBridge(
                    self._encoder, backbone.general_concept_names(), weights, cache_dir=self.cache_dir
                )
                log.info("text encoder and concept bridge ready")

    @property
    def text_model_name(self) -> str:
        return "all-MiniLM-L6-v2@1"

    def embed_texts(self, texts: Sequence[str], image_space: bool) -> TextResult:
        if not texts:
            raise InvalidArgument("no texts given")
        if len(texts) > MAX_TEXTS:
            raise ResourceExhausted(f"{len(texts)} texts, over the limit of {MAX_TEXTS}")
        for n, text in enumerate(texts):
            if not text.strip():
                raise InvalidArgument(f"text {n} is empty")
            if len(text) > MAX_TEXT_CHARS:
                raise InvalidArgument(f"text {n} is {len(text)} characters, over the limit of {MAX_TEXT_CHARS}")
        self.warm_up_text()
        assert self._encoder is not None and self._bridge is not None
        vectors = self._encoder.encode(list(texts))
        if not image_space:
            return TextResult(vectors, [])
        matches = [self._bridge.interpret(v) for v in vectors]
        return TextResult(np.stack([self._bridge.image_query(m) for m in matches]), matches)
