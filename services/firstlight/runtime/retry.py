"""The one retry policy: exponential backoff with full jitter, bounded in attempts AND in total
time, for calls that are safe to repeat (reads, predictions, uploads with client-assigned ids).

Used by the SDK, by the services' calls to each other, and (``Backoff``) by the loops that retry
forever (the event consumer, the ingestion outbox). Only UNAVAILABLE is retried by default: it
means the request did not take effect or the peer is restarting. DEADLINE_EXCEEDED is not (the
caller's time is already spent), nor is any status that describes the request itself.

Channels get short reconnect backoff (``CHANNEL_OPTIONS``): gRPC's default grows to 120 s, so a
client whose server restarted could keep failing fast long after the server is back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

T = TypeVar("T")

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

#: Reconnect quickly after a peer restart (gRPC's defaults: 1 s initial, up to 120 s).
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def is_retryable(exc: BaseException) -> bool:
    """A gRPC error whose status says "try again" (sync and aio errors alike)."""
    code = getattr(exc, "code", None)
    if not callable(code) or not isinstance(exc, grpc.RpcError):
        return False
    return code() in RETRYABLE_CODES


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries at most, and none later than ``budget_s`` seconds after the first failure
    (a long upload that fails late still gets its retries).
    Delay before retry n (1-based) is uniform in [0, min(max_s, initial_s * multiplier**(n-1))]
    ("full jitter": many clients retrying after one outage do not retry in lockstep)."""

    attempts: int = 12
    initial_s: float = 0.25
    multiplier: float = 2.0
    max_s: float = 5.0
    budget_s: float = 45.0

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        rand = rng or random
        for n in range(self.attempts - 1):
            yield rand.uniform(0.0, min(self.max_s, self.initial_s * self.multiplier**n))

    def call(
        self,
        fn: Callable[[], T],
        *,
        retry_on: Callable[[BaseException], bool] = is_retryable,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
    ) -> T:
        """``fn()`` until it succeeds, raises something not retryable, or the policy is spent
        (then the last error is raised)."""
        schedule = self._schedule(retry_on)
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                delay = schedule(exc)
                if delay is None:
                    raise
                if on_retry:
                    on_retry(attempt, exc, delay)
                time.sleep(delay)

    async def acall(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        retry_on: Callable[[BaseException], bool] = is_retryable,
    ) -> T:
        """The asyncio twin of :meth:`call`."""
        schedule = self._schedule(retry_on)
        while True:
            try:
                return await fn()
            except Exception as exc:
                delay = schedule(exc)
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    def _schedule(self, retry_on: Callable[[BaseException], bool]) -> Callable[[BaseException], float | None]:
        """One call's retry decisions, shared by :meth:`call` and :meth:`acall`: the delay before
        the next try after ``exc``, or None to give up (not retryable, out of attempts or budget)."""
        first_failure: float | None = None
        delays = self.delays()

        def next_delay(exc: BaseException) -> float | None:
            nonlocal first_failure
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            delay = next(delays, None)
            if not retry_on(exc) or delay is None or now + delay - first_failure > self.budget_s:
                return None
            return delay

        return next_delay


#: What the SDK uses unless told otherwise: rides out a service restart (seconds to tens of seconds).
DEFAULT_POLICY = RetryPolicy()
#: Between services: shorter, because the caller's caller (the SDK) retries too, and its deadline runs.
INTERNAL_POLICY = RetryPolicy(attempts=6, initial_s=0.1, max_s=2.0, budget_s=10.0)
#: Never retry (e.g. ``Firstlight(..., retry=NO_RETRY)`` to see every failure).
NO_RETRY = RetryPolicy(attempts=1)


class Backoff:
    """Delays for a loop that retries forever (a consumer whose dependency is down): exponential
    from ``initial_s`` to ``max_s`` with "equal jitter" (uniform in [ceiling/2, ceiling]): spread
    out like full jitter, but never hammering a dependency that is down; ``reset()`` after a success."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 10.0, multiplier: float = 2.0, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self._ceiling = initial_s
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The next delay, in [ceiling/2, ceiling]; the ceiling then grows."""
        ceiling = self._ceiling
        self._ceiling = min(self.max_s, self._ceiling * self.multiplier)
        return self._rng.uniform(ceiling / 2, ceiling)

    @property
    def ceiling(self) -> float:
        return self._ceiling

    def reset(self) -> None:
        self._ceiling = self.initial_s
