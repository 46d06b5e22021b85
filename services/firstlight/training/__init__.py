"""The training service. Its domain is :mod:`firstlight.training.core` (behind the ports of
:mod:`firstlight.training.ports`); the pure code it shares with other services (splits, dataset
versions, heads, evaluation reports, the promotion rule) lives in :mod:`firstlight.domain`, and
is re-exported here for callers of the older paths. Every head is a :class:`LinearHead`
(``probs = softmax(X @ W.T + b)`` or sigmoid; saved with ``to_npz``) so the same Triton export
serves transfer and prototype models alike.
"""

from firstlight.domain.errors import (
    EvaluationError,
    InsufficientData,
    InvalidSetting,
    SplitError,
    SplitPreconditionError,
    TrainingError,
)
from firstlight.domain.evaluation import (
    Comparison,
    ConceptMetrics,
    EvaluationReport,
    ReliabilityBin,
    compare,
    confusion_matrix_png,
    evaluate,
    headline,
    render_comparison_markdown,
    render_confusion_matrix_png,
    render_report_html,
    render_report_markdown,
)
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
from firstlight.domain.promotion import should_promote
from firstlight.domain.splits import (
    SPLIT_NAMES,
    check_split,
    dataset_version_id,
    stratification_keys,
    stratified_split,
)
from firstlight.training.hyper import (
    parse_prototype_settings,
    parse_settings,
    parse_transfer_settings,
)

__all__ = [
    "SPLIT_NAMES",
    "Comparison",
    "ConceptMetrics",
    "EvaluationError",
    "EvaluationReport",
    "InsufficientData",
    "InvalidSetting",
    "KNNClassifier",
    "LinearHead",
    "PrototypeClassifier",
    "PrototypeSettings",
    "ReliabilityBin",
    "SplitError",
    "SplitPreconditionError",
    "TrainingError",
    "TransferModel",
    "TransferSettings",
    "build_prototypes",
    "check_split",
    "compare",
    "confusion_matrix_png",
    "dataset_version_id",
    "evaluate",
    "headline",
    "load_head",
    "parse_prototype_settings",
    "parse_settings",
    "parse_transfer_settings",
    "render_comparison_markdown",
    "render_confusion_matrix_png",
    "render_report_html",
    "render_report_markdown",
    "should_promote",
    "stratification_keys",
    "stratified_split",
    "train_oneshot",
    "train_transfer",
]
