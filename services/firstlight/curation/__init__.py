"""CurationService core: which inputs to label next, which labels look wrong, has traffic drifted.

Pure modules (numpy / scikit-learn only; no grpc, kafka, qdrant or tritonclient):

- ``strategies``: pool-based active-learning selection (``select``, ``STRATEGIES``,
  ``DEFAULT_STRATEGY``, ``Suggestion``).
- ``label_errors``: confident learning on out-of-fold probabilities (``out_of_fold_proba``,
  ``find_label_issues``, ``LabelIssue``).
- ``drift``: embedding / predicted-class drift between training data and recent traffic
  (``drift_report``, ``DriftReport``).
- ``simulate``: the oracle benchmark that checks a strategy beats random (``run_benchmark``,
  ``BenchmarkResult``).

Offline tooling (imports torch through the backbone): ``al_data`` caches real embeddings,
``benchmark`` is the command line that runs ``simulate`` on them.
"""

from firstlight.curation.drift import DriftReport, drift_report
from firstlight.curation.label_errors import LabelIssue, find_label_issues, out_of_fold_proba
from firstlight.curation.strategies import DEFAULT_STRATEGY, STRATEGIES, Suggestion, select

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "DriftReport",
    "LabelIssue",
    "Suggestion",
    "drift_report",
    "find_label_issues",
    "out_of_fold_proba",
    "select",
]
