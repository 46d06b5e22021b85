"""Training errors. Each is a :mod:`firstlight.errors` type, so ``runtime.status`` maps it to a
gRPC code with no extra table: malformed settings or data are INVALID_ARGUMENT, data that is
well formed but not enough to train on (a concept with no labeled inputs, a split that leaves a
concept out of validation) is FAILED_PRECONDITION. All are also ``ValueError`` for plain callers.
"""

from __future__ import annotations

from firstlight.domain.errors import EvaluationError, SplitError, SplitPreconditionError
from firstlight.errors import FailedPrecondition, InvalidArgument

__all__ = ["EvaluationError", "InsufficientData", "InvalidSetting", "SplitError", "SplitPreconditionError", "TrainingError"]


class InvalidSetting(InvalidArgument, ValueError):
    """A training setting is unknown, of the wrong type or out of range. ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"setting {key!r}: {message}")
        self.key = key


class TrainingError(InvalidArgument, ValueError):
    """The training data is malformed (shapes, unknown concepts, a row with two labels where
    concepts are mutually exclusive...)."""


class InsufficientData(FailedPrecondition, TrainingError):
    """The data is well formed but cannot train a model: fewer than two concepts, a concept with
    no labeled inputs (or, for independent sigmoids, no negatives). Maps to FAILED_PRECONDITION."""
