"""A trained classifier head as plain arrays: ``probs = softmax(X @ W.T + b)`` (or sigmoid).

Every model the training service produces (transfer classifier, prototype classifier) is a
:class:`LinearHead`, so they share ``predict_proba``, the ``.npz`` format and the Triton export.
Prediction is numpy only (no sklearn).

The ``.npz`` holds (``allow_pickle=False``-loadable):

- ``W`` float32 [K, D], ``b`` float32 [K], ``concepts`` unicode [K]
- ``kind``: ``"softmax"`` or ``"sigmoid"``
- ``normalize``: bool — L2-normalise each input row before ``X @ W.T`` (prototype heads)
- ``template``: which trainer made it; ``meta``: a JSON string (training report, settings)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from firstlight.domain.errors import TrainingError

Kind = Literal["softmax", "sigmoid"]


def as_kind(value: str) -> Kind:
    """``value`` as a head's activation kind (a TrainingError for anything else)."""
    if value == "softmax":
        return "softmax"
    if value == "sigmoid":
        return "sigmoid"
    raise TrainingError(f"kind must be 'softmax' or 'sigmoid', got {value!r}")
NPZ_FORMAT = 1


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def sigmoid(logits: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large |z|.
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def l2_normalize(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


@dataclass
class LinearHead:
    """``concepts[k]`` is scored by row ``W[k]`` and bias ``b[k]``."""

    concepts: list[str]
    W: np.ndarray
    b: np.ndarray
    kind: Kind = "softmax"
    normalize: bool = False

    template: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        self.concepts = [str(c) for c in self.concepts]
        self.W = np.ascontiguousarray(self.W, dtype=np.float32)
        self.b = np.ascontiguousarray(self.b, dtype=np.float32).reshape(-1)
        if self.W.ndim != 2 or self.W.shape[0] != len(self.concepts) or self.b.shape != (len(self.concepts),):
            raise TrainingError(
                f"head shapes disagree: {len(self.concepts)} concepts, W {self.W.shape}, b {self.b.shape}"
            )
        if self.kind not in ("softmax", "sigmoid"):
            raise TrainingError(f"kind must be 'softmax' or 'sigmoid', got {self.kind!r}")

    @property
    def dim(self) -> int:
        return int(self.W.shape[1])

    @property
    def activation(self) -> Kind:
        """Same as ``kind`` (the name the Triton export and events use)."""
        return self.kind

    def logits(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise TrainingError(f"expected embeddings of shape [N, {self.dim}], got {list(X.shape)}")
        if self.normalize:
            X = l2_normalize(X)
        return (X @ self.W.T + self.b).astype(np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[N, K] float64: rows sum to 1 (softmax) or independent per-concept probabilities."""
        z = self.logits(X)
        return softmax(z) if self.kind == "softmax" else sigmoid(z)

    def predict(self, X: np.ndarray) -> list[str]:
        """Top-1 concept per row."""
        return [self.concepts[i] for i in self.predict_proba(X).argmax(axis=1)]

    # -- persistence -----------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """JSON-safe extra fields stored with the arrays (subclasses add their report)."""
        return {}

    def report(self) -> dict[str, Any]:
        """JSON-safe description of the head (subclasses: their training report)."""
        return {"template": self.template, "kind": self.kind, "normalize": self.normalize, "dim": self.dim, **self.meta()}

    def to_npz(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("wb") as fh:  # np.savez would append ".npz" to a str path without it
            np.savez(
                fh,
                format=np.int64(NPZ_FORMAT),
                template=np.str_(self.template),
                kind=np.str_(self.kind),
                normalize=np.bool_(self.normalize),
                concepts=np.array(self.concepts, dtype=np.str_),
                W=self.W,
                b=self.b,
                meta=np.str_(json.dumps(self.meta(), sort_keys=True)),
            )
        return path

    @classmethod
    def _from_arrays(cls, concepts: list[str], W: np.ndarray, b: np.ndarray, kind: Kind, normalize: bool, meta: dict[str, Any]) -> LinearHead:
        return cls(concepts=concepts, W=W, b=b, kind=kind, normalize=normalize)

    @classmethod
    def from_npz(cls, path: str | Path) -> LinearHead:
        with np.load(Path(path), allow_pickle=False) as z:
            if int(z["format"]) != NPZ_FORMAT:
                raise TrainingError(f"{path}: unsupported head format {int(z['format'])}")
            template = str(z["template"])
            target = _TEMPLATES.get(template, LinearHead) if cls is LinearHead else cls
            if cls is not LinearHead and template != cls.template:
                raise TrainingError(f"{path} holds a {template!r} head, not {cls.template!r}")
            return target._from_arrays(
                [str(c) for c in z["concepts"]],
                z["W"],
                z["b"],
                as_kind(str(z["kind"])),
                bool(z["normalize"]),
                json.loads(str(z["meta"])),
            )


_TEMPLATES: dict[str, type[LinearHead]] = {LinearHead.template: LinearHead}
# Models saved in a format of their own (not LinearHead's arrays), by template: each module
# registers its loader, so this base module never imports the models built on it.
_LOADERS: dict[str, Callable[[Path], Any]] = {}


def register_template(cls: type[LinearHead]) -> type[LinearHead]:
    _TEMPLATES[cls.template] = cls
    return cls


def register_loader(template: str, load: Callable[[Path], Any]) -> None:
    """``load_head`` reads files of ``template`` with ``load`` (e.g. the kNN classifier)."""
    _LOADERS[template] = load


def load_head(path: str | Path, concepts: Sequence[str] | None = None) -> Any:
    """Load a model saved by ``to_npz`` as its own class (TransferModel, PrototypeClassifier, or
    KNNClassifier for the kNN variant) — or a Triton export's ``weights.npz`` (arrays ``W``,
    ``b``, ``activation``, optional ``normalize``; concepts kept beside it, so pass
    ``concepts``) as a plain :class:`LinearHead`. ``concepts``, when given, must match a
    self-describing file's own."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        template = str(z["template"]) if "template" in files else ""
        if "format" not in files and template not in _LOADERS:
            if concepts is None:
                raise TrainingError(f"{path} does not list its concepts; pass them")
            if not {"W", "b"} <= files:
                raise TrainingError(f"{path} is not a classifier head (no W and b arrays)")
            kind = str(z["activation"]) if "activation" in files else str(z["kind"]) if "kind" in files else "softmax"
            normalize = bool(z["normalize"]) if "normalize" in files else False
            return LinearHead(concepts=list(concepts), W=z["W"], b=z["b"], kind=as_kind(kind), normalize=normalize)
    if template in _LOADERS:
        head: Any = _LOADERS[template](path)
    else:
        head = LinearHead.from_npz(path)
    if concepts is not None and list(head.concepts) != [str(c) for c in concepts]:
        raise TrainingError(f"{path} holds concepts {head.concepts}, expected {list(concepts)}")
    return head
