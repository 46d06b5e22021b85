"""Deep templates on ONNX Runtime (issue 17): predict throughput of an exported deep version in
ONNX Runtime against its TorchScript, the two runtimes Triton's deep model.py chooses between,
in one process and one run, on the same folder and the same pixels.

* ``visual_classifier`` with its defaults (``efficientnet_lite0``, 128 px, flip averaging on, so
  two forward passes per image), the packaged ImageNet weights and a new 10-concept head;
* ``visual_detector`` with its defaults (``small_cnn``, 128 px, flip averaging on): the maps in
  ONNX Runtime and the decode/NMS in TorchScript after them, against the whole TorchScript.

Both runtimes get the thread count Triton's instance gets (firstlight.triton.tuning: one per
core up to 4, FIRSTLIGHT_TORCH_THREADS wins), idle ONNX Runtime threads waiting passively as in
serving. Batch 1 (a lone Predict) and 8; the two runtimes alternate in rounds and each keeps its
best round (the host is shared). Figures: images/s (wall) and CPU ms per image (process CPU time,
all threads). Needs no stack:

    python -m bench.deep_serving            # or: python -m bench --only deep_serving
    python -m bench.deep_serving --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import Row

RESULTS = Path(__file__).parent / "results"
SIZE = 128  # the deep templates' default image_size
BATCHES = (1, 8)


def _classifier_version(repository: Path) -> Path:
    from firstlight.training.deep.classifier import ClassifierExport, EfficientNetClassifier
    from firstlight.training.deep.context import DeepTrainResult, OutputSpec
    from firstlight.training.deep.triton_export import export_deep

    torch.manual_seed(0)
    net = EfficientNetClassifier(10).to(memory_format=torch.channels_last)
    module = ClassifierExport(net, logreg=False, average_flips=True).eval()
    result = DeepTrainResult("classifier", module, SIZE, [OutputSpec("PROBS", "TYPE_FP32", [10])], "accuracy", {}, {})
    return repository / export_deep(repository, "bench", "clf", 1, result, [f"c{i}" for i in range(10)]) / "1"


def _detector_version(repository: Path) -> Path:
    from firstlight.training.deep.context import DeepTrainResult, OutputSpec
    from firstlight.training.deep.detector import MAX_DETECTIONS, OUTPUT_NAME, DetectorNet, onnx_plan, script_export
    from firstlight.training.deep.triton_export import export_deep

    torch.manual_seed(0)
    net = DetectorNet(3, True, "small_cnn").eval()
    with torch.no_grad():  # some peaks above the threshold, so the decode has boxes to sort
        net.heat.weight.mul_(30)
        net.heat.bias.zero_()
    result = DeepTrainResult(
        "detector",
        script_export(net, SIZE, True, 0.3),
        SIZE,
        [OutputSpec(OUTPUT_NAME, "TYPE_FP32", [MAX_DETECTIONS, 6])],
        "map_50",
        {},
        {},
        onnx=onnx_plan(net, SIZE, True, 0.3),
    )
    return repository / export_deep(repository, "bench", "det", 1, result, ["a", "b", "c"]) / "1"


def _time(runner: Any, pixels: np.ndarray, seconds: float) -> tuple[float, float]:
    """(images/s wall, CPU seconds per image) over at least ``seconds`` of repeated calls."""
    runner.run(pixels)  # warm-up
    n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        runner.run(pixels)
        n += 1
        wall = time.perf_counter() - wall0
        if wall >= seconds and n >= 3:
            break
    cpu = time.process_time() - cpu0
    images = n * len(pixels)
    return images / wall, cpu / images


def compare(folder: Path, threads: int, seconds: float, rounds: int) -> dict[str, Any]:
    from firstlight.models.deep_runtime import DeepRunner

    torch.set_num_threads(threads)
    runners = {"onnxruntime": DeepRunner(folder, threads=threads), "torch": DeepRunner(folder, threads=threads, runtime="torch")}
    assert runners["onnxruntime"].runtime == "onnxruntime" and runners["torch"].runtime == "torch"
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for batch in BATCHES:
        pixels = rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
        a, b = runners["onnxruntime"].run(pixels), runners["torch"].run(pixels)
        diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for name, runner in runners.items():
                ips, cpu = _time(runner, pixels, seconds)
                if name not in best or ips > best[name][0]:
                    best[name] = (ips, cpu)
        out[str(batch)] = {name: {"images_per_s": v[0], "cpu_ms_per_image": v[1] * 1e3} for name, v in best.items()}
        out[str(batch)]["max_abs_diff"] = diff
    return out


def run(quick: bool = False, log=print) -> dict:  # type: ignore[no-untyped-def]
    from firstlight.config import TritonSettings
    from firstlight.triton.tuning import choose

    threads = choose(TritonSettings(), device="cpu").torch_threads
    seconds, rounds = (1.0, 2) if quick else (3.0, 3)
    out: dict[str, Any] = {"threads": threads, "image_size": SIZE}
    labels = {
        "classifier": "visual_classifier (EfficientNet-Lite0, flip-averaged)",
        "detector": "visual_detector (small_cnn, flip-averaged; decode/NMS in torch after ORT)",
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-deep-serving-") as tmp:
        for name, make in (("classifier", _classifier_version), ("detector", _detector_version)):
            folder = make(Path(tmp) / name)
            out[name] = res = compare(folder, threads, seconds, rounds)
            for batch in BATCHES:
                r = res[str(batch)]
                o, t = r["onnxruntime"], r["torch"]
                log(
                    f"  {name} batch {batch}: ORT {o['images_per_s']:.1f} img/s ({o['cpu_ms_per_image']:.1f} CPU ms/img), "
                    f"TorchScript {t['images_per_s']:.1f} img/s ({t['cpu_ms_per_image']:.1f} CPU ms/img), max |diff| {r['max_abs_diff']:.1e}"
                )
                rows.append(
                    Row(
                        f"deep predict: {labels[name]}, {SIZE} px, batch {batch}, {threads} threads",
                        f"ONNX Runtime {o['images_per_s']:.1f} img/s, {o['cpu_ms_per_image']:.1f} CPU ms/img",
                        f"TorchScript {t['images_per_s']:.1f} img/s, {t['cpu_ms_per_image']:.1f} CPU ms/img",
                        f"{o['images_per_s'] / t['images_per_s']:.2f}×",
                    )
                )
    out["rows"] = [r.as_dict() for r in rows]
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.deep_serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter timing rounds")
    args = p.parse_args(argv)
    result = run(quick=args.quick)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deep_serving.json").write_text(json.dumps(result, indent=2, default=float))
    for r in result["rows"]:
        print(f"| {r['benchmark']} | {r['figure']} | {r['baseline']} | {r['ratio']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
