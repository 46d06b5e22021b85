"""Predict throughput and latency at concurrency 1, 8 and 32 (threads, one image per request):

* the InferenceService (gRPC ``Predict``, general model, top 5) — decode, preprocess, Triton;
* direct Triton (``TritonModels.classify``) with decode + preprocess in the calling thread;
* the bare model in-process (``load_efficientnet`` + ``embed_and_classify`` at batch 1), with the
  same decode + preprocess, called from the same number of threads.

All three do the same work per image (JPEG decode, resize/crop, forward pass, softmax), so the
ratios are the cost or gain of the serving path. Triton's dynamic batcher is observed directly:
the backbone's inference count over its execution count is the mean batch it ran.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.common import Row, latency, ms
from firstlight import datasets
from firstlight.images import decode_image
from firstlight.models import backbone
from firstlight.models.preprocess import batch_from_images
from firstlight.runtime.channels import client_channel
from firstlight.triton.client import BACKBONE_MODEL, TritonModels
from firstlight.v1 import inference_pb2, inference_pb2_grpc

LEVELS = (1, 8, 32)
#: Each level's time is split into this many interleaved rounds per path.
ROUNDS = 3
PHOTOS = ("chelsea", "coffee", "astronaut")
#: "clearly faster than bare" at concurrency 8, made a number.
CLEARLY = 1.2


def pixels(data: bytes) -> np.ndarray:
    return batch_from_images([decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30).image])


def drive(call: Callable[[bytes], object], images: list[bytes], threads: int, seconds: float) -> dict:
    """``threads`` workers call ``call`` back to back for ``seconds``; throughput and latency."""
    lat: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start_gate = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(n: int) -> None:
        start_gate.wait()
        i = n
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            try:
                call(images[i % len(images)])
            except BaseException as exc:  # noqa: BLE001 - reported, never hidden
                errors.append(exc)
                return
            lat[n].append(time.perf_counter() - t)
            i += 1

    pool = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for t in pool:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    begin = time.perf_counter()
    start_gate.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - begin
    if errors:
        raise RuntimeError(f"{len(errors)} calls failed, first: {errors[0]!r}")
    flat = [x for per in lat for x in per]
    return {"threads": threads, "requests": len(flat), "seconds": elapsed, "img_per_s": len(flat) / elapsed, **latency(flat), "_samples": flat}


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int], pgids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` and every process in ``pgids`` (Triton's
    server and its model stubs share one process group), read from /proc."""
    total = 0
    wanted = set(pids)
    groups = set(pgids)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state ppid pgrp ... utime (14th field overall) stime (15th)
        if int(entry) in wanted or int(fields[2]) in groups:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def combine(parts: list[dict]) -> dict:
    """One result from the rounds of one path at one level: summed requests over summed time."""
    samples = [x for p in parts for x in p["_samples"]]
    seconds = sum(p["seconds"] for p in parts)
    return {
        "threads": parts[0]["threads"],
        "rounds": len(parts),
        "requests": len(samples),
        "seconds": seconds,
        "img_per_s": len(samples) / seconds,
        "img_per_s_by_round": [p["img_per_s"] for p in parts],
        "cpu_s": sum(p.get("cpu_s", 0.0) for p in parts),
        **latency(samples),
    }


def backbone_counts(triton: TritonModels) -> tuple[int, int, int, int]:
    """(inferences, executions, compute_infer ns, queue ns) of the backbone model so far."""
    stats = triton._client.get_inference_statistics(BACKBONE_MODEL, as_json=True)
    s = stats["model_stats"][0]
    inf = s.get("inference_stats", {})
    return (
        int(s.get("inference_count", 0)),
        int(s.get("execution_count", 0)),
        int(inf.get("compute_infer", {}).get("ns", 0)),
        int(inf.get("queue", {}).get("ns", 0)),
    )


def run(addresses: dict[str, str], quick: bool = False, log=print, pids: dict[str, int] | None = None, triton_token: str = "") -> dict:  # type: ignore[no-untyped-def]
    """``pids``: {"triton": tritonserver pid (= its process group), "inference": service pid}
    for the CPU-time accounting; without them only wall-clock figures are reported."""
    seconds = 4.0 if quick else 10.0
    images = [datasets.sample_photo(name) for name in PHOTOS]
    results: dict[str, dict[int, dict]] = {"predict": {}, "triton": {}, "bare": {}, "bare_1thread": {}}

    # -- bare model in-process --------------------------------------------------------------
    threads_used = backbone.configure_torch_threads()
    model = backbone.load_efficientnet()

    def bare(data: bytes) -> object:
        _, probs = backbone.embed_and_classify(model, pixels(data))
        return np.argsort(-probs[0])[:5]

    # -- direct Triton ----------------------------------------------------------------------
    triton = TritonModels(addresses["triton"], access_token=triton_token)  # the stack's Triton wants its token

    def direct(data: bytes) -> object:
        return np.argsort(-triton.classify(pixels(data))[0])[:5]

    # -- the service ------------------------------------------------------------------------
    channel = client_channel(addresses["inference"], api_key=addresses.get("admin_key", ""), options=[("grpc.max_send_message_length", 64 << 20)])
    stub = inference_pb2_grpc.InferenceServiceStub(channel)

    def predict(data: bytes) -> object:
        return stub.Predict(inference_pb2.PredictRequest(model_id="general", images=[data], top_k=5), timeout=120)

    def bare_1thread(data: bytes) -> object:  # torch threads are switched around its rounds
        return bare(data)

    paths: dict[str, Callable[[bytes], object]] = {"bare": bare, "triton": direct, "predict": predict}
    if threads_used != 1:
        # Diagnostic: the same bare model with one intra-op thread instead of the configured
        # budget. On a shared 2-core host OpenMP's spinning barriers make 2 threads far slower
        # than 1 whenever the other core is busy.
        paths["bare_1thread"] = bare_1thread
    try:
        for fn in paths.values():
            for data in images * 2:  # warm-up
                fn(data)
        for c in LEVELS:
            names = [n for n in paths if n != "bare_1thread" or c in LEVELS[:2]]
            parts: dict[str, list[dict]] = {n: [] for n in names}
            deltas = {n: [0, 0, 0, 0] for n in names}
            # Interleaved rounds, order rotated each round: the machine is shared and its load
            # moves within minutes, so every path sees the same mix of quiet and busy moments.
            for rnd in range(ROUNDS):
                for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                    before = backbone_counts(triton) if name in ("triton", "predict") else (0, 0, 0, 0)
                    if name == "bare_1thread":
                        torch.set_num_threads(1)
                    # CPU seconds of everything doing the work: this process (the bare model, or
                    # the client side), plus Triton for the served paths, plus the service.
                    who = {"bare": [], "bare_1thread": [], "triton": ["triton"], "predict": ["triton", "inference"]}[name]
                    procs = [os.getpid()] + ([pids["inference"]] if pids and "inference" in who else [])
                    groups = [pids["triton"]] if pids and "triton" in who else []
                    cpu0 = cpu_seconds(procs, groups)
                    try:
                        part = drive(paths[name], images, c, seconds / ROUNDS)
                        part["cpu_s"] = cpu_seconds(procs, groups) - cpu0
                        parts[name].append(part)
                    finally:
                        if name == "bare_1thread":
                            torch.set_num_threads(threads_used)
                    if name in ("triton", "predict"):
                        after = backbone_counts(triton)
                        deltas[name] = [d + a - b for d, a, b in zip(deltas[name], after, before)]
            for name in names:
                r = combine(parts[name])
                if name in ("triton", "predict"):
                    inf, execs, compute, queue = deltas[name]
                    r["triton_mean_batch"] = inf / execs if execs else 0.0
                    # Raw deltas of Triton's own statistics, kept for profiling. Triton sums
                    # compute/queue time per *request*, so they are not per-batch times.
                    r["triton_stats_delta"] = {"inferences": inf, "executions": execs, "compute_infer_ns": compute, "queue_ns": queue}
                results[name][c] = r
                r["img_per_cpu_s"] = r["requests"] / r["cpu_s"] if r["cpu_s"] > 0 else 0.0
                rounds = " / ".join(f"{x:.1f}" for x in r["img_per_s_by_round"])
                log(
                    f"  {name:12s} c={c:<3d} {r['img_per_s']:6.1f} img/s  p50 {ms(r['p50_s'])}  p99 {ms(r['p99_s'])}  "
                    f"{r['img_per_cpu_s']:5.1f} img/CPU-s  (rounds {rounds})"
                )
    finally:
        channel.close()
        triton.close()

    rows: list[Row] = []
    for c in LEVELS:
        p, t, b = results["predict"][c], results["triton"][c], results["bare"][c]
        goal, met = "", None
        if c == 1:
            goal, met = "≥ 0.9× bare", p["img_per_s"] >= 0.9 * b["img_per_s"]
        elif c == 8:
            goal, met = f"clearly > bare (≥ {CLEARLY}×)", p["img_per_s"] >= CLEARLY * b["img_per_s"]
        rows.append(
            Row(
                f"Predict, concurrency {c}",
                f"{p['img_per_s']:.1f} img/s, p50 {ms(p['p50_s'])}, p99 {ms(p['p99_s'])}",
                f"bare in-process batch 1: {b['img_per_s']:.1f} img/s, p50 {ms(b['p50_s'])}",
                f"{p['img_per_s'] / b['img_per_s']:.2f}×",
                goal,
                met,
            )
        )
        rows.append(
            Row(
                f"Triton direct, concurrency {c}",
                f"{t['img_per_s']:.1f} img/s, p50 {ms(t['p50_s'])}, mean batch {t['triton_mean_batch']:.1f}",
                f"bare in-process: {b['img_per_s']:.1f} img/s; Predict/Triton {p['img_per_s'] / t['img_per_s']:.2f}×",
                f"{t['img_per_s'] / b['img_per_s']:.2f}×",
            )
        )
    for c, r in results["bare_1thread"].items():
        b = results["bare"][c]
        rows.append(
            Row(
                f"bare in-process, 1 torch thread, concurrency {c} (diagnostic)",
                f"{r['img_per_s']:.1f} img/s, p50 {ms(r['p50_s'])}, p99 {ms(r['p99_s'])}",
                f"bare with {threads_used} threads (the configured budget): {b['img_per_s']:.1f} img/s",
                f"{r['img_per_s'] / b['img_per_s']:.2f}×",
            )
        )
    if pids:
        # Throughput on a shared host is also a contest for CPU share (a path with more runnable
        # threads gets more of it); images per CPU-second is the cost of a path whatever share
        # it got.
        for c in LEVELS:
            p, t, b = results["predict"][c], results["triton"][c], results["bare"][c]
            rows.append(
                Row(
                    f"CPU cost, concurrency {c}: Predict (client + service + Triton)",
                    f"{p['img_per_cpu_s']:.1f} img per CPU-s (Triton direct {t['img_per_cpu_s']:.1f})",
                    f"bare in-process {b['img_per_cpu_s']:.1f} img per CPU-s",
                    f"{p['img_per_cpu_s'] / b['img_per_cpu_s']:.2f}×" if b["img_per_cpu_s"] else "",
                )
            )
    t1 = results["triton"][1]["img_per_s"]
    for c in LEVELS[1:]:
        t = results["triton"][c]
        rows.append(
            Row(
                f"Triton dynamic batching, c={c} vs c=1",
                f"{t['img_per_s']:.1f} img/s (mean batch {t['triton_mean_batch']:.1f})",
                f"c=1: {t1:.1f} img/s (mean batch {results['triton'][1]['triton_mean_batch']:.1f})",
                f"{t['img_per_s'] / t1:.2f}×",
            )
        )
    return {
        "seconds_per_level": seconds,
        "torch_threads_bare": threads_used,
        "photos": list(PHOTOS),
        "results": {k: {str(c): r for c, r in v.items()} for k, v in results.items()},
        "rows": [r.as_dict() for r in rows],
    }
