"""Text → image-embedding space without CLIP weights: the concept-name bridge.

No text/image model ships in any package here, but the general model's classifier head is a
linear map from the image-embedding space to 1,000 named concepts: logit_c = w_c · e + b_c.
So a text is read as a weighted set of concept names (MiniLM similarity between the text and
the names), and its query vector is the same weighting of the head's rows. Ranking images by
cosine with that vector ranks them by (normalised) logit for the matched concepts — a real
vector search, served by the same index as image queries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class TextEncoderLike(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Match:
    index: int
    name: str
    weight: float
    similarity: float


class ConceptBridge:
    def __init__(
        self,
        encoder: TextEncoderLike,
        concept_names: list[str],
        head_weights: np.ndarray,
        *,
        cache_dir: Path | None = None,
        top_k: int = 5,
        margin: float = 0.08,
        temperature: float = 0.03,
    ) -> None:
        if head_weights.shape[0] != len(concept_names):
            raise ValueError("one head row per concept name is required")
        self.encoder = encoder
        self.names = concept_names
        self.head = head_weights.astype(np.float32)
        self.top_k = top_k
        self.margin = margin
        self.temperature = temperature
        self.name_vectors = self._name_vectors(cache_dir)

    def _name_vectors(self, cache_dir: Path | None) -> np.ndarray:
        digest = hashlib.sha256("\n".join(self.names).encode()).hexdigest()[:16]
        cache = cache_dir / f"concept-names-{digest}.npy" if cache_dir else None
        if cache and cache.exists():
            return np.load(cache)
        vectors = self.encoder.encode(self.names).astype(np.float32)
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, vectors)
        return vectors

    def interpret(self, text_vector: np.ndarray) -> list[Match]:
        """The concepts a (normalised) text vector is read as, with weights summing to 1.

        Only names within ``margin`` of the best match count: "elephant" should mean the
        three elephant classes, not also "mammoth" at a much lower similarity."""
        sims = self.name_vectors @ text_vector
        order = np.argsort(-sims)[: self.top_k]
        best = sims[order[0]]
        keep = [i for i in order if sims[i] >= best - self.margin]
        logits = np.array([sims[i] for i in keep]) / self.temperature
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        return [Match(int(i), self.names[i], float(w), float(sims[i])) for i, w in zip(keep, weights)]

    def image_query(self, matches: list[Match]) -> np.ndarray:
        vector = sum(m.weight * self.head[m.index] for m in matches)
        vector = np.asarray(vector, dtype=np.float32)
        return vector / (np.linalg.norm(vector) + 1e-12)
