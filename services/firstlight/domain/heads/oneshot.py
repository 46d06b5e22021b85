"""One-shot / k-shot classification by visual similarity.

:class:`PrototypeClassifier`: each concept's prototype is the L2-normalised mean of its (L2-
normalised) example embeddings; an input scores ``cos(x, p_c)`` with every prototype and
``probs = softmax(cos / tau)``. That is a :class:`LinearHead` with ``W = P / tau``, ``b = 0`` and
``normalize=True`` — so a prototype model is saved, loaded, served and exported to Triton exactly
like a trained transfer head ("a model like any other").

:class:`KNNClassifier` (optional variant): soft vote of the k most similar examples, weighted by
``exp(cos / tau)``. It keeps the examples, so it is not a linear head (not Triton-exportable as
one); useful for comparison when concepts are multi-modal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from firstlight.domain.errors import InsufficientData, InvalidSetting, TrainingError
from firstlight.domain.heads.linear import Kind, LinearHead, l2_normalize, register_loader, register_template, softmax

PROTOTYPE_TEMPLATE = "oneshot_classifier"
KNN_TEMPLATE = "knn_classifier"
DEFAULT_TAU = 0.05
TAU_RANGE = (1e-3, 10.0)
K_RANGE = (1, 1000)


@dataclass(frozen=True)
class PrototypeSettings:
    """``tau``: softmax temperature on cosine similarities (smaller: more confident).
    ``knn_k``: neighbours for :class:`KNNClassifier`."""

    tau: float = DEFAULT_TAU
    knn_k: int = 5
    #: k of k-shot: examples drawn per concept from the training rows (0: use them all).
    examples_per_concept: int = 0
    #: Which k examples are drawn.
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.examples_per_concept, bool) or not isinstance(self.examples_per_concept, (int, np.integer)) or not 0 <= self.examples_per_concept <= K_RANGE[1]:
            raise InvalidSetting("examples_per_concept", f"must be an integer in [0, {K_RANGE[1]}], got {self.examples_per_concept!r}")
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float, np.floating)) or not math.isfinite(self.tau):
            raise InvalidSetting("tau", f"must be a finite number, got {self.tau!r}")
        if not TAU_RANGE[0] <= self.tau <= TAU_RANGE[1]:
            raise InvalidSetting("tau", f"must be in [{TAU_RANGE[0]:g}, {TAU_RANGE[1]:g}], got {self.tau!r}")
        if isinstance(self.knn_k, bool) or not isinstance(self.knn_k, (int, np.integer)) or not K_RANGE[0] <= self.knn_k <= K_RANGE[1]:
            raise InvalidSetting("knn_k", f"must be an integer in [{K_RANGE[0]}, {K_RANGE[1]}], got {self.knn_k!r}")
        object.__setattr__(self, "tau", float(self.tau))
        object.__setattr__(self, "knn_k", int(self.knn_k))


def _support(
    X: np.ndarray, labels: Sequence[str | Sequence[str]], concepts: Sequence[str] | None, *, multi: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Normalised examples, (row, concept index) pairs, the concept list; checks shapes and
    coverage. ``multi``: a row may carry several concepts (it counts as an example of each)."""
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"X is not a numeric matrix: {exc}") from None
    if X.ndim != 2 or X.shape[0] == 0:
        raise TrainingError(f"X must be a non-empty [N, D] matrix, got shape {list(X.shape)}")
    if not np.isfinite(X).all():
        raise TrainingError("X contains NaN or infinity")
    if len(labels) != X.shape[0]:
        raise TrainingError(f"X has {X.shape[0]} rows but there are {len(labels)} labels")
    flat: list[str] = []
    rows: list[int] = []
    for i, lab in enumerate(labels):
        labs = [lab] if isinstance(lab, str) else list(dict.fromkeys(lab))
        if not labs or (len(labs) != 1 and not multi):
            raise TrainingError(f"example {i} has {len(labs)} concepts; an example needs exactly one")
        flat += [str(c) for c in labs]
        rows += [i] * len(labs)
    concepts = sorted(set(flat)) if concepts is None else [str(c) for c in concepts]
    if len(set(concepts)) != len(concepts):
        raise TrainingError("concepts contain duplicates")
    index = {c: k for k, c in enumerate(concepts)}
    unknown = [c for c in flat if c not in index]
    if unknown:
        raise TrainingError(f"example labeled {unknown[0]!r}, which is not one of the concepts")
    if len(concepts) < 2:
        raise InsufficientData(f"a classifier needs at least two concepts, got {len(concepts)}")
    y = np.array([index[c] for c in flat], dtype=np.int64)
    counts = np.bincount(y, minlength=len(concepts))
    missing = [c for c, k in zip(concepts, counts) if k == 0]
    if missing:
        raise InsufficientData(f"concept {missing[0]!r} has no example; one-shot needs at least one per concept")
    norms = np.linalg.norm(X, axis=1)
    if (norms == 0).any():
        raise TrainingError(f"example {int(np.flatnonzero(norms == 0)[0])} is an all-zero embedding")
    return l2_normalize(X), np.array(rows, dtype=np.int64), y, concepts


@register_template
@dataclass
class PrototypeClassifier(LinearHead):
    """A linear head whose rows are prototypes / tau. Build it with :func:`build_prototypes`."""

    tau: float = DEFAULT_TAU
    shots: dict[str, int] = field(default_factory=dict)  # examples per concept

    template: ClassVar[str] = PROTOTYPE_TEMPLATE

    @property
    def prototypes(self) -> np.ndarray:
        """[K, D] unit prototypes."""
        return l2_normalize(self.W.astype(np.float64) * self.tau)

    def cosine(self, X: np.ndarray) -> np.ndarray:
        """[N, K] cosine similarity of each input with each prototype."""
        return self.logits(X) * self.tau

    def meta(self) -> dict[str, Any]:
        return {"template": self.template, "tau": self.tau, "shots": dict(self.shots), "dim": self.dim}

    @classmethod
    def _from_arrays(
        cls, concepts: list[str], W: np.ndarray, b: np.ndarray, kind: Kind, normalize: bool, meta: dict[str, Any]
    ) -> PrototypeClassifier:
        return cls(concepts=concepts, W=W, b=b, kind=kind, normalize=normalize, tau=float(meta["tau"]), shots=dict(meta.get("shots", {})))


def build_prototypes(
    X: np.ndarray,
    labels: Sequence[str | Sequence[str]],
    concepts: Sequence[str] | None = None,
    *,
    tau: float = DEFAULT_TAU,
) -> PrototypeClassifier:
    """Prototype classifier from k >= 1 labeled embeddings per concept (``labels[i]``: the
    concept of row i, or a list of concepts — the row then counts as an example of each).
    ``concepts`` fixes the output order (default: sorted labels)."""
    tau = PrototypeSettings(tau=tau).tau
    Xn, rows, y, concepts = _support(X, labels, concepts, multi=True)
    K, D = len(concepts), Xn.shape[1]
    sums = np.zeros((K, D), dtype=np.float64)
    np.add.at(sums, y, Xn[rows])
    norms = np.linalg.norm(sums, axis=1)
    if (norms < 1e-12).any():
        bad = concepts[int(np.flatnonzero(norms < 1e-12)[0])]
        raise TrainingError(f"the examples of concept {bad!r} cancel out (their mean embedding is zero)")
    protos = sums / norms[:, None]
    counts = np.bincount(y, minlength=K)
    return PrototypeClassifier(
        concepts=concepts,
        W=protos / tau,
        b=np.zeros(K),
        kind="softmax",
        normalize=True,
        tau=tau,
        shots={c: int(k) for c, k in zip(concepts, counts)},
    )


def train_oneshot(
    X: np.ndarray,
    Y: Sequence[str | Sequence[str]],
    concepts: Sequence[str],
    settings: PrototypeSettings | None = None,
) -> PrototypeClassifier:
    """The ``oneshot_classifier`` template, called like ``train_transfer``: prototypes from the
    training rows, or from ``examples_per_concept`` of them per concept drawn with ``seed``."""
    settings = settings or PrototypeSettings()
    if settings.examples_per_concept:
        rng = np.random.default_rng(settings.seed)
        first = [y if isinstance(y, str) else y[0] for y in Y]
        keep: list[int] = []
        for concept in concepts:
            rows = [i for i, c in enumerate(first) if c == concept]
            keep += sorted(rng.choice(rows, size=min(settings.examples_per_concept, len(rows)), replace=False).tolist()) if rows else []
        X = np.asarray(X)[keep]
        Y = [Y[i] for i in keep]
    return build_prototypes(X, Y, concepts, tau=settings.tau)


@dataclass
class KNNClassifier:
    """Soft k-nearest-neighbour vote over stored examples (cosine similarity)."""

    concepts: list[str]
    examples: np.ndarray  # [M, D] unit rows
    example_labels: np.ndarray  # [M] concept index
    k: int = 5
    tau: float = DEFAULT_TAU

    template: ClassVar[str] = KNN_TEMPLATE
    kind: ClassVar[str] = "softmax"

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        labels: Sequence[str | Sequence[str]],
        concepts: Sequence[str] | None = None,
        *,
        k: int = 5,
        tau: float = DEFAULT_TAU,
    ) -> KNNClassifier:
        s = PrototypeSettings(tau=tau, knn_k=k)
        Xn, _, y, concepts = _support(X, labels, concepts)
        return cls(concepts=concepts, examples=Xn.astype(np.float32), example_labels=y, k=s.knn_k, tau=s.tau)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.examples.shape[1]:
            raise TrainingError(f"expected embeddings of shape [N, {self.examples.shape[1]}], got {list(X.shape)}")
        sims = (l2_normalize(X) @ self.examples.T).astype(np.float64)  # [N, M]
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        w = softmax(top_sims / self.tau)  # stable exp(cos / tau), normalised per row
        out = np.zeros((X.shape[0], len(self.concepts)))
        np.add.at(out, (np.repeat(np.arange(X.shape[0]), k), self.example_labels[top].ravel()), w.ravel())
        return out

    def predict(self, X: np.ndarray) -> list[str]:
        return [self.concepts[i] for i in self.predict_proba(X).argmax(axis=1)]

    def to_npz(self, path: str | Path) -> Path:
        path = Path(path)
        with path.open("wb") as fh:
            np.savez(
                fh,
                template=np.str_(self.template),
                concepts=np.array(self.concepts, dtype=np.str_),
                examples=self.examples,
                example_labels=self.example_labels,
                meta=np.str_(json.dumps({"k": self.k, "tau": self.tau})),
            )
        return path

    @classmethod
    def from_npz(cls, path: str | Path) -> KNNClassifier:
        with np.load(Path(path), allow_pickle=False) as z:
            if str(z["template"]) != KNN_TEMPLATE:
                raise TrainingError(f"{path} holds a {str(z['template'])!r} model, not a kNN classifier")
            meta = json.loads(str(z["meta"]))
            return cls(
                concepts=[str(c) for c in z["concepts"]],
                examples=z["examples"],
                example_labels=z["example_labels"],
                k=int(meta["k"]),
                tau=float(meta["tau"]),
            )


register_loader(KNN_TEMPLATE, KNNClassifier.from_npz)
