"""Errors of the shared domain code. Each is a :mod:`firstlight.errors` type, so the one runtime
map turns it into a gRPC status: malformed settings or data are INVALID_ARGUMENT, data that is
well formed but not enough to train on or to split as asked (a concept with no labeled inputs, a
split that leaves a concept out of validation) is FAILED_PRECONDITION. All are also
``ValueError`` for plain callers."""

from __future__ import annotations

from firstlight.errors import FailedPrecondition, InvalidArgument


class SplitError(InvalidArgument, ValueError):
    """Split arguments are invalid (fractions not summing to 1, counts larger than the data...)."""


class SplitPreconditionError(FailedPrecondition, SplitError):
    """The data cannot be split as asked: a concept would be absent from train or validation
    (e.g. it has a single labeled input). Maps to FAILED_PRECONDITION; ``concept`` names it."""

    def __init__(self, message: str, concept: str | None = None) -> None:
        super().__init__(message)
        self.concept = concept


class EvaluationError(InvalidArgument, ValueError):
    """Evaluation inputs are inconsistent (shapes, labels that are not model concepts...)."""


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
