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
from firstlight.domain.validation import EMBEDDING_MODEL
from firstlight.embedding.bridge import ConceptBridge, Match, TextEncoderLike
from firstlight.embedding.ports import ImageModels
from firstlight.errors import FailedPrecondition, InvalidArgument, ModelNotServed, ModelServerError, NotFound, ResourceExhausted
from firstlight.images import decode_batch
from firstlight.media.decode import model_decode_side
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
    """Owns the model handles. ``triton``: the model server (``ports.ImageModels``; a
    ``TritonModels`` wrapped in ``triton.adapter.DomainErrors``)."""

    def __init__(self, triton: ImageModels, limits: ImageLimits, cache_dir: Path | None = None) -> None:
        self.triton = triton
        self.limits = limits
        self.cache_dir = cache_dir
        self._text_lock = threading.Lock()
        self._encoder: TextEncoderLike | None = None
        self._bridge: ConceptBridge | None = None

    # -- images -----------------------------------------------------------------------
    # ``model``: an internal embedding model reference — "" for the base backbone, else the
    # Triton model name (optionally "@version") of an app's trained visual_embedder, resolved
    # from the app and model id by validation.app_embedding_model (clients never name Triton
    # models).
    def exported(self, model: str) -> bool:
        """Whether the model repository (the registry training exports every app model to)
        holds ``model`` ("name" or "name@version"). Checked before Triton is asked anything, so
        a made-up name never makes Triton load (or even look for) a model."""
        repository = getattr(self.triton, "model_repository", None)
        if repository is None or not EMBEDDING_MODEL.fullmatch(model) or model.startswith("."):
            return False
        name, _, version = model.partition("@")
        folder = Path(repository) / name
        if not (folder / "config.pbtxt").is_file():
            return False
        if version:
            return (folder / version).is_dir()
        return any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())

    def describe(self, model: str = "") -> tuple[int, int]:
        """(dim, image size) of an embedding model; NotFound / FailedPrecondition if Triton
        cannot embed with it."""
        if not model:
            return backbone.EMBEDDING_DIM, backbone.IMAGE_SIZE
        if not self.exported(model):
            raise NotFound(f"embedding model {model!r} has no exported version (train a visual_embedder first)")
        try:
            info = self.triton.describe_embedder(model)
        except ModelNotServed as exc:
            raise NotFound(str(exc)) from None
        except ModelServerError as exc:  # not an embedder, or the model failed to load
            raise FailedPrecondition(str(exc)) from None
        return info.dim, info.image_size

    def model_name(self, model: str = "") -> str:
        """What ``EmbeddingComputed.model`` / index payloads call the model."""
        return model or backbone.BACKBONE_VERSION

    def image_size(self, model: str = "") -> int:
        return self.describe(model)[1]

    def decode_batch(self, images: Sequence[bytes], label: str = "image", size: int = backbone.IMAGE_SIZE) -> np.ndarray:
        return batch_from_images(decode_batch(images, self.limits, label, min_side=model_decode_side(size)), size)

    def embed_pixels(self, batch: np.ndarray, model: str = "") -> np.ndarray:
        """[N,S,S,3] uint8 → [N,D] L2-normalised (raises Unavailable when the server is down)."""
        if not model:
            return self.triton.embed(batch)
        vectors = self.triton.embed_with(model, batch)
        # Re-normalise: an exported embedder should already, but cosine search needs unit vectors.
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def embed_images(self, images: Sequence[bytes], model: str = "") -> np.ndarray:
        return self.embed_pixels(self.decode_batch(images, size=self.image_size(model)), model)

    # -- texts ------------------------------------------------------------------------
    def warm_up_text(self) -> None:
        """Load MiniLM and the concept-name vectors (a few seconds; cached on disk after)."""
        with self._text_lock:
            if self._bridge is None:
                from firstlight.models.text_encoder import TextEncoder

                self._encoder = TextEncoder()
                weights, _bias = backbone.classifier_head()
                self._bridge = ConceptBridge(self._encoder, backbone.general_concept_names(), weights, cache_dir=self.cache_dir)
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
