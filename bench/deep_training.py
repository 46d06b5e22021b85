"""Deep training throughput: images/s of the deep templates' own training loops against the bare
EfficientNet-Lite0 forward + backward pass on the same batch size and image size.

* ``visual_classifier`` fine-tuning EfficientNet-Lite0 (its defaults: 128 px, batch 32, frozen
  BatchNorm, backbone at lrate × 0.1): the template's ``fit`` on animal-mnist images, through
  ``LocalContext`` as a script would run it (random flips, checkpoint after every epoch, and a
  validation pass, which is not counted: the figure is the epochs' training throughput);
* ``visual_classifier`` with ``resnet_scratch`` (a small ResNet from random weights) and
  ``visual_detector`` (its default ``small_cnn`` on generated scenes): the same, for the other
  networks the templates train;
* the baseline: ``load_efficientnet`` + a new linear head in train mode, SGD with momentum on
  every parameter, ``forward → cross-entropy → backward → step`` on random batches of the same
  shape in a bare loop — what fine-tuning costs with no platform around it.

Device-aware: CUDA when ``torch.cuda.is_available()`` (the sizes grow there), else the CPU with
the training service's thread budget (``FIRSTLIGHT_TRAIN_THREADS``, 1 by default). Needs no stack:

    python -m bench.deep_training            # or: python -m bench --only deep_training
    python -m bench.deep_training --quick
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import Row

RESULTS = Path(__file__).parent / "results"


def device_and_threads() -> tuple[str, int]:
    """("cuda", 0) on a GPU host; else ("cpu", the training service's torch threads)."""
    if torch.cuda.is_available():
        return "cuda", 0
    try:
        threads = max(1, int(os.environ.get("FIRSTLIGHT_TRAIN_THREADS", "1")))
    except ValueError:
        threads = 1
    return "cpu", threads


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_finetune_images_per_s(batch: int, size: int, steps: int, device: str, classes: int = 10) -> float:
    """EfficientNet-Lite0 + a linear head, train mode, plain SGD on every parameter: images/s of
    forward + backward + step on random uint8 batches (normalised like the template's input)."""
    from firstlight.models.backbone import load_efficientnet

    net = load_efficientnet(device)
    net._fc = torch.nn.Linear(1280, classes).to(device)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x8 = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen).to(device)

    def step() -> None:
        x = x8.to(device).permute(0, 3, 1, 2).float().sub_(127.0).div_(128.0).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: allocator, kernels
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t)


def _animal_data(train: int, validation: int, seed: int = 0):  # type: ignore[no-untyped-def]
    from firstlight.datasets import ANIMAL_CLASSES, _animal_arrays
    from firstlight.training.deep.context import DeepData, LabeledImages

    images, labels = _animal_arrays()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))[: train + validation]

    def part(ix: np.ndarray) -> LabeledImages:
        return LabeledImages([f"am-{i}" for i in ix], [np.stack([images[i]] * 3, axis=-1) for i in ix], [[ANIMAL_CLASSES[labels[i]]] for i in ix])

    empty = LabeledImages([], [], [])
    return DeepData(list(ANIMAL_CLASSES), part(order[:train]), part(order[train:]), empty)


def template_images_per_s(template: Any, data: Any, settings: dict[str, str], device: str) -> dict:
    """Run ``template.fit`` for the epochs in ``settings``; the best epoch's training images/s (the
    first pays for warm-up) and every epoch's."""
    from firstlight.training.deep import hyper
    from firstlight.training.deep.loop import LocalContext

    h = hyper.parse_deep(template.name, settings)
    with tempfile.TemporaryDirectory(prefix="bench-deep-") as work:
        ctx = LocalContext(data, h, work, device=device, resume=False)
        t = time.perf_counter()
        template.fit(ctx)
        wall = time.perf_counter() - t
    per_epoch = [r.items_per_second for r in ctx.rows]
    return {
        "images_per_s": max(per_epoch),
        "images_per_s_by_epoch": per_epoch,
        "train_images": len(data.train),
        "image_size": int(h["image_size"]),
        "batch_size": int(h["batch_size"]),
        "fit_wall_s": wall,
    }


def run(quick: bool = False, log=print, device: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    from firstlight.models.backbone import configure_torch_threads
    from firstlight.training.deep import classifier, detector
    from firstlight.training.deep.scenes import scene_data

    dev, threads = device_and_threads()
    device = device or dev
    if device == "cpu":
        configure_torch_threads(threads)
    gpu = device.startswith("cuda")
    # Sizes: a couple of epochs of a few seconds each on 2 CPU cores; more on a GPU.
    n_train = (2048 if gpu else 256) // (2 if quick else 1)
    epochs = "2"
    size, batch = 128, 32  # the templates' defaults (training.deep.hyper)
    base_steps = (40 if gpu else 8) // (2 if quick else 1)
    data = _animal_data(n_train, 64)
    log(f"  device {device}{'' if gpu else f', {threads} torch thread(s)'}; {n_train} training images, {size} px, batch {batch}")

    out: dict[str, Any] = {"device": device, "torch_threads": threads if not gpu else None}
    bare_before = bare_finetune_images_per_s(batch, size, base_steps, device)
    runs = {
        "classifier_finetune": lambda: template_images_per_s(
            classifier.TEMPLATE, data, {"architecture": "efficientnet_lite0", "num_epochs": epochs, "test_freq": epochs}, device
        ),
        "classifier_scratch": lambda: template_images_per_s(
            classifier.TEMPLATE, data, {"architecture": "resnet_scratch", "num_epochs": epochs, "test_freq": epochs}, device
        ),
        "detector": lambda: template_images_per_s(
            detector.TEMPLATE, scene_data(n_train, 32, 0, seed=0, size=size), {"num_epochs": epochs, "test_freq": epochs}, device
        ),
    }
    for name, fn in runs.items():
        out[name] = fn()
        log(f"  {name}: {out[name]['images_per_s']:.1f} img/s (epochs {' / '.join(f'{x:.1f}' for x in out[name]['images_per_s_by_epoch'])})")
    bare_after = bare_finetune_images_per_s(batch, size, base_steps, device)
    # Before and after, averaged: on a shared host the load drifts within minutes.
    bare = (bare_before + bare_after) / 2
    out["bare_finetune_images_per_s"] = bare
    out["bare_finetune_before_after_images_per_s"] = [bare_before, bare_after]
    log(f"  bare EfficientNet-Lite0 forward+backward: {bare_before:.1f} → {bare_after:.1f} img/s")
    where = "GPU" if gpu else f"CPU, {threads} thread{'s' if threads != 1 else ''}"
    labels = {
        "classifier_finetune": "visual_classifier fine-tune (EfficientNet-Lite0)",
        "classifier_scratch": "visual_classifier resnet_scratch",
        "detector": "visual_detector (small_cnn, generated scenes)",
    }
    rows = [
        Row(
            f"deep training: {labels[name]}, {where}",
            f"{out[name]['images_per_s']:.1f} img/s ({size} px, batch {batch}, {n_train} images × {epochs} epochs)",
            f"bare EfficientNet-Lite0 forward+backward+SGD, same batch: {bare:.1f} img/s",
            f"{out[name]['images_per_s'] / bare:.2f}×",
        )
        for name in runs
    ]
    out["rows"] = [r.as_dict() for r in rows]
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.deep_training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="half the images and steps")
    p.add_argument("--device", default=None, help="cpu / cuda / cuda:N (default: cuda when available)")
    args = p.parse_args(argv)
    result = run(quick=args.quick, device=args.device)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deep_training.json").write_text(json.dumps(result, indent=2, default=float))
    for r in result["rows"]:
        print(f"| {r['benchmark']} | {r['figure']} | {r['baseline']} | {r['ratio']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
