"""Issue 14, item 7: the SDK waits out a key's rate limit (RESOURCE_EXHAUSTED with the server's
``retry-after-ms``) instead of failing; other RESOURCE_EXHAUSTED errors are not retried."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from firstlight import sdk
from firstlight.sdk import transport


class Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        self._code, self._trailing = code, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing

    def details(self) -> str:
        return "refused"


def test_rate_limited_calls_are_retried_after_the_servers_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(transport.time, "sleep", slept.append)
    outcomes = [Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, (("retry-after-ms", "120"),))] * 2 + ["ok"]

    def call() -> str:
        out = outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out

    assert sdk.honour_rate_limit(call) == "ok"
    assert len(slept) == 2 and all(0.12 <= s <= 0.17 for s in slept)


def test_other_errors_and_spent_budgets_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport.time, "sleep", lambda s: None)
    too_big = Refused(grpc.StatusCode.RESOURCE_EXHAUSTED)  # a size limit: no retry-after-ms
    calls = []

    def refuse(exc: Exception) -> Callable[[], None]:
        def call() -> None:
            calls.append(1)
            raise exc

        return call

    with pytest.raises(Refused):
        sdk.honour_rate_limit(refuse(too_big))
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(Refused):
        sdk.honour_rate_limit(refuse(Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, (("retry-after-ms", "100"),))), attempts=3)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(Refused):  # a wait past the budget is not waited
        sdk.honour_rate_limit(refuse(Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, (("retry-after-ms", "60000"),))))
    assert len(calls) == 1
