"""Prediction logic: validated images → Triton → ranked concepts. No grpc, tritonclient or
generated code here: the model server, the registry's announcements and the predictions'
publisher are the Protocols of ``ports.py``."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np

from firstlight.config import ImageLimits
from firstlight.domain import validation
from firstlight.errors import FailedPrecondition, InvalidArgument, ModelNotServed, NotFound
from firstlight.images import decode_batch
from firstlight.inference import detections
from firstlight.inference.detections import FoundRegion
from firstlight.inference.ports import ModelServer
from firstlight.inference.registry import Registry
from firstlight.media.decode import model_decode_side
from firstlight.models import backbone
from firstlight.models.preprocess import batch_from_images

GENERAL = "general"
MAX_TOP_K = 1000


@dataclass(frozen=True)
class ModelInfo:
    id: str
    versions: list[str]
    concepts: list[str]
    description: str


@dataclass(frozen=True)
class Resolved:
    """A model version ready to run: the general model, or an app model's head in Triton."""

    id: str
    version: str
    concepts: list[str]
    triton_model: str = ""  # empty for the general model
    kind: str = ""  # "" for the general model and heads; "classifier" for a deep classifier (pixels in)
    image_size: int = 0
    embedding_model: str = ""  # a head's input embeddings: "" the backbone, else an embedder's Triton ref


@dataclass(frozen=True)
class Step:
    model_id: str = ""
    version: str = ""
    concepts: tuple[str, ...] = ()
    top_k: int = 0
    min_score: float = 0.0
    gate_concepts: tuple[str, ...] = ()
    gate_step: int = 0
    gate_min_score: float = 0.0


@dataclass(frozen=True)
class Observed:
    """One Predict call of an app model, as the ``predictions.made`` publisher sees it: the full
    probability rows (uncertainty needs them, not the top-k) and the embeddings the head saw."""

    app_id: str
    model: Resolved
    input_ids: list[str]
    probabilities: np.ndarray
    embeddings: np.ndarray


def uncertainty(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(margin, entropy, least_confidence) per row, each in [0, 1], higher: more unsure."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    top = -np.sort(-p, axis=1)
    second = top[:, 1] if p.shape[1] > 1 else np.zeros(len(p))
    margin = 1.0 - (top[:, 0] - second)
    ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1) / max(np.log(p.shape[1]), 1e-12)
    return margin.clip(0, 1), ent.clip(0, 1), (1.0 - top[:, 0]).clip(0, 1)


P = ParamSpec("P")
T = TypeVar("T")


def _needs_served_models(method: Callable[P, T]) -> Callable[P, T]:
    """A model the resolved version needs that the server does not have is the version's
    problem, not the server's: FAILED_PRECONDITION."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except ModelNotServed as exc:  # e.g. the embedder a head was trained on was removed
            raise FailedPrecondition(f"a model this version needs is not served: {exc}") from exc

    return wrapper


class Predictor:
    def __init__(
        self,
        triton: ModelServer,
        limits: ImageLimits,
        registry: Registry | None = None,
        observer: Callable[[Observed], None] | None = None,
    ) -> None:
        self.triton = triton
        #: Called with an :class:`Observed` after each app-model Predict (publishes events).
        self.observer = observer
        self.limits = limits
        self.registry = registry or Registry()
        names = backbone.general_concept_names()
        self.general = ModelInfo(
            GENERAL,
            ["1"],
            names,
            "ImageNet-1k classifier (EfficientNet-Lite0): 1,000 everyday concepts, no training needed",
        )
        self._index = {n.casefold(): i for i, n in enumerate(names)}

    def models(self, app_id: str = "") -> list[ModelInfo]:
        out = [self.general]
        for m in sorted(self.registry.for_app(app_id), key=lambda m: m.model_id) if app_id else []:
            serving = m.versions[m.serving]
            out.append(ModelInfo(m.model_id, sorted(m.versions, key=int), serving.concepts, f"app model (serving v{m.serving})"))
        return out

    def resolve(self, app_id: str, model_id: str, version: str) -> Resolved:
        model_id = model_id or GENERAL
        if model_id == GENERAL:
            if version and version not in self.general.versions:
                raise NotFound(f"model {GENERAL!r} has no version {version!r} (available: {', '.join(self.general.versions)})")
            return Resolved(GENERAL, self.general.versions[-1], self.general.concepts)
        model = self.registry.get(app_id, model_id)
        if model is None:
            raise NotFound(f"model {model_id!r} does not exist in app {app_id!r} (or has no trained version yet)")
        version = version or model.serving
        if version not in model.versions:
            raise NotFound(f"model {model_id!r} has no version {version!r} (available: {', '.join(sorted(model.versions, key=int))})")
        v = model.versions[version]
        return Resolved(model_id, version, v.concepts, v.triton_model, v.kind, v.image_size, v.embedding_model)

    def _allowed(self, model: Resolved, concepts: Sequence[str]) -> np.ndarray | None:
        if not concepts:
            return None
        index = self._index if model.id == GENERAL else {n.casefold(): i for i, n in enumerate(model.concepts)}
        idx = []
        for name in concepts:
            i = index.get(name.strip().casefold())
            if i is None:
                close = difflib.get_close_matches(name, model.concepts, n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise NotFound(f"concept {name!r} is not in model {model.id!r}{hint}")
            idx.append(i)
        return np.array(sorted(set(idx)))

    def _decoded(self, images: Sequence[bytes], *models: Resolved) -> dict:
        """Per-request cache: decoded images (a large JPEG at the scale the largest input of
        ``models`` needs), pixels per size, backbone outputs."""
        size = max([backbone.IMAGE_SIZE, *(m.image_size for m in models)])
        return {"decoded": decode_batch(images, self.limits, min_side=model_decode_side(size))}

    @staticmethod
    def _pixels_at(cache: dict, size: int) -> np.ndarray:
        key = ("pixels", size)
        if key not in cache:
            cache[key] = batch_from_images(cache["decoded"], size)
        return cache[key]

    def _probabilities(self, model: Resolved, cache: dict) -> np.ndarray:
        """Probabilities of ``model`` for a batch; the backbone runs once per batch (cached).
        A deep classifier (``visual_classifier``) takes pixels at its own image size."""
        if model.kind == "classifier":
            return self.triton.infer_images(model.triton_model, model.version, self._pixels_at(cache, model.image_size))
        if model.kind:
            raise InvalidArgument(f"model {model.id!r} is a {model.kind}, not a classifier: Predict cannot rank its concepts")
        pixels = self._pixels_at(cache, backbone.IMAGE_SIZE)
        if model.id == GENERAL:
            if "general" not in cache:
                cache["general"] = self.triton.classify(pixels)
            return cache["general"]
        if model.embedding_model:  # trained on an app's switched-to embedder: embed with that model
            return self.triton.infer_head(model.triton_model, model.version, self._embedder_vectors(model.embedding_model, cache))
        if "embedding" not in cache:
            cache["embedding"] = self.triton.embed(pixels)
        return self.triton.infer_head(model.triton_model, model.version, cache["embedding"])

    def _embedder_vectors(self, ref: str, cache: dict) -> np.ndarray:
        """Unit vectors of the batch from embedding model ``ref`` (as the embedding worker makes
        the index's vectors), once per request and model."""
        key = ("embedding", ref)
        if key not in cache:
            size = self.triton.describe_embedder(ref).image_size  # a missing model: see _needs_served_models
            vectors = self.triton.embed_with(ref, self._pixels_at(cache, size))
            cache[key] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return cache[key]

    @staticmethod
    def _check(model: Resolved, top_k: int, min_score: float) -> None:
        # A top_k above the model's concept count just returns every concept.
        if top_k < 0 or top_k > MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 0 and {MAX_TOP_K} (got {top_k})")
        if not 0.0 <= min_score <= 1.0:
            raise InvalidArgument(f"min_score must be in [0, 1] (got {min_score})")

    @staticmethod
    def _rank(model: Resolved, row: np.ndarray, allowed: np.ndarray | None, top_k: int, min_score: float) -> list[tuple[str, float]]:
        candidates = allowed if allowed is not None else np.arange(len(row))
        order = candidates[np.argsort(-row[candidates], kind="stable")][: top_k or 5]
        return [(model.concepts[i], float(row[i])) for i in order if row[i] >= min_score]

    def _regions(self, model: Resolved, cache: dict, allowed: np.ndarray | None, top_k: int, min_score: float) -> list[list[FoundRegion]]:
        """A detector's regions per image. Its pixels are each whole image resized (no centre
        crop), so boxes normalised to them are normalised to the original image."""
        key = ("whole", model.image_size)
        if key not in cache:
            cache[key] = detections.detector_pixels(cache["decoded"], model.image_size)
        packed = self.triton.infer_images(model.triton_model, model.version, cache[key], output=detections.OUTPUT)
        return detections.regions_from_packed(packed, model.concepts, allowed=allowed, top_k=top_k, min_score=min_score)

    @_needs_served_models
    def predict_regions(
        self,
        images: Sequence[bytes],
        *,
        app_id: str = "",
        model_id: str = "",
        version: str = "",
        top_k: int = 0,
        concepts: Sequence[str] = (),
        min_score: float = 0.0,
        input_ids: Sequence[str] = (),
    ) -> tuple[Resolved, list[list[tuple[str, float]]], list[list[FoundRegion]]]:
        """Concepts and, for a detector model, regions per image. A detector's concepts are those
        it found, each with its best region's score; ``top_k`` caps its regions (0: all it
        returned) and ``concepts`` filters them. ``input_ids`` (optional, one per image) name the
        images in the ``predictions.made`` events the observer publishes."""
        model = self.resolve(app_id, model_id, version)
        self._check(model, top_k, min_score)
        if input_ids and len(input_ids) != len(images):
            raise InvalidArgument(f"input_ids must name every image: {len(input_ids)} ids for {len(images)} images")
        for i in input_ids:
            validation.input_id(i)
        allowed = self._allowed(model, concepts)
        cache = self._decoded(images, model)
        if model.kind == "detector":
            found = self._regions(model, cache, allowed, top_k, min_score)
            return model, [detections.concepts_of(f) for f in found], found
        probs = self._probabilities(model, cache)
        if self.observer is not None and model.id != GENERAL:
            # Curation's drift check compares backbone embeddings: a deep classifier did not
            # compute one, so it costs one backbone call more when someone listens.
            if "embedding" not in cache:
                cache["embedding"] = self.triton.embed(self._pixels_at(cache, backbone.IMAGE_SIZE))
            self.observer(Observed(app_id, model, list(input_ids) or [""] * len(images), probs, cache["embedding"]))
        return model, [self._rank(model, row, allowed, top_k, min_score) for row in probs], [[] for _ in probs]

    def predict(
        self,
        images: Sequence[bytes],
        *,
        app_id: str = "",
        model_id: str = "",
        version: str = "",
        top_k: int = 0,
        concepts: Sequence[str] = (),
        min_score: float = 0.0,
        input_ids: Sequence[str] = (),
    ) -> tuple[Resolved, list[list[tuple[str, float]]]]:
        model, ranked, _ = self.predict_regions(
            images,
            app_id=app_id,
            model_id=model_id,
            version=version,
            top_k=top_k,
            concepts=concepts,
            min_score=min_score,
            input_ids=input_ids,
        )
        return model, ranked

    @_needs_served_models
    def workflow(self, images: Sequence[bytes], app_id: str, steps: Sequence[Step]) -> list[list[tuple[bool, list[tuple[str, float]]]]]:
        """Per image, per step: (ran, concepts). A gated step runs only for images where the gate
        step predicted one of the gate concepts with at least the gate score."""
        if not steps:
            raise InvalidArgument("a workflow needs at least one step")
        resolved = []
        for n, step in enumerate(steps):
            model = self.resolve(app_id, step.model_id, step.version)
            self._check(model, step.top_k, step.min_score)
            if step.gate_concepts and not 0 <= step.gate_step < n:
                raise InvalidArgument(f"step {n}: gate_step must name an earlier step (got {step.gate_step})")
            resolved.append((model, self._allowed(model, step.concepts)))
        cache = self._decoded(images, *(m for m, _ in resolved))
        results: list[list[tuple[bool, list[tuple[str, float]]]]] = [[] for _ in images]
        for step, (model, allowed) in zip(steps, resolved):
            probs = self._probabilities(model, cache)
            gate = {c.casefold() for c in step.gate_concepts}
            for i, row in enumerate(probs):
                if gate:
                    ran_before, earlier = results[i][step.gate_step]
                    if not ran_before or not any(c.casefold() in gate and s >= step.gate_min_score for c, s in earlier):
                        results[i].append((False, []))
                        continue
                results[i].append((True, self._rank(model, row, allowed, step.top_k, step.min_score)))
        return results
