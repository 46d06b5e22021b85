"""Typed domain errors: the one hierarchy. Core modules raise these; ``runtime.status`` maps them
to gRPC codes in one place (so core code never imports grpc and every RPC reports the same way),
and ``clients.errors.from_rpc_error`` maps a peer's status back to them (the same table, read the
other way). Adapters translate their libraries' failures into these (e.g. ``triton.adapter``)."""

from __future__ import annotations


class FirstlightError(Exception):
    """Base class: an error whose message is safe and useful to show to the caller."""


class InvalidArgument(FirstlightError):
    """The request is malformed: corrupt image, bad id, unknown enum, empty batch..."""


class NotFound(FirstlightError):
    """An app, input, concept or model that does not exist (in the caller's app)."""


class AlreadyExists(FirstlightError):
    """Creating something whose id is taken."""


class ResourceExhausted(FirstlightError):
    """A size, count or rate limit was exceeded."""


class FailedPrecondition(FirstlightError):
    """The system is not in a state that allows the operation (e.g. nothing indexed yet)."""


class Unavailable(FirstlightError):
    """A dependency (Triton, broker, vector store) is down; the call may be retried."""


class Unauthenticated(FirstlightError):
    """No API key, or one that is unknown or revoked."""


class PermissionDenied(FirstlightError):
    """A valid key asked for another app's data, or for an admin-only operation."""


class ModelServerError(FirstlightError):
    """The model server (Triton) answered with an error about a model: it failed to load, or it
    rejected the inputs. Retrying will not help. Not the caller's fault, so it reaches a caller
    as INTERNAL unless a core says what it means there (e.g. FAILED_PRECONDITION)."""


class ModelNotServed(ModelServerError):
    """The model server has no such model (never exported, removed, or it failed to load)."""
