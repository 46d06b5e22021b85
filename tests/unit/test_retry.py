"""The retry policy: which errors it retries, how long it waits, and that it gives up."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from firstlight.runtime import retry
from firstlight.runtime.retry import Backoff, RetryPolicy


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def flaky(failures: list[BaseException]):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if failures:
            raise failures.pop(0)
        return "ok"

    return fn, calls


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    return slept


def test_retries_unavailable_until_success(no_sleep: list[float]) -> None:
    fn, calls = flaky([FakeRpcError(grpc.StatusCode.UNAVAILABLE)] * 3)
    assert RetryPolicy(attempts=5).call(fn) == "ok"
    assert calls["n"] == 4 and len(no_sleep) == 3


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.INTERNAL],
)
def test_does_not_retry_other_statuses(code: grpc.StatusCode) -> None:
    fn, calls = flaky([FakeRpcError(code)])
    with pytest.raises(FakeRpcError):
        RetryPolicy().call(fn)
    assert calls["n"] == 1


def test_non_grpc_errors_are_not_retried() -> None:
    fn, calls = flaky([ValueError("bug")])
    with pytest.raises(ValueError):
        RetryPolicy().call(fn)
    assert calls["n"] == 1


def test_gives_up_after_attempts_with_the_last_error() -> None:
    fn, calls = flaky([FakeRpcError(grpc.StatusCode.UNAVAILABLE)] * 10)
    with pytest.raises(FakeRpcError):
        RetryPolicy(attempts=3).call(fn)
    assert calls["n"] == 3


def test_gives_up_when_the_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"t": 0.0}
    monkeypatch.setattr(retry.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(retry.time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + s))
    fn, calls = flaky([FakeRpcError(grpc.StatusCode.UNAVAILABLE)] * 100)
    policy = RetryPolicy(attempts=100, initial_s=1.0, max_s=4.0, budget_s=20.0)
    with pytest.raises(FakeRpcError):
        policy.call(fn)
    assert clock["t"] <= 20.0 and 5 <= calls["n"] < 100


def test_delays_grow_exponentially_with_full_jitter() -> None:
    policy = RetryPolicy(attempts=8, initial_s=0.1, multiplier=2.0, max_s=1.0)
    samples = [list(policy.delays(random.Random(seed))) for seed in range(300)]
    assert all(len(s) == 7 for s in samples)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    for n, ceiling in enumerate(ceilings):
        column = [s[n] for s in samples]
        assert all(0.0 <= d <= ceiling for d in column)
        assert max(column) > 0.8 * ceiling and min(column) < 0.2 * ceiling  # jittered over the range
    assert len({s[0] for s in samples}) > 250  # clients do not retry in lockstep


def test_async_twin_retries() -> None:
    failures = [FakeRpcError(grpc.StatusCode.UNAVAILABLE)] * 2
    calls = {"n": 0}

    async def fn() -> str:
        calls["n"] += 1
        if failures:
            raise failures.pop(0)
        return "ok"

    assert asyncio.run(RetryPolicy(initial_s=0.001).acall(fn)) == "ok"
    assert calls["n"] == 3


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(0.5, 4.0, rng=random.Random(1))
    delays = [b.next() for _ in range(8)]
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))  # grows, jittered, never a busy loop
    assert len(set(delays)) == len(delays) and b.ceiling == 4.0
    b.reset()
    assert b.next() <= 0.5
