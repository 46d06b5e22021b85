"""TrainingService domain core: splits, dataset versions, the transfer classifier, one-shot
prototype classifiers, evaluation reports and the promotion rule.

Pure: numpy, scipy, scikit-learn (training only) and matplotlib (reports). No grpc, kafka,
qdrant or triton imports — the servicer wraps these. Every model is a :class:`LinearHead`
(``probs = softmax(X @ W.T + b)`` or sigmoid; saved with ``to_npz``) so the same Triton export
serves transfer and prototype models alike.
"""

from firstlight.domain.errors import EvaluationError, SplitError, SplitPreconditionError
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
from firstlight.domain.promotion import should_promote
from firstlight.domain.splits import (
    SPLIT_NAMES,
    check_split,
    dataset_version_id,
    stratification_keys,
    stratified_split,
)
from firstlight.training.errors import InsufficientData, InvalidSetting, TrainingError
from firstlight.training.head import LinearHead, load_head
from firstlight.training.hyper import (
    parse_prototype_settings,
    parse_settings,
    parse_transfer_settings,
)
from firstlight.training.oneshot import (
    KNNClassifier,
    PrototypeClassifier,
    PrototypeSettings,
    build_prototypes,
    train_oneshot,
)
from firstlight.training.transfer import TransferModel, TransferSettings, train_transfer

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
