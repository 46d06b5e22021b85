"""Ingest → searchable: images/s through the whole path (gRPC upload → outbox → Kafka →
embedding via Triton → Kafka → Qdrant upsert) against the bare backbone forward pass on the
same images at the same batch size, plus upload-to-searchable latency percentiles."""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from bench.inference import cpu_seconds
from firstlight import datasets
from firstlight.images import decode_image
from firstlight.models import backbone
from firstlight.models.preprocess import batch_from_images
from firstlight.sdk import Firstlight, UploadItem
from firstlight.stack import LocalStack
from firstlight.triton.client import BACKBONE_MODEL, TritonModels


def stack_cpu_seconds(stack: LocalStack) -> float:
    """CPU seconds used so far by this process and every process of the stack (broker, Triton
    and its stubs, the services)."""
    pids = [os.getpid()] + [svc.proc.pid for svc in stack.services.values() if svc.proc is not None]
    if stack.broker is not None and stack.broker.pid:
        pids.append(stack.broker.pid)
    groups = [stack.triton.pid] if stack.triton is not None and stack.triton.pid else []
    return cpu_seconds(pids, groups)


def bare_backbone_images_per_s(images: list[bytes], batch: int) -> float:
    """Decode + preprocess + forward in-process, the way the embedding step does it, with the
    best runtime at hand (ONNX Runtime, as Triton's backbone runs it; issue 17: the goal is
    against the best bare path, not torch eager)."""
    import tempfile
    from pathlib import Path

    from firstlight.models.onnx_backbone import OrtBackbone, cached_onnx

    threads = backbone.configure_torch_threads()
    with tempfile.TemporaryDirectory() as tmp:
        model = OrtBackbone(cached_onnx(Path(tmp)), threads=threads)
    model.embed_and_classify(batch_from_images([decode_image(images[0], max_bytes=1 << 30, max_pixels=1 << 30).image]))
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        pixels = batch_from_images([decode_image(d, max_bytes=1 << 30, max_pixels=1 << 30).image for d in images[i : i + batch]])
        model.embed_and_classify(pixels)
    return len(images) / (time.perf_counter() - start)


def run(stack: LocalStack, n_per_class: int = 100, batch: int = 16) -> dict:
    animals = datasets.animal_mnist(n_per_class, seed=3)
    images = [data for _, _, data in animals]
    if True:  # (kept flat: one stack serves every benchmark of a run)
        # The bare baseline runs before and after the full path and the mean is the baseline:
        # on a shared machine the load moves within minutes, and interleaving cancels a drift.
        cpu0 = cpu_seconds([os.getpid()], [])
        bare_before = bare_backbone_images_per_s(images, batch)
        bare_cpu = cpu_seconds([os.getpid()], []) - cpu0
        with Firstlight.from_addresses(stack.addresses) as client:
            client.create_app("bench")
            items = [UploadItem(data, [name], id=i) for i, name, data in animals]
            sent_at: dict[int, float] = {}
            lock = threading.Lock()

            def mark(_: int) -> None:
                with lock:
                    sent_at[len(sent_at)] = time.perf_counter()

            cpu_full0 = stack_cpu_seconds(stack)
            start = time.perf_counter()
            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def watch() -> None:  # index count over time → per-input upload-to-searchable latency
                while not stop.is_set():
                    samples.append((time.perf_counter(), client.indexed_count("bench")))
                    # 5 probes/s: latencies are seconds, and at 20/s the probe (four thread hops
                    # and a filtered count in the search service each) cost ~8% of a core.
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch)
            watcher.start()
            report = client.upload("bench", items, chunk=100, on_progress=mark)
            client.wait_indexed("bench", len(items), timeout=1800)
            total = time.perf_counter() - start
            full_cpu = stack_cpu_seconds(stack) - cpu_full0
            stop.set()
            watcher.join()
    cpu0 = cpu_seconds([os.getpid()], [])
    bare_after = bare_backbone_images_per_s(images, batch)
    bare_cpu += cpu_seconds([os.getpid()], []) - cpu0
    bare = (bare_before + bare_after) / 2
    # Diagnostic: the bare backbone at the batch size the served path runs (Triton's max batch,
    # which the embedding worker's chunks follow), with the same thread budget.
    with TritonModels(stack.addresses["triton"], access_token=stack.triton_token) as triton:
        served_batch = triton.max_batch_size(BACKBONE_MODEL)
    bare_served = bare_backbone_images_per_s(images, served_batch)
    # The k-th input became searchable when the count first reached k (inputs are indexed
    # roughly in upload order; this is an estimate, not per-input tracing).
    latencies = []
    for k in range(len(items)):
        t_index = next((t for t, n in samples if n >= k + 1), samples[-1][0])
        latencies.append(t_index - sent_at.get(k, start))
    full = len(report.input_ids) / total
    return {
        "images": len(items),
        "batch": batch,
        "upload_s": report.seconds,
        "searchable_s": total,
        "full_path_img_per_s": full,
        "bare_backbone_img_per_s": bare,
        "bare_backbone_before_after_img_per_s": [bare_before, bare_after],
        "served_batch": served_batch,
        "bare_backbone_at_served_batch_img_per_s": bare_served,
        # Images per CPU-second: what each path costs whatever CPU share the shared host gave it
        # (the full path counts every stack process, idle polling included).
        "full_path_img_per_cpu_s": len(report.input_ids) / full_cpu if full_cpu > 0 else 0.0,
        "bare_backbone_img_per_cpu_s": 2 * len(images) / bare_cpu if bare_cpu > 0 else 0.0,
        "ratio_vs_bare": full / bare,
        "latency_p50_s": float(np.percentile(latencies, 50)),
        "latency_p99_s": float(np.percentile(latencies, 99)),
    }
