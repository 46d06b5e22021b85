"""Moved: the ``inputs.submit`` gate is a rule of the auth core (``auth.core.SubmissionGate``)."""

from firstlight.auth.core import SubmissionGate  # shim: removed after the branches merge

__all__ = ["SubmissionGate"]
