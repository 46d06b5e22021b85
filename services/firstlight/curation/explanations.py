"""Explanations of a prediction (``ExplainPrediction``): why a head version predicts what it
does on one image, from the ports only.

The head's arrays come from the training service (``Training.head``), the image from the
app's blob (an input) or the request, the backbone is the torch EfficientNet-Lite0 loaded in
this process (whatever serves the embeddings: the maps need gradients). Grad-CAM++ on the
backbone's last feature map through the head (``quality.explain``), pictures by
``quality.explain_render``, and as evidence the version's training examples of each concept
nearest to the image (their stored embeddings, cosine to the image's own embedding).

A deep classifier version (a whole network on pixels) comes from training as TorchScript split
at its last feature map (``Training.deep_explainer``); Grad-CAM++ runs on that map through the
network's own pooling and head, and the evidence is ranked as for a head, by the image's
backbone embedding (the network has none the store knows). The loaded networks are cached per
(app, model, version), a few per process."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from firstlight.config import ImageLimits
from firstlight.curation.ports import DeepExplainer, HeadArrays, Platform, Training
from firstlight.domain import projection, validation
from firstlight.domain.lru import Lru
from firstlight.errors import FailedPrecondition, InvalidArgument

METHODS = ("gradcam++", "gradcam")
DEFAULT_TOP_K, MAX_TOP_K = 3, 10
DEFAULT_EVIDENCE, MAX_EVIDENCE = 6, 50
#: Training examples compared per request (their stored vectors are fetched once).
MAX_CANDIDATES = 20_000
_VERSION = re.compile(r"[1-9][0-9]{0,9}", re.ASCII)
TRAIN_SPLIT = 1
#: Deep networks kept loaded (an EfficientNet-Lite0 version is ~15 MB of TorchScript).
DEEP_CACHE = 4


@dataclass(frozen=True)
class ConceptExplained:
    concept: str
    score: float
    overlay_png: bytes
    saliency: np.ndarray  # raw map [h, w] in [0, 1], over ``Explained.box``
    evidence: list[tuple[str, float, list[str]]]  # (input id, cosine, concepts), most similar first


@dataclass(frozen=True)
class Explained:
    version: str
    template: str
    activation: str
    method: str
    concepts: list[ConceptExplained]
    grid_png: bytes
    width: int
    height: int
    box: tuple[float, float, float, float]  # the model's input in the image (fractions)
    input_id: str = ""


def _load_backbone() -> Any:
    from firstlight.models import backbone

    return backbone.load_efficientnet("cpu")


class Explanations:
    def __init__(self, platform: Platform, training: Training, limits: ImageLimits | None = None, load_backbone: Callable[[], Any] = _load_backbone) -> None:
        self.platform = platform
        self.training = training
        self.limits = limits or ImageLimits()
        self._load = load_backbone
        self._model: Any = None
        self._lock = threading.Lock()
        self._deep: Lru[tuple[str, str, str], tuple[DeepExplainer, Any]] = Lru(DEEP_CACHE)

    def backbone(self) -> Any:
        """The torch backbone, loaded on the first explanation (~1 s, ~20 MB): a curation
        process that never explains never holds it."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _deep_net(self, app_id: str, model_id: str, version: str) -> tuple[DeepExplainer, Any]:
        """(the deep version's meta, its loaded split module), from the cache when it holds it."""
        import io

        import torch

        resolved = version or self.training.model(app_id, model_id).serving_version
        key = (app_id, model_id, resolved)
        kept = self._deep.get(key) if resolved else None
        if kept is not None:
            return kept
        dx = self.training.deep_explainer(app_id, model_id, resolved)
        module = torch.jit.load(io.BytesIO(dx.torchscript), map_location="cpu").eval()
        for p in module.parameters():  # gradients flow to the feature map only
            p.requires_grad_(False)
        entry = (DeepExplainer(dx.version, dx.template, dx.concepts, dx.activation, dx.image_size, b""), module)
        self._deep.put((app_id, model_id, dx.version), entry)
        return entry

    def _head(self, app_id: str, model_id: str, version: str) -> HeadArrays | tuple[DeepExplainer, Any]:
        try:
            head = self.training.head(app_id, model_id, version)
        except FailedPrecondition as exc:  # a deep template: its own network, split by training
            try:
                return self._deep_net(app_id, model_id, version)
            except FailedPrecondition as deep_exc:
                raise FailedPrecondition(f"cannot explain it: {exc}; {deep_exc} (explanations run on classifiers)") from None
        if head.embedding_model:
            raise FailedPrecondition(
                f"model {model_id!r} version {head.version} was trained on the app's own embedder {head.embedding_model!r}; "
                "explanations run through the built-in backbone only"
            )
        from firstlight.models.backbone import EMBEDDING_DIM

        if head.W.ndim != 2 or head.W.shape[1] != EMBEDDING_DIM:
            raise FailedPrecondition(f"model {model_id!r} version {head.version} is not a head on the {EMBEDDING_DIM}-d backbone embedding")
        return head

    def _image_bytes(self, app_id: str, input_id: str) -> bytes:
        blobs = self.platform.blobs_of(app_id, [input_id])  # NotFound for an unknown input
        if input_id not in blobs:
            raise FailedPrecondition(f"the bytes of input {input_id!r} are no longer stored")
        return blobs[input_id]

    def _decode(self, data: bytes, label: str) -> Any:
        from firstlight.images import decode_image
        from firstlight.media.decode import model_decode_side
        from firstlight.models.backbone import IMAGE_SIZE

        lim = self.limits
        return decode_image(
            data, max_bytes=lim.max_image_bytes, max_pixels=lim.max_image_pixels, label=label, max_side=lim.max_image_side,
            min_side=model_decode_side(IMAGE_SIZE),
        ).image  # fmt: skip

    def _candidates(self, app_id: str, model_id: str, version: str) -> list[tuple[str, list[str]]]:
        """(input id, concepts) of the version's training examples: its dataset's train split as
        frozen; the app's labeled inputs when training has no record of the dataset."""
        v = self.training.version(app_id, model_id, version)
        rows = self.training.dataset_rows(app_id, v.dataset_id, v.dataset_version) if v is not None else []
        if rows:
            return [(r.input_id, list(r.concepts)) for r in rows if r.split == TRAIN_SPLIT][:MAX_CANDIDATES]
        return [(i, cs) for i, cs, _ in self.platform.inputs(app_id, labeled=True)][:MAX_CANDIDATES]

    def _evidence(self, app_id: str, model_id: str, version: str, concepts: list[str], query: np.ndarray, skip: str, n: int) -> dict[str, list]:
        wanted = set(concepts)
        cands = [(i, cs) for i, cs in self._candidates(app_id, model_id, version) if i != skip and wanted & set(cs)]
        vectors = self.platform.vectors(app_id, [i for i, _ in cands])
        cands = [(i, cs) for i, cs in cands if i in vectors]
        out: dict[str, list] = {c: [] for c in concepts}
        if not cands:
            return out
        X = projection.normalize(np.stack([vectors[i] for i, _ in cands]))
        sims = X @ query.astype(np.float32)
        for c in concepts:
            rows = [k for k, (_, cs) in enumerate(cands) if c in cs]
            best = sorted(rows, key=lambda k: -sims[k])[:n]
            out[c] = [(cands[k][0], float(sims[k]), cands[k][1]) for k in best]
        return out

    def explain(
        self,
        app_id: str,
        model_id: str,
        version: str,
        input_id: str = "",
        image_bytes: bytes = b"",
        top_k: int = 0,
        evidence: int = 0,
        method: str = "",
    ) -> Explained:
        from PIL import Image

        from firstlight.curation.quality import explain, explain_render
        from firstlight.models.backbone import IMAGE_SIZE
        from firstlight.models.preprocess import to_model_input

        validation.app_id(app_id)
        validation.input_id(model_id)
        if version and not _VERSION.fullmatch(version):
            raise InvalidArgument(f"model_version {version[:40]!r} is invalid: a version number, or empty for the serving one")
        if bool(input_id) == bool(image_bytes):
            raise InvalidArgument("give exactly one of input_id and image_bytes")
        if input_id:
            validation.input_id(input_id)
        top_k = top_k or DEFAULT_TOP_K
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k must be between 1 and {MAX_TOP_K} (got {top_k})")
        evidence = evidence or DEFAULT_EVIDENCE
        if not 1 <= evidence <= MAX_EVIDENCE:
            raise InvalidArgument(f"evidence_count must be between 1 and {MAX_EVIDENCE} (got {evidence})")
        method = method or METHODS[0]
        if method not in METHODS:
            raise InvalidArgument(f"unknown method {method!r} (available: {', '.join(METHODS)})")

        head = self._head(app_id, model_id, version)
        data = self._image_bytes(app_id, input_id) if input_id else image_bytes
        try:
            image: Image.Image = self._decode(data, f"input {input_id}" if input_id else "image_bytes")
        except InvalidArgument as exc:
            if input_id:  # a stored input that does not decode is the store's state, not a bad argument
                raise FailedPrecondition(str(exc)) from None
            raise
        pixels = to_model_input(image, IMAGE_SIZE)
        if isinstance(head, HeadArrays):
            size, meta = IMAGE_SIZE, head
            ex = explain.explain_image(self.backbone(), head.W, head.b, pixels, min(top_k, len(head.concepts)), head.activation, method)
            query = ex.embedding
        else:
            meta, module = head
            size = meta.image_size
            ex = explain.explain_deep(module, to_model_input(image, size), min(top_k, len(meta.concepts)), meta.activation, method)
            query = explain.embedding(self.backbone(), pixels)
        names = [meta.concepts[k] for k in ex.top]
        near = self._evidence(app_id, model_id, meta.version, names, query, input_id, evidence)

        shown = explain_render.display_image(image)
        box = explain_render.model_input_box(image.width, image.height, size)
        out: list[ConceptExplained] = []
        rows = []
        for name, k, raw in zip(names, ex.top, ex.maps):
            sal, inside = explain_render.place(raw, box, *shown.shape[:2])
            over = explain_render.overlay(shown, sal, inside)
            rows.append((f"{name} {float(ex.proba[k]):.2f}", sal, inside, over))
            out.append(ConceptExplained(name, float(ex.proba[k]), explain_render.png(over), raw, near[name]))
        return Explained(
            version=meta.version, template=meta.template, activation=meta.activation, method=method, concepts=out,
            grid_png=explain_render.grid_png(shown, rows), width=image.width, height=image.height, box=box, input_id=input_id,
        )  # fmt: skip
