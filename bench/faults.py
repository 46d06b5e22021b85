"""Faults for the soak (``make soak``): SIGKILL a stack component at a planned time and time how
long its supervisor takes to bring it back; and a retry policy that counts its retries, so a run
"with zero errors after retries" also says how many retries it took.

    --kill broker@600 --kill triton@1200   # seconds into the measured run
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from firstlight.runtime.retry import RetryPolicy
from firstlight.stack import COMPONENTS, LocalStack, wait_http, wait_serving

KILL_SPEC = re.compile(r"(?P<name>[a-z]+)@(?P<at>\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class PlannedKill:
    name: str
    at_s: float


def parse_kill(text: str) -> PlannedKill:
    m = KILL_SPEC.fullmatch(text.strip())
    if not m or m["name"] not in COMPONENTS:
        raise ValueError(f"--kill takes COMPONENT@SECONDS with a component of {COMPONENTS}, got {text!r}")
    return PlannedKill(m["name"], float(m["at"]))


class RetryCounter:
    """Retries by gRPC status name, shared by the threads of one client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_code: Counter[str] = Counter()

    def add(self, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        name = code().name if callable(code) else type(exc).__name__
        with self._lock:
            self.by_code[name] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self.by_code.values())

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.by_code)


@dataclass(frozen=True)
class CountingRetry(RetryPolicy):
    """A :class:`RetryPolicy` that counts each retry it grants (not the final failure)."""

    counter: RetryCounter = field(default_factory=RetryCounter, compare=False, hash=False)

    def _schedule(self, retry_on: Callable[[BaseException], bool]) -> Callable[[BaseException], float | None]:
        inner = super()._schedule(retry_on)

        def next_delay(exc: BaseException) -> float | None:
            delay = inner(exc)
            if delay is not None:
                self.counter.add(exc)
            return delay

        return next_delay


#: The soak's clients: ride out a broker or Triton restart (Triton takes a minute or two to load
#: its models on a small CPU host), as the CI's restart tests do.
SOAK_RETRY = dict(attempts=60, initial_s=0.25, max_s=5.0, budget_s=240.0)


@dataclass
class KillEvent:
    name: str
    planned_s: float
    killed_at_s: float = 0.0
    old_pid: int | None = None
    new_pid: int | None = None
    back_after_s: float | None = None  # until the supervisor says running and it answers again
    error: str = ""


class Killer(threading.Thread):
    """SIGKILLs each planned component at its time (seconds after ``t0``), then waits until the
    stack's supervisor restarted it (restart count up, running) and it answers again."""

    def __init__(self, stack: LocalStack, plan: list[PlannedKill], t0: float, stop: threading.Event, recover_timeout_s: float = 600.0) -> None:
        super().__init__(name="soak-killer", daemon=True)
        assert stack.supervisor is not None, "kills need a supervised stack (one owner of restarts)"
        self.stack = stack
        self.plan = sorted(plan, key=lambda k: k.at_s)
        self.t0 = t0
        self.stop_event = stop
        self.recover_timeout_s = recover_timeout_s
        self.events: list[KillEvent] = []

    def run(self) -> None:
        for planned in self.plan:
            if self.stop_event.wait(max(0.0, self.t0 + planned.at_s - time.monotonic())):
                return
            event = KillEvent(planned.name, planned.at_s)
            self.events.append(event)
            try:
                self._kill_and_wait(event)
            except Exception as exc:  # noqa: BLE001 - recorded in the report, the run carries on
                event.error = f"{type(exc).__name__}: {exc}"
            print(f"  kill {event}", flush=True)

    def _kill_and_wait(self, event: KillEvent) -> None:
        sup = self.stack.supervisor
        assert sup is not None
        before = sup.snapshot()[event.name]
        event.old_pid = self.stack.component_pid(event.name)
        assert event.old_pid, f"{event.name} has no pid"
        killed = time.monotonic()
        event.killed_at_s = round(killed - self.t0, 1)
        os.kill(event.old_pid, signal.SIGKILL)
        deadline = killed + self.recover_timeout_s
        while True:
            now = sup.snapshot()[event.name]
            if now["restarts"] > before["restarts"] and now["state"] == "running":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{event.name} not restarted after {self.recover_timeout_s:.0f}s: {now}")
            time.sleep(0.2)
        event.new_pid = now["pid"]
        left = max(1.0, deadline - time.monotonic())
        if event.name == "gateway":
            wait_http(f"{self.stack.gateway_url}/healthz", left)
        elif event.name in self.stack.services:
            wait_serving(self.stack.services[event.name].address, left)
        event.back_after_s = round(time.monotonic() - killed, 1)
