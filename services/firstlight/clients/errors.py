"""The one map from a peer's gRPC status back to a domain error.

It is the inverse of the server side's :data:`firstlight.runtime.status.STATUS_BY_ERROR` (one
table, read both ways, both in ``runtime.status``); codes with no domain error of their own
(DEADLINE_EXCEEDED, INTERNAL, UNIMPLEMENTED, …) become :class:`RpcError`. Every error raised
here carries the gRPC ``code``, the peer's ``message`` and, for rate limits, ``retry_after_s``
(from ``retry-after-ms``). :func:`as_peer_failure` says how a service reports a peer's failure
to its own caller."""

from __future__ import annotations

from firstlight import errors
from firstlight.runtime.status import ERROR_BY_STATUS, RpcError, code_of, from_rpc_error

__all__ = ["ERROR_BY_STATUS", "RpcError", "as_peer_failure", "code_of", "from_rpc_error"]

#: Errors about the request itself: a peer's answer keeps its meaning for our own caller.
_REQUEST_ERRORS: tuple[type[errors.FirstlightError], ...] = (
    errors.InvalidArgument, errors.NotFound, errors.AlreadyExists, errors.FailedPrecondition, errors.ResourceExhausted,
)


def as_peer_failure(error: errors.FirstlightError, context: str = "") -> errors.FirstlightError:
    """A peer's failure (from :func:`from_rpc_error`) as the service that called it on behalf of
    its own caller reports it. Errors about the request keep their type; anything else (the
    peer down or too slow, an INTERNAL there, or the peer refusing *our* internal key) is this
    service's dependency being unavailable: UNAVAILABLE, so the caller may retry, never
    UNAUTHENTICATED for a caller whose own key was fine. ``context`` prefixes the message."""
    message = f"{context}{getattr(error, 'message', None) or error}"
    kind = next((t for t in _REQUEST_ERRORS if isinstance(error, t)), errors.Unavailable)
    return kind(message)
