"""How the SDK calls: generated stubs whose side-effect-free unary methods retry by the clients'
policy (:mod:`firstlight.clients.policy`), and whose unary calls wait out a key's rate limit."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import grpc

from firstlight.clients.policy import IDEMPOTENT_RPCS, RetryPolicy

#: How often and how long in all the SDK waits out a key's rate limit before giving up.
RATE_LIMIT_ATTEMPTS = 6
RATE_LIMIT_MAX_WAIT_S = 30.0


def retry_after_s(exc: BaseException) -> float | None:
    """The wait a RESOURCE_EXHAUSTED refusal asks for (trailing metadata ``retry-after-ms``, set
    by the per-key rate limit); None for any other error (a size limit is not worth retrying)."""
    if not isinstance(exc, grpc.RpcError) or exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after-ms":
            try:
                return max(0.0, float(value)) / 1000.0
            except (TypeError, ValueError):
                return None
    return None


def honour_rate_limit(call: Callable[[], Any], attempts: int = RATE_LIMIT_ATTEMPTS, max_wait_s: float = RATE_LIMIT_MAX_WAIT_S) -> Any:
    """``call()``, retried after the server's ``retry-after-ms`` while the key is rate-limited
    (at most ``attempts`` tries and ``max_wait_s`` of waiting; then the refusal is raised)."""
    waited = 0.0
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except grpc.RpcError as exc:
            wait = retry_after_s(exc)
            if wait is None or attempt == attempts or waited + wait > max_wait_s:
                raise
            wait += random.uniform(0.0, 0.05)  # clients refused together do not return in lockstep
            time.sleep(wait)
            waited += wait
    raise AssertionError("unreachable")


class RetryingStub:
    """A generated stub whose side-effect-free unary methods retry by the client's policy.
    Uploads are retried separately (``upload``: every item gets a client-side id first, so a
    resend cannot duplicate)."""

    def __init__(self, stub: object, policy: RetryPolicy) -> None:
        self._stub = stub
        self._policy = policy

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        if "UnaryUnary" not in type(method).__name__:
            return method  # streams: a refused stream cannot be replayed from its iterator

        # Any unary call the server refused for the key's rate limit is retried after the wait
        # it names: the refusal comes before the RPC does anything, so even writes are safe.
        def limited(*args: Any, **kw: Any) -> Any:
            return honour_rate_limit(lambda: method(*args, **kw))

        if name not in IDEMPOTENT_RPCS:
            return limited

        def retried(*args: Any, **kw: Any) -> Any:
            return self._policy.call(lambda: limited(*args, **kw))

        return retried
