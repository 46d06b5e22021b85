"""The one map from a peer's gRPC status back to a domain error.

It is the inverse of the server side's :data:`firstlight.runtime.status.STATUS_BY_ERROR` (one
table, read both ways); codes with no domain error of their own (DEADLINE_EXCEEDED, INTERNAL,
UNIMPLEMENTED, …) become :class:`RpcError`. Every error raised here carries the gRPC ``code``,
the peer's ``message`` and, for rate limits, ``retry_after_s`` (from ``retry-after-ms``)."""

from __future__ import annotations

from typing import Any

import grpc

from firstlight import errors
from firstlight.runtime.status import STATUS_BY_ERROR

#: gRPC status → the domain error a client raises for it.
ERROR_BY_STATUS: dict[grpc.StatusCode, type[errors.FirstlightError]] = {code: err for err, code in STATUS_BY_ERROR.items()}


class RpcError(errors.FirstlightError):
    """A failed call whose status has no domain error of its own (DEADLINE_EXCEEDED, INTERNAL…)."""


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status of an error raised by :func:`from_rpc_error` (or by a servicer's core)."""
    code = getattr(exc, "code", None)
    if isinstance(code, grpc.StatusCode):
        return code
    for error_type in type(exc).__mro__:
        if error_type in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[error_type]
    return grpc.StatusCode.INTERNAL


def _retry_after_s(exc: Any) -> float | None:
    try:
        trailing = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - a call without trailers
        return None
    for name, value in trailing:
        if name == "retry-after-ms":
            try:
                return int(value) / 1000.0
            except ValueError:
                return None
    return None


def from_rpc_error(exc: grpc.RpcError) -> errors.FirstlightError:
    """The domain error for a failed call (sync or asyncio), with ``code``, ``message`` and
    ``retry_after_s`` set on it."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    message: str = exc.details() or code.name  # type: ignore[attr-defined]
    error = ERROR_BY_STATUS.get(code, RpcError)(message)
    error.code = code  # type: ignore[attr-defined]
    error.message = message  # type: ignore[attr-defined]
    error.retry_after_s = _retry_after_s(exc)  # type: ignore[attr-defined]
    return error


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
