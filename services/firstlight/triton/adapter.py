"""Triton's failures as domain errors, for the cores (which import no tritonclient/grpc).

:class:`DomainErrors` wraps a :class:`firstlight.triton.client.TritonModels` (or anything with
its methods): every call behaves the same, but Triton being unreachable raises
``errors.Unavailable``, a model it does not have ``errors.ModelNotServed`` and any other answer
of Triton's ``errors.ModelServerError``."""

from __future__ import annotations

import functools
from typing import Any

from firstlight import errors
from firstlight.triton.client import TritonError, TritonModelNotFound, TritonUnavailable


def translate(exc: BaseException) -> BaseException:
    if isinstance(exc, TritonUnavailable):
        return errors.Unavailable(f"model server unavailable: {exc}")
    if isinstance(exc, TritonModelNotFound):
        return errors.ModelNotServed(str(exc))
    if isinstance(exc, TritonError):
        return errors.ModelServerError(str(exc))
    return exc


class DomainErrors:
    def __init__(self, models: Any) -> None:
        self._models = models

    @property
    def models(self) -> Any:
        """The wrapped client (for the process's own use: probes, residency)."""
        return self._models

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._models, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except (TritonError, TritonUnavailable) as exc:
                raise translate(exc) from exc

        return call
