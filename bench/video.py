"""Video ingest throughput and memory (issue 18), stackless: clips made in-run from the bundled
photos (PyAV/x264), then, interleaved in rounds so load drift hits every path alike:

- bare decode: every frame decoded with the same library and threading, nothing else;
- decode + sample: + the 64×36 luma thumbnail of every frame, the sampler, RGB of kept frames;
- decode + sample + embed: + JPEG of each kept frame (as ingestion stores it) and the
  EfficientNet-Lite0 embedding in-process as the product serves it: the exported graph in ONNX
  Runtime (all graph optimisations, 2 intra-op threads: the Triton CPU instance's session) in
  chunks of the backbone's CPU max batch (4, what the embedding worker sends), after the
  embedding service's preprocessing of the stored JPEG.

Figures are seconds of video per wall second. Memory: peak RSS of a child process that decodes
and samples a long clip against one that does a 1-minute clip (streamed, never all frames).

    python -m bench.video [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from firstlight.config import VideoLimits
from firstlight.video import synth
from firstlight.video.decode import open_video
from firstlight.video.frames import sample_frames
from firstlight.video.ingest import FRAME_BATCH
from firstlight.video.sampler import FrameSampler

LIMITS = VideoLimits()
#: Grain and bitrate of the throughput clips: those of phone and camera footage (a clean pan
#: over a photo codes at CRF 23 in ~0.1 Mbit/s at 480p and ~0.5 at 1080p).
GRAIN = 4.0


def make_clip(path: Path, width: int, height: int, seconds: float, fps: int, preset: str = "veryfast", grain: float = 0.0, mbit_s: float = 0.0) -> Path:
    """Pans over the bundled photos, 5 s per shot, H.264 in MP4. ``grain``: sensor-like noise
    (σ in 0-255 levels, 8 patterns cycled) and ``mbit_s`` (a target bitrate instead of CRF 23) so
    the stream is like camera footage rather than a clean pan over a still photo, which x264
    codes in a tenth of the bits and which decodes several times faster than real video."""
    import av
    import numpy as np

    photos = synth.photo_arrays()
    shot_s = 5.0
    shots = [synth.Shot(photos[i % len(photos)], shot_s) for i in range(int(seconds / shot_s + 0.999))]
    rng = np.random.default_rng(0)
    noise = [rng.normal(0, grain, (height, width, 1)).astype(np.int16) for _ in range(8)] if grain else []
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, **({"b": f"{int(mbit_s * 1e6)}"} if mbit_s else {"crf": "23"})}
        for i, array in enumerate(synth.frames(shots, width, height, fps)):
            if noise:
                array = np.clip(array + noise[i % len(noise)], 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def bare_decode(path: Path) -> int:
    """Every frame decoded, same library and threading as the reader, nothing kept."""
    import av

    n = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            n += 1
    return n


def sample_only(path: Path) -> int:
    with open_video(path, LIMITS) as reader:
        return sum(1 for _ in sample_frames(reader, FrameSampler.from_limits(LIMITS)))


#: Frames handed from the decode to the embedding at once (ingestion's FRAME_BATCH) and images
#: per forward pass (the Triton backbone's CPU max_batch_size, the embedding worker's chunk).
HANDOFF = FRAME_BATCH
CHUNK = 4


def load_model(cache_dir: Path, threads: int = 2):  # type: ignore[no-untyped-def]
    """The product's CPU serving path: the backbone exported to ONNX, ORT with all graph
    optimisations and one Triton instance's threads (FIRSTLIGHT_TORCH_THREADS, 2)."""
    from firstlight.models.onnx_backbone import OrtBackbone, cached_onnx

    return OrtBackbone(cached_onnx(cache_dir), threads=threads)


def sample_embed(path: Path, model, batch: int = HANDOFF, chunk: int = CHUNK) -> int:  # type: ignore[no-untyped-def]
    from PIL import Image

    from firstlight.models.preprocess import batch_from_images

    kept, pending = 0, []

    def flush() -> None:
        if pending:
            model.embed_and_classify(batch_from_images(pending), max_chunk=chunk)
            pending.clear()

    with open_video(path, LIMITS) as reader:
        for frame in sample_frames(reader, FrameSampler.from_limits(LIMITS), LIMITS.video_frame_max_side):
            buf = io.BytesIO()
            frame.image.save(buf, "JPEG", quality=90)
            pending.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))  # what the worker decodes
            kept += 1
            if len(pending) >= batch:
                flush()
    flush()
    return kept


def sample_embed_pipelined(path: Path, model, batch: int = HANDOFF, chunk: int = CHUNK) -> int:  # type: ignore[no-untyped-def]
    """As :func:`sample_embed`, with the decode + sample + JPEG of the next batch running while
    the previous batch is embedded, as the stack runs them (the ingestion service decodes, the
    embedding service embeds what it announced). One batch in flight."""
    import queue
    import threading

    from PIL import Image

    from firstlight.models.preprocess import batch_from_images

    batches: queue.Queue = queue.Queue(maxsize=1)
    kept = 0

    def produce() -> None:
        nonlocal kept
        pending: list = []
        try:
            with open_video(path, LIMITS) as reader:
                for frame in sample_frames(reader, FrameSampler.from_limits(LIMITS), LIMITS.video_frame_max_side):
                    buf = io.BytesIO()
                    frame.image.save(buf, "JPEG", quality=90)
                    pending.append(buf.getvalue())
                    kept += 1
                    if len(pending) >= batch:
                        batches.put(pending)
                        pending = []
            if pending:
                batches.put(pending)
        finally:
            batches.put(None)

    worker = threading.Thread(target=produce)
    worker.start()
    while (jpegs := batches.get()) is not None:
        images = [Image.open(io.BytesIO(j)).convert("RGB") for j in jpegs]  # what the worker decodes
        model.embed_and_classify(batch_from_images(images), max_chunk=chunk)
    worker.join()
    return kept


def _timed(fn, *args) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def throughput(path: Path, seconds: float, model, rounds: int) -> dict:  # type: ignore[no-untyped-def]
    best = {"bare": float("inf"), "sample": float("inf"), "embed": float("inf"), "pipelined": float("inf")}
    kept = 0
    for r in range(rounds):
        order = [
            ("bare", bare_decode), ("sample", sample_only), ("embed", lambda p: sample_embed(p, model)),
            ("pipelined", lambda p: sample_embed_pipelined(p, model)),
        ]  # fmt: skip
        order = order[r % 4 :] + order[: r % 4]  # rotate: each path sees each moment of the run
        for name, fn in order:
            wall, out = _timed(fn, path)
            best[name] = min(best[name], wall)
            if name == "embed":
                kept = out
    return {
        "video_s": seconds,
        "frames_kept": kept,
        "bare_x_realtime": seconds / best["bare"],
        "sample_x_realtime": seconds / best["sample"],
        "embed_x_realtime": seconds / best["embed"],
        "pipelined_x_realtime": seconds / best["pipelined"],
        "sample_cost_vs_bare": best["sample"] / best["bare"],
    }


def peak_rss_mb(path: Path) -> dict:
    """Peak RSS of a fresh process that decodes + samples ``path`` (and JPEG-encodes kept
    frames), and its RSS after imports, before the decode."""
    out = subprocess.run([sys.executable, "-m", "bench.video", "--memory-child", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mb(field: str = "VmRSS") -> float:
    """From /proc (VmHWM: this process's peak). Not ru_maxrss: Linux carries the forking
    parent's peak into it across exec, and the parent here holds the embedding model."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _memory_child(path: Path) -> None:
    before = _rss_mb()
    with open_video(path, LIMITS) as reader:
        for frame in sample_frames(reader, FrameSampler.from_limits(LIMITS), LIMITS.video_frame_max_side):
            frame.image.save(io.BytesIO(), "JPEG", quality=90)
    print(json.dumps({"peak_rss_mb": _rss_mb("VmHWM"), "rss_before_mb": before}))


def run(quick: bool = False, log=print) -> dict:  # type: ignore[no-untyped-def]
    from bench.common import Row

    rounds = 2 if quick else 3
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(Path(tmp) / "onnx")
        # (width, height, seconds, grain, Mbit/s; 0: CRF 23)
        clips = {
            "480p clean pan": (854, 480, 20.0 if quick else 40.0, 0.0, 0.0),
            "480p camera-like": (854, 480, 10.0 if quick else 20.0, GRAIN, 2.0),
            "1080p camera-like": (1920, 1080, 4.0 if quick else 8.0, GRAIN, 8.0),
        }
        for name, (w, h, seconds, grain, mbit) in clips.items():
            t = time.perf_counter()
            path = make_clip(Path(tmp) / "clip.mp4", w, h, seconds, 30, grain=grain, mbit_s=mbit)
            mbps = path.stat().st_size * 8 / seconds / 1e6
            log(f"  {name}: {seconds:.0f} s at 30 fps made in {time.perf_counter() - t:.0f}s ({mbps:.1f} Mbit/s)")
            results[name] = {**throughput(path, seconds, model, rounds), "mbit_per_s": mbps}
            log(f"  {name}: {results[name]}")
        long_s = 600.0 if quick else 3600.0
        t = time.perf_counter()
        short = make_clip(Path(tmp) / "short.mp4", 640, 360, 60.0, 2, preset="ultrafast")
        long = make_clip(Path(tmp) / "long.mp4", 640, 360, long_s, 2, preset="ultrafast")
        log(f"  memory clips (360p, 2 fps: 1 min and {long_s / 60:.0f} min) made in {time.perf_counter() - t:.0f}s")
        m_short, m_long = peak_rss_mb(short), peak_rss_mb(long)
        results["memory"] = {
            "short_s": 60.0, "long_s": long_s, "short_peak_mb": m_short["peak_rss_mb"], "long_peak_mb": m_long["peak_rss_mb"],
            "rss_before_decode_mb": m_long["rss_before_mb"],
        }  # fmt: skip
    mem = results["memory"]
    rows = []
    for name in clips:
        r = results[name]
        label = f"video {name} ({r['mbit_per_s']:.1f} Mbit/s H.264)"
        rows.append(Row(
            f"{label}: decode + sample (1 fps + scenes)", f"{r['sample_x_realtime']:.1f}× real time",
            f"bare decode {r['bare_x_realtime']:.1f}× real time", f"{r['sample_cost_vs_bare']:.2f}× the decode time",
            "≤ 1.3×", r["sample_cost_vs_bare"] <= 1.3,
        ).as_dict())  # fmt: skip
        is480 = name.startswith("480p")
        rows.append(Row(
            f"{label}: decode + sample + embed ({r['frames_kept']} frames)", f"{r['embed_x_realtime']:.1f}× real time",
            f"bare decode {r['bare_x_realtime']:.1f}× real time", f"{r['bare_x_realtime'] / r['embed_x_realtime']:.2f}× the decode time",
            "≥ 20× real time" if is480 else "", (r["embed_x_realtime"] >= 20) if is480 else None,
        ).as_dict())  # fmt: skip
        rows.append(Row(
            f"{label}: decode + sample + embed, pipelined (decode overlaps the embedding, as ingestion and the embedding service run)",
            f"{r['pipelined_x_realtime']:.1f}× real time", f"serial {r['embed_x_realtime']:.1f}× real time",
            f"{r['pipelined_x_realtime'] / r['embed_x_realtime']:.2f}× the serial speed",
            "≥ 20× real time" if is480 else "", (r["pipelined_x_realtime"] >= 20) if is480 else None,
        ).as_dict())  # fmt: skip
    rows.append(Row(
        f"video memory: peak RSS, {mem['long_s'] / 60:.0f}-min clip", f"{mem['long_peak_mb']:.0f} MB ({mem['rss_before_decode_mb']:.0f} MB before decoding)",
        f"1-min clip {mem['short_peak_mb']:.0f} MB", f"{mem['long_peak_mb'] / mem['short_peak_mb']:.2f}×",
        "bounded (≈ 1×)", mem["long_peak_mb"] <= 1.2 * mem["short_peak_mb"],
    ).as_dict())  # fmt: skip
    return {**results, "rows": rows}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child)
        return 0
    out = run(quick=args.quick)
    print(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
