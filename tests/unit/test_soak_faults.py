"""The soak's pieces that need no stack: the kill plan's syntax, the retry counter (it counts the
retries granted, not the final failure), and the reconciliation's verdict."""

from __future__ import annotations

import grpc
import pytest

from bench.faults import CountingRetry, PlannedKill, parse_kill
from bench.load import reconcile


class Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


class Invalid(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.INVALID_ARGUMENT


def test_kill_plan() -> None:
    assert parse_kill("broker@600") == PlannedKill("broker", 600.0)
    assert parse_kill("triton@12.5") == PlannedKill("triton", 12.5)
    for bad in ("broker", "qdrant@10", "broker@-1", "broker@10s", " broker@1@2"):
        with pytest.raises(ValueError):
            parse_kill(bad)


def test_counting_retry_counts_granted_retries_only() -> None:
    policy = CountingRetry(attempts=5, initial_s=0.0, max_s=0.0, budget_s=10.0)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Unavailable()
        return "ok"

    assert policy.call(flaky) == "ok"
    assert policy.counter.total() == 2 and policy.counter.snapshot() == {"UNAVAILABLE": 2}
    with pytest.raises(Invalid):
        policy.call(lambda: (_ for _ in ()).throw(Invalid()))
    assert policy.counter.total() == 2  # not retryable: no retry counted
    with pytest.raises(Unavailable):
        policy.call(lambda: (_ for _ in ()).throw(Unavailable()))
    assert policy.counter.total() == 2 + 4  # 5 attempts: 4 retries, then the last failure


class FakeAdmin:
    """search.GetVectors, list_inputs and indexed_count of an SDK client, from lists."""

    def __init__(self, indexed: list[str], listed: list[str]) -> None:
        self.indexed, self.listed = indexed, listed
        self.search = self

    def GetVectors(self, request, timeout=None):
        wanted = set(request.input_ids)
        vectors = [type("V", (), {"input_id": i}) for i in self.indexed if i in wanted]
        return type("R", (), {"vectors": vectors})

    def list_inputs(self, app_id, page_size=100):
        return [type("I", (), {"id": i}) for i in self.listed]

    def indexed_count(self, app_id):
        return len(self.indexed)


def test_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.load.time.sleep", lambda _s: None)
    ok = reconcile(FakeAdmin(["a", "b"], ["a", "b"]), {"a", "b"}, timeout_s=0)  # type: ignore[arg-type]
    assert ok["exactly_once"] and ok["lost"] == 0
    lost = reconcile(FakeAdmin(["a"], ["a", "b"]), {"a", "b"}, timeout_s=0)  # type: ignore[arg-type]
    assert not lost["exactly_once"] and lost["lost"] == 1 and lost["lost_sample"] == ["b"]
    twice = reconcile(FakeAdmin(["a", "b", "b"], ["a", "b"]), {"a", "b"}, timeout_s=0)  # type: ignore[arg-type]
    assert not twice["exactly_once"] and twice["searchable_twice"] == 1
    # Accepted by a call the client saw fail (its retry then found it): stored and indexed once, fine.
    extra = reconcile(FakeAdmin(["a", "b", "c"], ["a", "b", "c"]), {"a", "b"}, timeout_s=0)  # type: ignore[arg-type]
    assert extra["exactly_once"] and extra["listed_not_uploaded"] == 1
