"""Small helpers shared by the integration tests."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import httpx

from firstlight.stack import LocalStack

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.25, what: str = "condition") -> T:
    """Poll ``check`` until it returns a truthy value (event-driven effects are asynchronous)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last value: {last!r})")


@contextmanager
def serving(stack: LocalStack) -> Iterator[LocalStack]:
    """Start ``stack`` for a fixture and stop it afterwards; if it fails to start, print the tail of
    every component's log (what CI shows of the failure) and stop what did start."""
    try:
        stack.start()
    except Exception:
        for log in sorted(stack.log_dir.glob("*.log")):
            print(f"==== {log.name}\n{log.read_text()[-3000:]}")
        stack.stop()
        raise
    try:
        yield stack
    finally:
        stack.stop()


# -- the HTTP API (gateway tests and the Portal's browser test) ---------------------------------
def wait_queued(api: httpx.Client, app: str, n: int, timeout: float = 90) -> dict:
    """The app's labeling queue once it holds ``n`` queued items (its counters in the failure)."""
    deadline = time.monotonic() + timeout
    while True:
        q = api.get(f"/v1/apps/{app}/curation/queue", params={"state": "queued"}).json()
        if len(q["items"]) >= n:
            return q
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {n} items queued after {timeout:.0f}s: {q['stats']}")
        time.sleep(0.5)


def predict_stored(api: httpx.Client, app: str, input_id: str, model_id: str) -> dict:
    """Predict on a stored input with an app model (retried while inference loads a new version)."""

    def call() -> dict | None:
        r = api.post(f"/v1/apps/{app}/inputs/{input_id}/predict", json={"model_id": model_id, "top_k": 3})
        assert r.status_code in (200, 404), r.text
        return r.json() if r.status_code == 200 else None

    return eventually(call, 60, what=f"{model_id} served")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
