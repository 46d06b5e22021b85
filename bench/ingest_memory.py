"""Ingestion's memory under a burst of large uploads (issue 14, item 6), through the real gRPC
server: a local broker and one ingestion process (authentication off, no Triton needed), N
concurrent PostInputs of one W×H JPEG each; the process's RSS sampled from /proc every 20 ms.

    python -m bench.ingest_memory [--uploads 30] [--after 60]

Prints baseline, peak, and RSS 2 s and ``--after`` s after the burst, in MB."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from firstlight.messaging.broker import LocalBroker
from firstlight.stack import free_port, wait_serving
from firstlight.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def jpeg(width: int, height: int) -> bytes:
    """A photo-like JPEG (smooth gradients plus noise), a few MB at 40 MP."""
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (width + height)], -1).astype(np.uint8)
    pixels += np.random.default_rng(0).integers(0, 8, pixels.shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def run(uploads: int = 30, width: int = 7296, height: int = 5472, after_s: float = 60.0, log=print) -> dict:  # type: ignore[no-untyped-def]
    data = jpeg(width, height)
    log(f"{uploads} uploads of a {width}x{height} JPEG ({len(data) / 1e6:.1f} MB)")
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(log_file=Path(tmp) / "broker.log") as broker:
        port = free_port()
        env = dict(
            os.environ,
            FIRSTLIGHT_KAFKA_BOOTSTRAP=broker.bootstrap,
            FIRSTLIGHT_DATA_DIR=str(Path(tmp) / "ingestion"),
            FIRSTLIGHT_GRPC_HOST="127.0.0.1",
            FIRSTLIGHT_GRPC_PORT=str(port),
            FIRSTLIGHT_AUTH_REQUIRED="false",
            FIRSTLIGHT_MAX_IMAGE_BYTES=str(32 << 20),
            PYTHONUNBUFFERED="1",
        )
        with open(Path(tmp) / "ingestion.log", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "firstlight.ingestion.main"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            address = f"127.0.0.1:{port}"
            wait_serving(address, 120, proc, Path(tmp) / "ingestion.log")
            opts = [("grpc.max_send_message_length", 64 << 20)]
            with grpc.insecure_channel(address, options=opts) as channel:
                stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
                stub.CreateApp(ingestion_pb2.CreateAppRequest(id="mem"), timeout=30)
                time.sleep(2)
                baseline = rss_mb(proc.pid)
                peak, stop = [baseline], threading.Event()

                def sample() -> None:
                    while not stop.is_set():
                        peak[0] = max(peak[0], rss_mb(proc.pid))
                        time.sleep(0.02)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()

                def upload(n: int) -> str:
                    request = ingestion_pb2.PostInputsRequest(app_id="mem", inputs=[common_pb2.InputSpec(id=f"i{n}", image_bytes=data)])
                    try:
                        stub.PostInputs(request, timeout=300)
                        return "ok"
                    except grpc.RpcError as exc:
                        return exc.code().name  # type: ignore[attr-defined]

                started = time.monotonic()
                with ThreadPoolExecutor(uploads) as pool:
                    outcomes = list(pool.map(upload, range(uploads)))
                burst_s = time.monotonic() - started
                time.sleep(2)
                after_2s = rss_mb(proc.pid)
                time.sleep(max(0.0, after_s - 2))
                stop.set()
                sampler.join()
                result = {
                    "uploads": uploads, "image": f"{width}x{height}", "jpeg_mb": round(len(data) / 1e6, 1),
                    "ok": outcomes.count("ok"), "outcomes": sorted(set(outcomes)), "burst_s": round(burst_s, 1),
                    "baseline_mb": round(baseline), "peak_mb": round(peak[0]), "after_2s_mb": round(after_2s),
                    f"after_{after_s:.0f}s_mb": round(rss_mb(proc.pid)),
                }  # fmt: skip
                log(result)
                return result
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=30)
    parser.add_argument("--after", type=float, default=60.0)
    args = parser.parse_args()
    run(args.uploads, after_s=args.after)
