"""Acceptance 3: train ``visual_detector`` on generated scenes on CPU and measure mAP@0.5.

    python -m bench.detector                      # 3000/300/500 scenes, 128 px, 10 animals
    python -m bench.detector --quick              # a smoke-sized run
    python -m bench.detector --out bench/results/detector

Scenes come from :mod:`firstlight.training.deep.scenes` (animal-mnist silhouettes pasted on noise,
gradients, stripes and sample-photo crops; test scenes use animal images never trained on). Writes
``detector.json`` (settings, per-epoch history, validation/test mAP@0.5 and per-class AP, timings)
and ``detections_test.png`` (predicted and true boxes on test scenes) under ``--out``, and checks
the TorchScript export on the test scenes gives the same detections as the eager model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from firstlight.training.deep import hyper as deep_hyper
from firstlight.training.deep.det_metrics import Detection, mean_average_precision
from firstlight.training.deep.detector import TEMPLATE, evaluate, resize_whole
from firstlight.training.deep.loop import LocalContext
from firstlight.training.deep.scenes import scene_data

RESULTS = Path(__file__).parent / "results" / "detector"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--validation", type=int, default=300)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=None, help="num_epochs (default: the template's)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("FIRSTLIGHT_TORCH_THREADS", 2)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra hyperparameters")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when a GPU is visible)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.quick:
        args.train, args.validation, args.test = 200, 50, 50
        args.epochs = args.epochs or 2
    torch.set_num_threads(args.threads)
    given: dict[str, str] = {"image_size": str(args.image_size)}
    if args.epochs:
        given["num_epochs"] = str(args.epochs)
    for kv in args.set:
        k, _, v = kv.partition("=")
        given[k] = v
    hyper = deep_hyper.parse_deep("visual_detector", given)

    t0 = time.perf_counter()
    data = scene_data(args.train, args.validation, args.test, seed=args.seed, size=args.image_size)
    gen_seconds = time.perf_counter() - t0
    n_obj = {s: sum(len(b) for b in getattr(data, s).boxes) for s in ("train", "validation", "test")}
    print(f"scenes: {len(data.train)}/{len(data.validation)}/{len(data.test)} ({n_obj} objects) in {gen_seconds:.1f}s")

    def show(row):  # type: ignore[no-untyped-def]
        m = f" val mAP@0.5 {row.metrics['map_50']:.3f}" if row.metrics else ""
        print(f"epoch {row.epoch}/{row.num_epochs} loss {row.loss:.3f} lr {row.lrate:.4g} {row.items_per_second:.0f} img/s {row.seconds:.0f}s{m}", flush=True)

    ctx = LocalContext(data, hyper, seed=args.seed, device=args.device, on_report=show, resume=False)
    t1 = time.perf_counter()
    result = TEMPLATE.fit(ctx)
    fit_seconds = time.perf_counter() - t1

    # The exported TorchScript must find the same boxes as the eager model did.
    X_test = resize_whole(data.test.images, args.image_size)
    scripted = evaluate(result.module, X_test, data.test.boxes, data.concepts)
    # Localisation alone: every concept renamed "object" (how much of the gap is classification).
    agnostic = mean_average_precision(
        [[Detection(d.box, "object", d.score) for d in img] for img in scripted["detections"]],
        [[(*b[:4], "object") for b in img] for img in data.test.boxes],
        ["object"],
    )["map"]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, blob in result.artifacts.items():
        (args.out / name).write_bytes(blob)
    summary = {
        "machine": {
            "device": ctx.device,
            "gpu": torch.cuda.get_device_name() if ctx.device == "cuda" else None,
            "cpu_threads": args.threads,
            "platform": platform.platform(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "scenes": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test), "objects": n_obj},
        "hyperparameters": dict(hyper.items()),
        "validation": result.validation,
        "test": result.test,
        "test_report": result.report["test"],
        "test_no_threshold": result.report["test_no_threshold"],
        "scripted_test_map_50": scripted["map"],
        "test_class_agnostic_map_50": agnostic,
        "history": result.report["history"],
        "timings": {**result.timings, "generate_seconds": gen_seconds, "fit_seconds": fit_seconds},
    }
    (args.out / "detector.json").write_text(json.dumps(summary, indent=1, default=float))
    print(
        f"test mAP@0.5 {result.test.get('map_50', float('nan')):.3f} (threshold {hyper['detection_score_threshold']}), "
        f"no threshold {summary['test_no_threshold']['map_50'] if summary['test_no_threshold'] else float('nan'):.3f}, "
        f"scripted {scripted['map']:.3f}, class-agnostic {agnostic:.3f}; fit {fit_seconds:.0f}s"
    )
    for c, v in (result.report["test"] or {}).get("per_class_ap_50", {}).items():
        print(f"  AP@0.5 {c:10s} {v if v is not None else float('nan'):.3f}")
    print(f"wrote {args.out}/detector.json and {', '.join(result.artifacts)}")
    if not np.isclose(scripted["map"], result.test.get("map_50", scripted["map"]), atol=1e-4):
        raise SystemExit("the scripted export disagrees with the eager model")


if __name__ == "__main__":
    main()
