"""Errors of the shared domain code. Each is a :mod:`firstlight.errors` type, so the one runtime
map turns it into a gRPC status: malformed arguments are INVALID_ARGUMENT, data that is well
formed but cannot be split as asked is FAILED_PRECONDITION. All are also ``ValueError`` for
plain callers."""

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
