"""Prediction logic: validated images → Triton → ranked concepts (no grpc here)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firstlight.config import ImageLimits
from firstlight.errors import InvalidArgument, NotFound, ResourceExhausted
from firstlight.images import decode_image
from firstlight.models import backbone
from firstlight.models.preprocess import batch_from_images

GENERAL = "general"


@dataclass(frozen=True)
class ModelInfo:
    id: str
    versions: list[str]
    concepts: list[str]
    description: str


class Predictor:
    def __init__(self, triton, limits: ImageLimits) -> None:  # type: ignore[no-untyped-def]
        self.triton = triton
        self.limits = limits
        names = backbone.general_concept_names()
        self.general = ModelInfo(
            GENERAL,
            ["1"],
            names,
            "ImageNet-1k classifier (EfficientNet-Lite0): 1,000 everyday concepts, no training needed",
        )
        self._index = {n.casefold(): i for i, n in enumerate(names)}

    def models(self) -> list[ModelInfo]:
        return [self.general]

    def _model(self, model_id: str, version: str) -> ModelInfo:
        model_id = model_id or GENERAL
        if model_id != GENERAL:
            raise NotFound(f"model {model_id!r} does not exist (available: {GENERAL})")
        if version and version not in self.general.versions:
            raise NotFound(f"model {model_id!r} has no version {version!r} (available: {', '.join(self.general.versions)})")
        return self.general

    def _allowed(self, model: ModelInfo, concepts: Sequence[str]) -> np.ndarray | None:
        if not concepts:
            return None
        idx = []
        for name in concepts:
            i = self._index.get(name.strip().casefold())
            if i is None:
                close = difflib.get_close_matches(name, model.concepts, n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise NotFound(f"concept {name!r} is not in model {model.id!r}{hint}")
            idx.append(i)
        return np.array(sorted(set(idx)))

    def predict(
        self,
        images: Sequence[bytes],
        *,
        model_id: str = "",
        version: str = "",
        top_k: int = 0,
        concepts: Sequence[str] = (),
        min_score: float = 0.0,
    ) -> tuple[ModelInfo, list[list[tuple[str, float]]]]:
        model = self._model(model_id, version)
        if not images:
            raise InvalidArgument("no images given")
        if len(images) > self.limits.max_batch_size:
            raise ResourceExhausted(f"{len(images)} images, over the limit of {self.limits.max_batch_size}")
        if top_k < 0 or top_k > len(model.concepts):
            raise InvalidArgument(f"top_k must be between 0 and {len(model.concepts)} (got {top_k})")
        if not 0.0 <= min_score <= 1.0:
            raise InvalidArgument(f"min_score must be in [0, 1] (got {min_score})")
        allowed = self._allowed(model, concepts)
        decoded = [
            decode_image(
                data, max_bytes=self.limits.max_image_bytes, max_pixels=self.limits.max_image_pixels, label=f"image {n}"
            ).image
            for n, data in enumerate(images)
        ]
        probs = self.triton.classify(batch_from_images(decoded))
        k = top_k or 5
        results = []
        for row in probs:
            candidates = allowed if allowed is not None else np.arange(len(row))
            order = candidates[np.argsort(-row[candidates], kind="stable")][:k]
            results.append([(model.concepts[i], float(row[i])) for i in order if row[i] >= min_score])
        return model, results
