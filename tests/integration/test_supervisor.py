"""``firstlight up`` supervises its stack: SIGKILL the broker, Triton, each service and the gateway in turn
(as a crash would, with no hand on the stack), and each comes back on its own with its restart
counted in ``firstlight status``; the pipeline carries on (an upload is indexed, a prediction is
served); Ctrl-C then stops everything, with no process of the stack left behind.

The stack runs in a ``firstlight up`` subprocess: its supervisor is the only owner of restarts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firstlight import datasets
from firstlight.runtime.retry import RetryPolicy
from firstlight.sdk import Firstlight, UploadItem
from firstlight.stack import COMPONENTS, SERVICES, STACK_FILE, SUPERVISOR_FILE, read_stack_file, wait_serving

from .helpers import eventually

pytestmark = [pytest.mark.integration]  # in CI (not `slow`): ~50-60 s with its own stack

PATIENT = RetryPolicy(attempts=40, max_s=5.0, budget_s=150.0)


def components(data_dir: Path) -> dict[str, dict]:
    try:
        return json.loads((data_dir / SUPERVISOR_FILE).read_text())["components"]
    except (OSError, ValueError, KeyError):
        return {}


def stack_processes(data_dir: Path) -> list[str]:
    """Processes whose command line or environment names the stack's data directory (the
    services, tritonserver and its model stubs)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(data_dir).encode() in cmdline or str(data_dir).encode() in environ:
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")[:160]
            found.append(f"{proc.name}: {command}")
    return found


def test_up_restarts_every_component_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "firstlight.cli", "up", "--no-demo", "--data-dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        eventually(lambda: up.poll() is None and (data_dir / SUPERVISOR_FILE).exists(), timeout=240, what="firstlight up")
        addrs = read_stack_file(data_dir)
        for name in COMPONENTS:
            before = components(data_dir)[name]
            assert before["state"] == "running" and before["pid"], before
            os.kill(before["pid"], signal.SIGKILL)  # a crash; nobody restarts it by hand

            def back(name: str = name, old: int = before["pid"], restarts: int = before["restarts"]) -> dict | None:
                c = components(data_dir).get(name, {})
                return c if c.get("state") == "running" and c.get("pid") != old and c.get("restarts") == restarts + 1 else None

            now = eventually(back, timeout=180, what=f"{name} restarted by the supervisor")
            assert "SIGKILL" in now["last_exit"]
            if name in SERVICES:
                wait_serving(addrs[name], timeout_s=120)

        status = subprocess.run(
            [sys.executable, "-m", "firstlight.cli", "status", "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "250"},
        )  # fmt: skip
        assert status.returncode == 0, status.stdout + status.stderr
        for name in COMPONENTS:
            line = next(line for line in status.stdout.splitlines() if f" {name} " in line)
            assert "killed by SIGKILL" in line and " 1 " in line, line
        assert status.stdout.count("SERVING") == len(SERVICES) + 1  # and the gateway

        # The pipeline carries on after every component was restarted once.
        with Firstlight.from_stack(data_dir, timeout_s=60, retry=PATIENT) as client:
            client.create_app("sup")
            images = [d for _, _, d in datasets.animal_mnist(1, seed=9)]
            report = client.upload("sup", [UploadItem(d, id=f"s{i}") for i, d in enumerate(images)])
            assert not report.failures and len(report.input_ids) == len(images)
            client.wait_indexed("sup", len(images), timeout=180)
            assert client.predict(images[:1], top_k=1)[0]
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = up.wait(180)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            for c in components(data_dir).values():  # each runs in its own session: not in up's group
                if c.get("pid"):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(c["pid"], signal.SIGKILL)
            # what was still stopping: the supervisor's log and each component's last lines
            print((tmp_path / "up.log").read_text(errors="replace")[-3000:])
            for f in sorted((data_dir / "logs").glob("*.log")):
                print(f"--- {f.name}", *f.read_text(errors="replace").splitlines()[-8:], sep="\n")
            raise
        finally:
            log.close()
    print((tmp_path / "up.log").read_text()[-3000:])
    assert code == 0
    assert not (data_dir / STACK_FILE).exists() and not (data_dir / SUPERVISOR_FILE).exists()
    deadline = time.monotonic() + 30
    left = stack_processes(data_dir)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = stack_processes(data_dir)
    assert not left, left
