"""`make load`: N concurrent clients uploading, searching and predicting against a local stack on
loopback for a bounded time; reports throughput, p50/p99 latency and errors per operation, the
memory (RSS) of every service process over the run, and that every uploaded input was indexed
exactly once. Writes bench/results/load.json and load.md.

    python -m bench.load                       # 8 clients, 2 minutes measured (after 15 s warm-up)
    python -m bench.load --clients 16 --seconds 300
    python -m bench.load --seconds 30 --clients 4 --out /tmp/load   # a quick look
    python -m bench.load --seconds 1800 --retry --kill broker@600 --kill triton@1200 --out bench/results/soak

Clients do NOT retry (runtime.retry.NO_RETRY): every failed call counts as an error, the target
being zero. The soak (``make soak``) runs the stack under its supervisor (as ``firstlight up``
does), SIGKILLs components at planned times (``--kill NAME@SECONDS``, bench.faults) and lets the
clients retry UNAVAILABLE with a patient policy (``--retry``): an error is then a call that failed
after its retries, and the retries are counted. At the end every accepted input is reconciled:
listed once by ListInputs and searchable once (GetVectors by id, the index's count).
Each client has its own channel. The operation mix is weighted (``--mix``):

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
from bench.faults import SOAK_RETRY, CountingRetry, Killer, parse_kill
from firstlight import datasets
from firstlight.runtime.retry import NO_RETRY
from firstlight.sdk import Firstlight, FirstlightError, UploadItem, error_for
from firstlight.stack import LocalStack
from firstlight.v1 import search_pb2

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
    if stack.gateway and stack.gateway.proc:
        out["gateway"] = _mem(stack.gateway.proc.pid)
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
    retries: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: str, seconds: float, error: FirstlightError | None = None, ids: list[str] | None = None,
               retried: dict[str, int] | None = None) -> None:  # fmt: skip
        with self.lock:
            for code, n in (retried or {}).items():
                self.retries[op][code] += n
            if error is None:
                self.latencies[op].append(seconds)
                self.uploaded += ids or []
            else:
                self.errors[op][error.code.name] += 1
                if len(self.error_samples) < 20:
                    self.error_samples.append(f"{op}: {error}")


class Client(threading.Thread):
    def __init__(self, n: int, addresses: dict[str, str], images: list[bytes], seed_ids: list[str], mix: dict[str, float],
                 tally: Tally, measuring: threading.Event, stop: threading.Event, retry: bool = False) -> None:  # fmt: skip
        super().__init__(name=f"load-client-{n}", daemon=True)
        self.n = n
        self.retry = CountingRetry(**SOAK_RETRY) if retry else None
        self.sdk = Firstlight.from_addresses(addresses, timeout_s=60, retry=self.retry or NO_RETRY)
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
                retries_before = self.retry.counter.snapshot() if self.retry else None
                start = time.perf_counter()
                try:
                    ids = self.one(op)
                    error = None
                except FirstlightError as exc:
                    ids, error = [], exc
                retried = dict(self.retry.counter.snapshot() - retries_before) if self.retry and retries_before is not None else None
                if measured and self.measuring.is_set():
                    self.tally.record(op, time.perf_counter() - start, error, ids, retried)
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
    plan = [parse_kill(k) for k in args.kill]
    # Planned kills need the supervisor (firstlight up's): it alone restarts what was killed.
    stack = LocalStack(data_dir, supervise=args.supervise or bool(plan))
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
            clients = [Client(n, stack.addresses, images, seed.input_ids, mix, tally, measuring, stop, args.retry) for n in range(args.clients)]
            for c in clients:
                c.start()
            print(f"{args.clients} clients, warm-up {args.warmup:.0f} s ...", flush=True)
            time.sleep(args.warmup)
            rss: list[tuple[float, dict[str, tuple[int, int]]]] = [(0.0, stack_memory(stack))]
            measuring.set()
            t0 = time.monotonic()
            killer = Killer(stack, plan, t0, stop) if plan else None
            if killer:
                killer.start()
            print(f"measuring for {args.seconds:.0f} s ...", flush=True)
            while (elapsed := time.monotonic() - t0) < args.seconds:
                time.sleep(min(5.0, args.seconds - elapsed))
                rss.append((time.monotonic() - t0, stack_memory(stack)))
            measuring.clear()
            duration = time.monotonic() - t0
            stop.set()
            if killer:
                killer.join(timeout=600)
            for c in clients:
                c.join(timeout=300)
            hung = [c.name for c in clients if c.is_alive()]
            # Drain: every input accepted during the run becomes searchable exactly once.
            drain_start = time.monotonic()
            reconciled = reconcile(admin, set(tally.uploaded), args.drain_timeout)
            drain_s = time.monotonic() - drain_start
            supervisor = stack.supervisor.snapshot() if stack.supervisor else {}
            kills = [vars(e) for e in killer.events] if killer else []
        return report(args, tally, duration, rss, hung, reconciled, drain_s, kills, supervisor)
    finally:
        stack.stop()


def reconcile(admin: Firstlight, uploaded: set[str], timeout_s: float) -> dict:
    """Every accepted input listed once (ListInputs) and searchable once (GetVectors by id and
    the index's count): waits up to ``timeout_s`` for the last ones to be indexed, then a few
    seconds more for late duplicates (re-announcements) to show."""
    deadline = time.monotonic() + timeout_s
    ids = sorted(uploaded)
    while True:
        found = _vectors(admin, ids)
        missing = len(ids) - len(set(found) & uploaded)
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    time.sleep(5.0)
    found = _vectors(admin, ids)
    listed = [i.id for i in admin.list_inputs(APP, page_size=1000)]
    indexed = admin.indexed_count(APP)
    found_set, listed_set = set(found), set(listed)
    result = {
        "uploaded": len(uploaded),
        "listed": len(listed),
        "listed_twice": len(listed) - len(listed_set),
        "listed_not_uploaded": len(listed_set - uploaded),  # accepted by a call the client saw fail
        "lost": len(uploaded - found_set),  # accepted, never searchable
        "not_listed": len(uploaded - listed_set),
        "searchable": len(found_set & uploaded),
        "searchable_twice": len(found) - len(found_set),
        "indexed_count": indexed,
        "lost_sample": sorted(uploaded - found_set)[:10],
    }
    result["exactly_once"] = result["lost"] == result["not_listed"] == result["listed_twice"] == result["searchable_twice"] == 0 and indexed == len(
        listed_set
    ) == len(uploaded | listed_set)
    return result


def _vectors(admin: Firstlight, ids: list[str]) -> list[str]:
    """The input ids GetVectors returns for ``ids`` (a duplicate point would show twice)."""
    out: list[str] = []
    for start in range(0, len(ids), 5000):
        request = search_pb2.GetVectorsRequest(app_id=APP, input_ids=ids[start : start + 5000])
        out += [v.input_id for v in admin.search.GetVectors(request, timeout=120).vectors]
    return out


def report(args, tally: Tally, duration: float, rss, hung, index: dict, drain_s: float, kills: list[dict], supervisor: dict) -> dict:  # type: ignore[no-untyped-def]
    ops = {}
    for op in sorted(set(tally.latencies) | set(tally.errors)):
        lat = np.asarray(tally.latencies.get(op, []), dtype=np.float64)
        n_err = sum(tally.errors.get(op, {}).values())
        ops[op] = {
            "calls_ok": int(lat.size),
            "errors": n_err,
            "errors_by_status": dict(tally.errors.get(op, {})),
            "retries": sum(tally.retries.get(op, {}).values()),
            "retries_by_status": dict(tally.retries.get(op, {})),
            "calls_per_s": lat.size / duration,
            "images_per_s": lat.size * (UPLOAD_BATCH if op == "upload" else 1) / duration,
            "p50_ms": float(np.percentile(lat, 50) * 1e3) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99) * 1e3) if lat.size else None,
            "max_ms": float(lat.max() * 1e3) if lat.size else None,
        }
    first = rss[0][1]
    memory = {}
    restarted = {name for name, c in supervisor.items() if c.get("restarts")}
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
        # A restarted component's "end" is its new process (Triton's stubs: the new server's).
        entry["restarted"] = (proc.split()[0] if proc.startswith("triton") else proc) in restarted
        memory[proc] = entry
    index["drain_s"] = round(drain_s, 1)
    result = {
        "settings": {
            "clients": args.clients,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "mix": args.mix,
            "upload_batch": UPLOAD_BATCH,
            "retry": bool(args.retry),
            "kill": list(args.kill),
            "supervised": bool(supervisor),
        },
        "machine": {**machine(), "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "duration_s": round(duration, 1),
        "operations": ops,
        "total_errors": sum(o["errors"] for o in ops.values()),
        "total_retries": sum(o["retries"] for o in ops.values()),
        "error_samples": tally.error_samples,
        "hung_clients": hung,
        "index": index,
        "kills": kills,
        "supervisor": supervisor,
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
        + (
            "Clients retry UNAVAILABLE (patient policy, bench.faults.SOAK_RETRY): an error is a call that failed after its retries."
            if s.get("retry")
            else "Clients do not retry: every failure counts."
        ),
        "",
        "| operation | calls ok | calls/s | images/s | p50 | p99 | max | errors | retries |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op, o in r["operations"].items():
        fmt = lambda v: "-" if v is None else f"{v:.0f} ms"  # noqa: E731
        errs = ", ".join(f"{k} {v}" for k, v in o["errors_by_status"].items()) or "0"
        retries = ", ".join(f"{k} {v}" for k, v in o.get("retries_by_status", {}).items()) or "0"
        lines.append(
            f"| {op} | {o['calls_ok']} | {o['calls_per_s']:.2f} | {o['images_per_s']:.2f} | {fmt(o['p50_ms'])} | {fmt(o['p99_ms'])} | {fmt(o['max_ms'])} | {errs} | {retries} |"  # noqa: E501
        )
    idx = r["index"]
    lines += [
        "",
        f"**Errors after retries: {r['total_errors']}** (retries: {r['total_retries']}); hung clients: {len(r['hung_clients'])}.",
        "",
        f"Reconciliation ({'exactly once' if idx['exactly_once'] else 'MISMATCH'}): {idx['uploaded']} inputs accepted; "
        f"ListInputs lists {idx['listed']} ({idx['listed_twice']} twice, {idx['not_listed']} accepted ones missing, "
        f"{idx['listed_not_uploaded']} not seen accepted by a client); {idx['searchable']} searchable by id "
        f"({idx['searchable_twice']} twice), **{idx['lost']} lost**; the index counts {idx['indexed_count']}; "
        f"backlog drained {idx['drain_s']:.0f} s after the clients stopped.",
    ]
    if r.get("kills"):
        lines += ["", "| SIGKILL | planned at | killed at | pid old → new | back after | error |", "|---|---:|---:|---|---:|---|"]
        for k in r["kills"]:
            back = "-" if k["back_after_s"] is None else f"{k['back_after_s']:.0f} s"
            lines.append(
                f"| {k['name']} | {k['planned_s']:.0f} s | {k['killed_at_s']:.0f} s | {k['old_pid']} → {k['new_pid']} | {back} | {k['error'] or '-'} |"
            )
    if r.get("supervisor"):
        restarts = ", ".join(f"{n} {c['restarts']}" for n, c in r["supervisor"].items() if c["restarts"]) or "none"
        lines += ["", f"Supervisor restarts: {restarts}."]
    lines += [
        "",
        "| process | RSS start → end | RSS growth | anonymous (heap) start → end | heap growth | heap slope |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for proc, m in r["memory"].items():
        mark = " (restarted: end is the new process)" if m.get("restarted") else ""
        lines.append(
            f"| {proc}{mark} | {m['rss_start_mib']:.0f} → {m['rss_end_mib']:.0f} MiB | {m['rss_growth_mib']:+.0f} MiB | "
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
    parser.add_argument("--supervise", action="store_true", help="run the stack under its supervisor (implied by --kill)")
    parser.add_argument("--kill", action="append", default=[], metavar="NAME@SECONDS",
                        help="SIGKILL a component (broker, triton, a service, gateway) this many seconds into the measured run; repeatable")  # fmt: skip
    parser.add_argument("--retry", action="store_true", help="clients retry UNAVAILABLE with a patient policy and count the retries")
    parser.add_argument("--out", type=Path, default=RESULTS / "load", help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    for k in args.kill:
        try:
            parse_kill(k)
        except ValueError as exc:
            parser.error(str(exc))
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    kills_ok = all(not k["error"] for k in result["kills"]) and len(result["kills"]) == len(args.kill)
    return 0 if result["total_errors"] == 0 and not result["hung_clients"] and result["index"]["exactly_once"] and kills_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
