"""Memory probe of Triton's backbone stub: the bundled tritonserver over the project's model
repository (tuned for this host exactly as the local stack does), a few threads sending backbone
and "general" requests of random batch sizes, and the anonymous memory (heap) of every
Python-backend stub sampled from /proc as requests complete. Reports the growth per 1,000 Triton
requests (a least-squares slope after a warm-up), so a change to the model or to Triton's
environment can be judged without the whole stack (docs/reliability.md, "Load test").

    python -m bench.triton_memory --requests 2000
    python -m bench.triton_memory --requests 2000 --env MALLOC_ARENA_MAX=2   # try a Triton env var

A "request" is one Triton infer call (the client splits a batch into chunks of max_batch_size).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from firstlight.config import DEFAULT_MODEL_REPOSITORY, TritonSettings
from firstlight.triton import tuning
from firstlight.triton.client import TritonModels
from firstlight.triton.server import LocalTritonServer

MIB = 1024 * 1024


def stub_pids(server_pid: int) -> dict[str, int]:
    """{instance name: pid} of the Python-backend stubs of a tritonserver."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != server_pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = [a.decode() for a in f.read().split(b"\0") if a]
        except (OSError, ValueError, IndexError):
            continue
        if args and args[0].endswith("triton_python_backend_stub"):
            out[args[-2] if len(args) >= 2 else entry] = int(entry)
    return out


def rss_anon(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slope_per_1000(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2 or max(xs) == min(xs):
        return 0.0
    return float(np.polyfit(np.asarray(xs), np.asarray(ys), 1)[0]) * 1000


def run(args: argparse.Namespace) -> dict:
    env = dict(kv.split("=", 1) for kv in args.env)
    workdir = Path(tempfile.mkdtemp(prefix="firstlight-trimem-"))
    repo = workdir / "model_repository"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY, repo)
    t = tuning.choose(TritonSettings())
    tuning.tune_repository(repo, t)
    server = LocalTritonServer(repo, ["backbone", "general"], env=env, log_file=workdir / "triton.log")
    rng = random.Random(args.seed)
    images = np.random.default_rng(args.seed).integers(0, 256, (args.max_batch, 224, 224, 3), dtype=np.uint8)
    done = 0
    images_done = 0
    lock = threading.Lock()
    samples: list[tuple[int, float, dict[str, int]]] = []
    stop = threading.Event()
    errors: list[str] = []
    # SIGTERM/SIGINT end the run early and still report (and stop the server).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    try:
        server.start()
        assert server.pid is not None
        stubs = stub_pids(server.pid)
        step = t.max_batch_size

        def worker(seed: int) -> None:
            nonlocal done, images_done
            r = random.Random(seed)
            with TritonModels(server.grpc_url, timeout_s=120) as tm:
                while not stop.is_set():
                    n = r.randint(1, args.max_batch)
                    try:
                        (tm.embed if r.random() < args.embed_share else tm.classify)(images[:n])
                    except Exception as exc:  # noqa: BLE001 - counted, the probe goes on
                        errors.append(repr(exc))
                    with lock:
                        done += -(-n // step)
                        images_done += n
                        if done >= args.requests or time.monotonic() - t0 > args.seconds:
                            stop.set()

        def sample() -> None:
            with lock:
                n = done
            samples.append((n, time.monotonic(), {name: rss_anon(pid) for name, pid in stubs.items()}))
            if args.verbose:
                mem = " ".join(f"{k}={v / MIB:.0f}" for k, v in samples[-1][2].items())
                print(f"{samples[-1][1] - t0:6.0f} s {n:5d} requests  anon MiB: {mem}", flush=True)

        t0 = time.monotonic()
        cpu0 = {name: cpu_seconds(pid) for name, pid in stubs.items()}
        sample()
        threads = [threading.Thread(target=worker, args=(rng.random(),), daemon=True) for _ in range(args.threads)]
        for th in threads:
            th.start()
        while not stop.wait(args.sample_s):
            sample()
        for th in threads:
            th.join()
        sample()
        elapsed = time.monotonic() - t0
        cpu = sum(cpu_seconds(pid) - cpu0[name] for name, pid in stubs.items())
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    result: dict = {
        "env": env,
        "tuning": str(t),
        "requests": done,
        "seconds": round(elapsed, 1),
        "threads": args.threads,
        "max_batch": args.max_batch,
        "errors": len(errors),
        "images": images_done,
        "stub_cpu_ms_per_image": round(1000 * cpu / max(1, images_done), 1),
        "stubs": {},
    }
    for name in samples[0][2]:
        xs = [n for n, _, m in samples if n >= args.warmup]
        ys = [m[name] / MIB for n, _, m in samples if n >= args.warmup]
        result["stubs"][name] = {
            "start_mib": round(samples[0][2][name] / MIB, 1),
            "end_mib": round(samples[-1][2][name] / MIB, 1),
            "mib_per_1000_requests": round(slope_per_1000(xs, ys), 1),
            "mib_per_min": round(slope_per_1000([t - samples[0][1] for (n, t, _) in samples if n >= args.warmup], ys) * 60 / 1000, 1),
            "trace": [(n, round(m[name] / MIB)) for n, _, m in samples],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.triton_memory", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="Triton infer calls to send")
    p.add_argument("--seconds", type=float, default=float("inf"), help="stop after this long, whatever the count")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=32, help="batch sizes drawn from 1..N (split into chunks)")
    p.add_argument("--embed-share", type=float, default=0.5, help="share of backbone (vs general) calls")
    p.add_argument("--warmup", type=int, default=200, help="requests left out of the slope")
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for tritonserver and its stubs")
    p.add_argument("-v", "--verbose", action="store_true", help="print every sample")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    r = run(args)
    for name, s in r["stubs"].items():
        print(f"{name}: {s['start_mib']} -> {s['end_mib']} MiB anon, {s['mib_per_1000_requests']} MiB/1000 requests, {s['mib_per_min']} MiB/min")
    print(
        f"{r['requests']} requests ({r['images']} images) in {r['seconds']} s, {r['errors']} errors, "
        f"stub CPU {r['stub_cpu_ms_per_image']} ms/image, env {r['env']}"
    )
    if args.out:
        args.out.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
