"""Acceptance 1 of issue 4 — the classic three-way comparison on one animal-mnist split:

1. transfer learning: frozen EfficientNet-Lite0 embeddings (the platform's 224 px) + the
   ``transfer_classifier`` template's logistic regression;
2. ``visual_classifier`` with ``architecture=efficientnet_lite0``: the same backbone fine-tuned with
   a new head (backbone lr = lrate × base_gradient_multiplier, BatchNorm frozen);
3. ``visual_classifier`` with ``architecture=resnet_scratch``: a small ResNet from random weights.

Same train / validation / test images for all three (stratified, seeded). Reports validation and
test accuracy, macro precision/recall, training time (wall clock on this machine, in this run),
confusion matrices (PNG), and picks the best on VALIDATION accuracy (test is reported, never used to
choose). Writes ``<out>/report.md``, ``<out>/results.json`` and ``<out>/confusion_<name>.png``.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.deep_classifier          # a few minutes on 2 CPU cores
    .venv/bin/python -m bench.deep_classifier --train-per-class 500 --finetune-epochs 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from firstlight.datasets import ANIMAL_CLASSES, _animal_arrays
from firstlight.domain import evaluation
from firstlight.domain.heads.transfer import TransferSettings, train_transfer
from firstlight.models.backbone import configure_torch_threads, embed_and_classify, load_efficientnet
from firstlight.training.deep import classifier, hyper
from firstlight.training.deep.context import DeepData, LabeledImages
from firstlight.training.deep.loop import LocalContext, prepare_images

OUT = Path(__file__).parent / "results" / "deep_classifier"


def split(train_per_class: int, val_per_class: int, test_per_class: int, seed: int) -> DeepData:
    images, labels = _animal_arrays()
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for k in range(len(ANIMAL_CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == k))
        a, b = train_per_class, train_per_class + val_per_class
        parts["train"] += list(idx[:a])
        parts["validation"] += list(idx[a:b])
        parts["test"] += list(idx[b : b + test_per_class])

    def li(ix: list[int]) -> LabeledImages:
        return LabeledImages([f"am-{i}" for i in ix], [np.stack([images[i]] * 3, axis=-1) for i in ix], [[ANIMAL_CLASSES[labels[i]]] for i in ix])

    return DeepData(list(ANIMAL_CLASSES), li(parts["train"]), li(parts["validation"]), li(parts["test"]))


def _report(probs: np.ndarray, data: LabeledImages, concepts: list[str]) -> evaluation.EvaluationReport:
    return evaluation.evaluate([c[0] for c in data.labels], probs, concepts)


def run_transfer(data: DeepData, size: int) -> dict[str, Any]:
    model = load_efficientnet("cpu")

    def embed(split: LabeledImages) -> np.ndarray:
        pixels = prepare_images(split.images, size)
        return np.concatenate([embed_and_classify(model, pixels[i : i + 16])[0] for i in range(0, len(pixels), 16)])

    t0 = time.perf_counter()
    X_train = embed(data.train)
    embed_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    head = train_transfer(X_train, [c[0] for c in data.train.labels], data.concepts, TransferSettings())
    fit_seconds = time.perf_counter() - t1
    val = _report(head.predict_proba(embed(data.validation)), data.validation, data.concepts)
    test = _report(head.predict_proba(embed(data.test)), data.test, data.concepts)
    return {
        "validation": val,
        "test": test,
        "train_seconds": embed_seconds + fit_seconds,
        "detail": f"{size} px embeddings of the training images {embed_seconds:.1f} s + logistic regression {fit_seconds:.1f} s",
        "settings": {"image_size": size, "C": TransferSettings().C},
    }


def run_deep(data: DeepData, settings: dict[str, str]) -> dict[str, Any]:
    h = hyper.parse_deep("visual_classifier", settings)
    rows: list = []
    ctx = LocalContext(
        data,
        h,
        device=None,
        resume=False,
        on_report=lambda r: (
            rows.append(r),
            print(
                f"    epoch {r.epoch}/{r.num_epochs} loss {r.loss:.3f} lr {r.lrate:g} {r.items_per_second:.0f} img/s {r.metrics.get('accuracy', '')}",
                flush=True,
            ),
        ),
    )
    result = classifier.TEMPLATE.fit(ctx)
    val = evaluation.EvaluationReport.from_dict(result.report["validation"])
    test = evaluation.EvaluationReport.from_dict(result.report["test"])
    return {
        "validation": val,
        "test": test,
        "train_seconds": result.timings["train_seconds"],
        "detail": f"{len(rows)} epochs at {h['image_size']} px, {np.mean([r.items_per_second for r in rows]):.0f} img/s, device {ctx.device}",
        "settings": {k: v for k, v in h.items() if k in settings or k in ("lrate",)},
        "history": [r.__dict__ for r in rows],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-per-class", type=int, default=200)
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--transfer-size", type=int, default=224, help="the platform's embedding size")
    ap.add_argument("--finetune-size", type=int, default=64)
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--scratch-size", type=int, default=32, help="animal-mnist images are 28 px")
    ap.add_argument("--scratch-epochs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("FIRSTLIGHT_TORCH_THREADS", "1")))
    ap.add_argument("--only", default="transfer,finetune,scratch")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    configure_torch_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = split(args.train_per_class, args.val_per_class, args.test_per_class, args.seed)
    runs = {
        "transfer": lambda: run_transfer(data, args.transfer_size),
        "finetune": lambda: run_deep(
            data,
            {
                "architecture": "efficientnet_lite0",
                "image_size": str(args.finetune_size),
                "num_epochs": str(args.finetune_epochs),
                "batch_size": "32",
                "lrate": "0.01",
                "base_gradient_multiplier": "0.1",
                "init_epochs": str(max(1, args.finetune_epochs - 1)),
                "step_epochs": "1",
                "test_freq": str(args.finetune_epochs),
            },
        ),
        "scratch": lambda: run_deep(
            data,
            {
                "architecture": "resnet_scratch",
                "image_size": str(args.scratch_size),
                "num_epochs": str(args.scratch_epochs),
                "batch_size": "32",
                "lrate": "0.05",
                "init_epochs": str(max(1, args.scratch_epochs * 2 // 3)),
                "step_epochs": str(max(1, args.scratch_epochs // 6)),
                "test_freq": str(max(1, args.scratch_epochs // 3)),
            },
        ),
    }
    names = {
        "transfer": "transfer learning (frozen EfficientNet-Lite0 + logistic regression)",
        "finetune": "fine-tuned EfficientNet-Lite0 (visual_classifier)",
        "scratch": "ResNet from scratch (visual_classifier)",
    }
    results: dict[str, dict[str, Any]] = {}
    for key in args.only.split(","):
        print(f"== {names[key]}", flush=True)
        t = time.perf_counter()
        results[key] = runs[key]()
        results[key]["wall_seconds"] = time.perf_counter() - t
        r = results[key]
        print(f"   validation {r['validation'].accuracy:.4f} test {r['test'].accuracy:.4f} train {r['train_seconds']:.1f} s", flush=True)
        (args.out / f"confusion_{key}.png").write_bytes(evaluation.confusion_matrix_png(r["test"], f"{names[key]} — test"))
    best = max(results, key=lambda k: results[k]["validation"].accuracy)
    load = [round(x, 1) for x in os.getloadavg()]
    lines = [
        "# visual_classifier vs transfer learning on animal-mnist",
        "",
        f"Split (seed {args.seed}): {len(data.train)} train / {len(data.validation)} validation / {len(data.test)} test images, "
        f"10 concepts, stratified. Machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, "
        f"load average at the end {load} (shared machine: times are this run's, compare them only within it).",
        "",
        "| approach | validation acc | test acc | test macro P | test macro R | training time (s) | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        mark = " **(best on validation)**" if key == best else ""
        lines.append(
            f"| {names[key]}{mark} | {r['validation'].accuracy:.4f} | {r['test'].accuracy:.4f} | {r['test'].macro_precision:.4f} | "
            f"{r['test'].macro_recall:.4f} | {r['train_seconds']:.1f} | {r['detail']} |"
        )
    lines += ["", f"Best on validation accuracy: **{names[best]}** (test accuracy {results[best]['test'].accuracy:.4f}).", ""]
    lines += [f"![{k}](confusion_{k}.png)" for k in results]
    lines += ["", "Settings:", ""] + [f"- {k}: `{json.dumps(r['settings'], default=str)}`" for k, r in results.items()]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "best": best,
                "split": [len(data.train), len(data.validation), len(data.test)],
                "threads": args.threads,
                "load_avg_end": load,
                "runs": {
                    k: {
                        "validation": evaluation.headline(r["validation"]) | {"macro_precision": r["validation"].macro_precision},
                        "test": evaluation.headline(r["test"]) | {"macro_precision": r["test"].macro_precision, "macro_recall": r["test"].macro_recall},
                        "train_seconds": r["train_seconds"],
                        "wall_seconds": r["wall_seconds"],
                        "detail": r["detail"],
                        "settings": r["settings"],
                        "confusion_test": r["test"].confusion,
                    }
                    for k, r in results.items()
                },
            },
            indent=1,
            default=str,
        )
    )
    print("\n".join(lines))
    torch.set_num_threads(args.threads)


if __name__ == "__main__":
    main()
