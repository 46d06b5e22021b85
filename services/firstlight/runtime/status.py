"""The one table between domain errors and gRPC status codes, read both ways.

Servicers are wrapped with :func:`map_errors`: a :class:`FirstlightError` becomes its status
with its message; anything else becomes INTERNAL with an opaque incident id (the traceback
goes to the log, never to the client). A caller reads a peer's status back with
:func:`from_rpc_error` (exported as ``firstlight.clients.errors.from_rpc_error``; it lives here,
beside its table, so the runtime's own calls use it without depending on ``clients``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from typing import Any, Callable

import grpc

from firstlight import errors

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[errors.FirstlightError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(code, message) to send for an exception raised inside an RPC."""
    for error_type in type(exc).__mro__:
        if error_type in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[error_type], str(exc)
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s", incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the service log"


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    code, message = status_for(exc)
    await context.abort(code, message)


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                async for item in method(self, request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - mapped, never leaked
                await _abort(context, exc)

        return stream_wrapper

    @functools.wraps(method)
    async def unary_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped, never leaked
            await _abort(context, exc)

    return unary_wrapper


def map_errors(cls: type) -> type:
    """Class decorator: wrap every public coroutine RPC method of a servicer."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member):
            setattr(cls, name, _wrap(member))
    return cls


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
