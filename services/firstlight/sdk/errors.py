"""The SDK's errors: the :mod:`firstlight.errors` hierarchy, mapped from a failed call by the one
gRPC status map (:mod:`firstlight.clients.errors`).

Every error carries ``code`` (the gRPC status), ``message`` (the service's words) and
``retry_after_s``; its text reads ``"<CODE>: <message>"`` (what SDK users have always matched on,
e.g. ``pytest.raises(FirstlightError, match="NOT_FOUND")``)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import grpc

from firstlight.clients.errors import ERROR_BY_STATUS, RpcError, from_rpc_error
from firstlight.errors import FirstlightError

__all__ = ["FirstlightError", "error_for", "from_rpc", "wrap_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def _labelled(error: FirstlightError, code: grpc.StatusCode, message: str) -> FirstlightError:
    error.args = (f"{code.name}: {message}",)
    return error


def error_for(code: grpc.StatusCode, message: str) -> FirstlightError:
    """The domain error the SDK raises for ``code`` (e.g. a training job that ended FAILED)."""
    error = ERROR_BY_STATUS.get(code, RpcError)(message)
    vars(error).update(code=code, message=message, retry_after_s=None)  # as from_rpc_error sets them
    return _labelled(error, code, message)


def from_rpc(exc: grpc.RpcError) -> FirstlightError:
    """``from_rpc_error``, with the SDK's ``"<CODE>: <message>"`` text."""
    error = from_rpc_error(exc)
    return _labelled(error, vars(error)["code"], vars(error)["message"])


def wrap_errors(fn: F) -> F:
    """An SDK method whose failed calls raise :func:`from_rpc` errors (generators too, while
    they are iterated). The raw stubs (``client.ingestion`` …) keep raising ``grpc.RpcError``."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except grpc.RpcError as exc:
                raise from_rpc(exc) from None

        return cast(F, iterate)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise from_rpc(exc) from None

    return cast(F, call)
