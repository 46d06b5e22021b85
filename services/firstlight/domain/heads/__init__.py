"""Classifier heads on embeddings, shared by training (which trains and exports them) and
curation (which fits and reads them): every model is a :class:`LinearHead` (``softmax(X @ W.T + b)``
or sigmoid), saved with ``to_npz``, except the kNN variant which registers its own loader.
Numpy and scipy only."""

from firstlight.domain.heads.linear import LinearHead, load_head
from firstlight.domain.heads.oneshot import (
    KNNClassifier,
    PrototypeClassifier,
    PrototypeSettings,
    build_prototypes,
    train_oneshot,
)
from firstlight.domain.heads.transfer import (
    TransferModel,
    TransferSettings,
    train_transfer,
)

__all__ = [
    "KNNClassifier", "LinearHead", "PrototypeClassifier", "PrototypeSettings", "TransferModel", "TransferSettings",
    "build_prototypes", "load_head", "train_oneshot", "train_transfer",
]  # fmt: skip
