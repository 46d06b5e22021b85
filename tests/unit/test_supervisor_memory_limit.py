"""The supervisor of ``firstlight up`` restarts a component that runs past its memory limit, as a
Kubernetes memory limit would (the local broker's memory storage keeps every record: without a
limit a stack left running for days grows by gigabytes). The stack is stood in by real child
processes; the RSS reader is a stand-in so the test does not depend on how much memory grows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firstlight.config import SupervisorSettings
from firstlight.stack import RestartPolicy, Supervisor, rss_mb


class Stack:
    """The three methods of LocalStack the supervisor uses, over one real ``sleep`` process."""

    gateway = None  # no gateway: the supervisor leaves it out

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc = self._spawn()
        self.relaunches = 0

    @staticmethod
    def _spawn() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def component_pid(self, name: str) -> int | None:
        return self.proc.pid if name == "broker" else None

    def component_exit(self, name: str) -> int | None:
        return self.proc.poll() if name == "broker" else None

    def component_log(self, name: str) -> Path:
        return self.data_dir / f"{name}.log"

    def relaunch(self, name: str) -> None:
        self.relaunches += 1
        self.proc = self._spawn()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def stack(tmp_path: Path):
    s = Stack(tmp_path)
    yield s
    s.close()


def _supervisor(stack: Stack, limit: int, memory: dict[int, float]) -> Supervisor:
    # The other components read as running with no pid: only the broker is watched here.
    return Supervisor(stack, RestartPolicy(initial_s=0.0, memory_limits_mb={"broker": limit}), memory_of=memory.get)  # type: ignore[arg-type]


def test_a_component_over_its_memory_limit_is_killed_and_restarted(stack: Stack) -> None:
    memory = {stack.proc.pid: 300.0}
    sup = _supervisor(stack, 512, memory)
    sup.check_once()
    assert stack.proc.poll() is None  # under the limit: left alone
    first = stack.proc
    memory[first.pid] = 700.0
    sup.check_once()  # over: killed as the OOM killer would
    assert first.wait(10) == -signal.SIGKILL
    sup.check_once()  # found dead (its reason kept), then restarted after the 0 s backoff
    sup.check_once()
    assert stack.relaunches == 1 and stack.proc is not first
    status = sup.snapshot()["broker"]
    assert status["restarts"] == 1 and status["state"] == "running"
    assert "over its memory limit (700 MiB > 512 MiB)" in status["last_exit"]
    sup.check_once()  # the new process (unknown to the reader: None) is left alone
    assert stack.proc.poll() is None and stack.relaunches == 1


def test_the_broker_limit_comes_from_the_settings_and_0_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RestartPolicy.from_settings().memory_limits_mb == {"broker": 1024}
    monkeypatch.setenv("FIRSTLIGHT_BROKER_MEMORY_LIMIT_MB", "256")
    assert RestartPolicy.from_settings().memory_limits_mb == {"broker": 256}
    assert RestartPolicy.from_settings(SupervisorSettings(broker_memory_limit_mb=0)).memory_limits_mb == {}


def test_rss_of_this_process_and_of_none() -> None:
    mine = rss_mb(os.getpid())
    assert mine is not None and mine > 1
    assert rss_mb(2**22 + 12345) is None


def test_stop_all_terms_everyone_then_kills_who_ignores_it() -> None:
    import subprocess
    import sys

    from firstlight.stack import stop_all

    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    polite = "import time; print('ready', flush=True); time.sleep(60)"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for code in (stubborn, polite, stubborn)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"  # handlers installed
    stop_all(procs, grace_s=1.0)
    assert [p.returncode for p in procs] == [-9, -15, -9]
    for p in procs:
        assert p.stdout is not None
        p.stdout.close()
