"""`make load`: N concurrent clients uploading, searching and predicting against a local stack on
loopback for a bounded time; reports throughput, p50/p99 latency and errors per operation, the
memory (RSS) of every service process over the run, and that every uploaded input was indexed
exactly once. Writes bench/results/load.json and load.md.

    python -m bench.load                       # 8 clients, 2 minutes measured (after 15 s warm-up)
    python -m bench.load --clients 16 --seconds 300
    python -m bench.load --seconds 30 --clients 4 --out /tmp/load   # a quick look

Clients do NOT retry (runtime.retry.NO_RETRY): every failed call counts as an error, the target
being zero. Each client has its own channel. The operation mix is weighted (``--mix``):

* ``upload``       PostInputs with 4 animal-mnist images (fresh ids) -> embedded and indexed async
* ``search_id``    SearchByImage by a stored input's id (vector index only)
* ``search_image`` SearchByImage with image bytes (EmbeddingService + index)
* ``predict``      Predict, general model, one image
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench.__main__ import machine
from firstlight import datasets
from firstlight.runtime.retry import NO_RETRY
from firstlight.sdk import Firstlight, FirstlightError, UploadItem, error_for
from firstlight.stack import LocalStack

RESULTS = Path(__file__).parent / "results"
APP = "load"
UPLOAD_BATCH = 4
DEFAULT_MIX = "upload=1,search_id=2,search_image=1,predict=2"
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# -- memory of the stack's processes (from /proc: no dependency) ----------------------------------


def _mem(pid: int) -> tuple[int, int]:
    """(RSS, anonymous RSS) in bytes. Anonymous memory (heap, not files or shared memory) is
    what a leak grows; RSS also counts shared memory, which Triton's Python backend maps in
    every stub (so its pool's growth shows once per process)."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    key, value = line.split(":", 1)
                    fields[key] = int(value.split()[0]) * 1024
    except OSError:
        return 0, 0
    return fields.get("VmRSS", 0), fields.get("RssAnon", 0)


def _group(pgid: int) -> list[int]:
    """Pids of a process group (tritonserver and its Python-backend stubs)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return pids


def _triton_process_name(pid: int, server_pid: int) -> str:
    if pid == server_pid:
        return "triton server"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a for a in f.read().decode(errors="replace").split("\0") if a]
        # A stub's last two arguments are its model instance's name (backbone_0_0) and DEFAULT.
        return f"triton stub {args[-2] if len(args) >= 2 else pid}"
    except OSError:
        return f"triton {pid}"


def stack_memory(stack: LocalStack) -> dict[str, tuple[int, int]]:
    """process name -> (RSS, anonymous RSS); Triton summed over its process group."""
    out = {name: _mem(svc.proc.pid) for name, svc in stack.services.items() if svc.proc}
    if stack.triton and stack.triton.pid:
        # The server and each Python-backend stub (one per model instance) separately, so growth
        # can be pinned on one of them.
        for pid in sorted(_group(stack.triton.pid)):
            out[_triton_process_name(pid, stack.triton.pid)] = _mem(pid)
    if stack.broker and stack.broker.pid:
        out["broker"] = _mem(stack.broker.pid)
    return out


# -- the clients ------------------------------------------------------------------------------------


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    error_samples: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: str, seconds: float, error: FirstlightError | None = None, ids: list[str] | None = None) -> None:
        with self.lock:
            if error is None:
                self.latencies[op].append(seconds)
                self.uploaded += ids or []
            else:
                self.errors[op][error.code.name] += 1
                if len(self.error_samples) < 20:
                    self.error_samples.append(f"{op}: {error}")


class Client(threading.Thread):
    def __init__(self, n: int, addresses: dict[str, str], images: list[bytes], seed_ids: list[str], mix: dict[str, float],
                 tally: Tally, measuring: threading.Event, stop: threading.Event) -> None:  # fmt: skip
        super().__init__(name=f"load-client-{n}", daemon=True)
        self.n = n
        self.sdk = Firstlight.from_addresses(addresses, timeout_s=60, retry=NO_RETRY)
        self.images = images
        self.seed_ids = seed_ids
        self.ops = list(mix)
        self.weights = [mix[o] for o in self.ops]
        self.rng = random.Random(n)
        self.tally = tally
        self.measuring = measuring
        self.stop_event = stop
        self.seq = 0

    def one(self, op: str) -> list[str]:
        image = self.rng.choice(self.images)
        if op == "upload":
            items = []
            for _ in range(UPLOAD_BATCH):
                self.seq += 1
                items.append(UploadItem(self.rng.choice(self.images), id=f"c{self.n}-{self.seq}"))
            report = self.sdk.upload(APP, items)
            if report.failures:
                f = report.failures[0]
                raise error_for(grpc.StatusCode[f.code], f.message)
            return report.input_ids
        if op == "search_id":
            self.sdk.search_by_image(APP, input_id=self.rng.choice(self.seed_ids), top_k=10)
        elif op == "search_image":
            self.sdk.search_by_image(APP, image=image, top_k=10)
        elif op == "predict":
            self.sdk.predict([image], top_k=5)
        return []

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                op = self.rng.choices(self.ops, self.weights)[0]
                measured = self.measuring.is_set()
                start = time.perf_counter()
                try:
                    ids = self.one(op)
                    error = None
                except FirstlightError as exc:
                    ids, error = [], exc
                if measured and self.measuring.is_set():
                    self.tally.record(op, time.perf_counter() - start, error, ids)
                elif op == "upload":
                    with self.tally.lock:
                        self.tally.uploaded += ids  # warm-up uploads are counted for the index check
        finally:
            self.sdk.close()


# -- the run ----------------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if name.strip() not in ("upload", "search_id", "search_image", "predict"):
            raise SystemExit(f"unknown operation {name!r} in --mix")
        mix[name.strip()] = float(weight or 1)
    return mix


def run(args: argparse.Namespace) -> dict:
    images = [data for _, _, data in datasets.animal_mnist(30, seed=5)] + [datasets.sample_photo(name) for name in ("coffee", "chelsea", "astronaut")]
    data_dir = Path(tempfile.mkdtemp(prefix="firstlight-load-"))
    print(f"starting a local stack in {data_dir} (loopback only) ...", flush=True)
    stack = LocalStack(data_dir)
    stack.start()
    try:
        with Firstlight.from_addresses(stack.addresses, timeout_s=120) as admin:
            admin.create_app(APP, exist_ok=True)
            seed = admin.upload(APP, [UploadItem(img, id=f"seed-{n}") for n, img in enumerate(images[:40])])
            admin.wait_indexed(APP, len(seed.input_ids), timeout=600)
            mix = parse_mix(args.mix)
            tally = Tally()
            tally.uploaded += seed.input_ids
            measuring, stop = threading.Event(), threading.Event()
            clients = [Client(n, stack.addresses, images, seed.input_ids, mix, tally, measuring, stop) for n in range(args.clients)]
            for c in clients:
                c.start()
            print(f"{args.clients} clients, warm-up {args.warmup:.0f} s ...", flush=True)
            time.sleep(args.warmup)
            rss: list[tuple[float, dict[str, tuple[int, int]]]] = [(0.0, stack_memory(stack))]
            measuring.set()
            t0 = time.monotonic()
            print(f"measuring for {args.seconds:.0f} s ...", flush=True)
            while (elapsed := time.monotonic() - t0) < args.seconds:
                time.sleep(min(5.0, args.seconds - elapsed))
                rss.append((time.monotonic() - t0, stack_memory(stack)))
            measuring.clear()
            duration = time.monotonic() - t0
            stop.set()
            for c in clients:
                c.join(timeout=120)
            hung = [c.name for c in clients if c.is_alive()]
            # Drain: every input accepted during the run becomes searchable exactly once.
            drain_start = time.monotonic()
            expected = len(set(tally.uploaded))
            try:
                admin.wait_indexed(APP, expected, timeout=args.drain_timeout)
            except TimeoutError:
                pass
            drain_s = time.monotonic() - drain_start
            indexed = admin.indexed_count(APP)
            stored = sum(1 for _ in admin.list_inputs(APP, page_size=1000))
        return report(args, tally, duration, rss, hung, expected, indexed, stored, drain_s)
    finally:
        stack.stop()


def report(args, tally: Tally, duration: float, rss, hung, expected: int, indexed: int, stored: int, drain_s: float) -> dict:  # type: ignore[no-untyped-def]
    ops = {}
    for op in sorted(set(tally.latencies) | set(tally.errors)):
        lat = np.asarray(tally.latencies.get(op, []), dtype=np.float64)
        n_err = sum(tally.errors.get(op, {}).values())
        ops[op] = {
            "calls_ok": int(lat.size),
            "errors": n_err,
            "errors_by_status": dict(tally.errors.get(op, {})),
            "calls_per_s": lat.size / duration,
            "images_per_s": lat.size * (UPLOAD_BATCH if op == "upload" else 1) / duration,
            "p50_ms": float(np.percentile(lat, 50) * 1e3) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99) * 1e3) if lat.size else None,
            "max_ms": float(lat.max() * 1e3) if lat.size else None,
        }
    first = rss[0][1]
    memory = {}
    for proc in first:
        samples = [(t, s[proc]) for t, s in rss if proc in s]
        times = np.asarray([t for t, _ in samples]) / 60.0
        entry = {}
        for n, kind in enumerate(("rss", "anon")):
            series = np.asarray([m[n] for _, m in samples], dtype=np.float64) / 2**20
            slope = float(np.polyfit(times, series, 1)[0]) if len(series) >= 3 else float("nan")
            entry.update({
                f"{kind}_start_mib": round(float(series[0]), 1),
                f"{kind}_end_mib": round(float(series[-1]), 1),
                f"{kind}_peak_mib": round(float(series.max()), 1),
                f"{kind}_growth_mib": round(float(series[-1] - series[0]), 1),
                f"{kind}_slope_mib_per_min": round(slope, 2),
            })  # fmt: skip
        memory[proc] = entry
    result = {
        "settings": {"clients": args.clients, "seconds": args.seconds, "warmup_s": args.warmup, "mix": args.mix, "upload_batch": UPLOAD_BATCH},
        "machine": {**machine(), "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "duration_s": round(duration, 1),
        "operations": ops,
        "total_errors": sum(o["errors"] for o in ops.values()),
        "error_samples": tally.error_samples,
        "hung_clients": hung,
        "index": {"uploaded": expected, "stored": stored, "indexed": indexed, "exactly_once": expected == stored == indexed, "drain_s": round(drain_s, 1)},
        "memory": memory,
    }
    return result


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        f"# Load test: {s['clients']} clients, {r['duration_s']:.0f} s measured (after {s['warmup_s']:.0f} s warm-up)",
        "",
        f"Machine: {r['machine'].get('cpu', '?')}, {r['machine'].get('cores')} cores; load average (1/5/15 min) "
        f"{r['machine']['load_avg_at_end']} at the end (other users' jobs included). Mix: `{s['mix']}`; uploads are {s['upload_batch']} images per call. "
        "Clients do not retry: every failure counts.",
        "",
        "| operation | calls ok | calls/s | images/s | p50 | p99 | max | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op, o in r["operations"].items():
        fmt = lambda v: "-" if v is None else f"{v:.0f} ms"  # noqa: E731
        errs = ", ".join(f"{k} {v}" for k, v in o["errors_by_status"].items()) or "0"
        lines.append(
            f"| {op} | {o['calls_ok']} | {o['calls_per_s']:.2f} | {o['images_per_s']:.2f} | {fmt(o['p50_ms'])} | {fmt(o['p99_ms'])} | {fmt(o['max_ms'])} | {errs} |"  # noqa: E501
        )
    idx = r["index"]
    lines += [
        "",
        f"**Errors: {r['total_errors']}**; hung clients: {len(r['hung_clients'])}. "
        f"Index: {idx['uploaded']} inputs uploaded, {idx['stored']} stored, {idx['indexed']} indexed "
        f"({'exactly once' if idx['exactly_once'] else 'MISMATCH'}), backlog drained {idx['drain_s']:.0f} s after the clients stopped.",
        "",
        "| process | RSS start → end | RSS growth | anonymous (heap) start → end | heap growth | heap slope |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for proc, m in r["memory"].items():
        lines.append(
            f"| {proc} | {m['rss_start_mib']:.0f} → {m['rss_end_mib']:.0f} MiB | {m['rss_growth_mib']:+.0f} MiB | "
            f"{m['anon_start_mib']:.0f} → {m['anon_end_mib']:.0f} MiB | {m['anon_growth_mib']:+.0f} MiB | {m['anon_slope_mib_per_min']:+.1f} MiB/min |"
        )
    if r["error_samples"]:
        lines += ["", "First errors:", ""] + [f"- `{e}`" for e in r["error_samples"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120.0, help="measured duration (default 2 minutes)")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--mix", default=DEFAULT_MIX)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "load", help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 0 if result["total_errors"] == 0 and not result["hung_clients"] and result["index"]["exactly_once"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
