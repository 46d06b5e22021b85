"""Acceptance 2 of issue 4: does a ``visual_embedder`` trained on some concepts improve one-shot
(and 5-shot) accuracy on concepts it never saw, compared with the base EfficientNet-Lite0 embedding?

animal-mnist: the embedder trains on 6 concepts (by default bear bird cat cow dog elephant: every
concept but the ``--held-out`` ones); evaluation uses the 4 held-out ones (giraffe horse sheep
zebra), on images disjoint from training. An episode draws
k support images per held-out concept (the prototype is their normalised mean) and classifies
every other held-out image by cosine to the prototypes; accuracy is averaged over episodes, and
the whole thing (training sample, training, episodes) is repeated for several seeds. Base and
trained embeddings are computed at the same image size with the same flip averaging.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.embedder_oneshot            # a few minutes on a CPU
    .venv/bin/python -m bench.embedder_oneshot --variants default --held-out bear,cat,dog,sheep
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from firstlight.datasets import ANIMAL_CLASSES, _animal_arrays
from firstlight.models.backbone import configure_torch_threads, load_efficientnet
from firstlight.training.deep import embedder as E
from firstlight.training.deep.context import DeepData, EpochReport, LabeledImages

HELD_OUT = ["giraffe", "horse", "sheep", "zebra"]

# name -> template hyperparameters (on top of the shared ones below)
VARIANTS: dict[str, dict[str, Any]] = {
    # the template's defaults: WCCN-initialised 256-d head, ArcFace fine-tuning at lrate 1e-4
    "default": {},
    "wccn-256-triplet": {"loss": "triplet"},
    "wccn-1280": {"embedding_dim": 1280},
    "wccn-256-arcface-lr1e-3": {"lrate": 1e-3, "num_epochs": 10, "init_epochs": 7, "step_epochs": 3},
    # projections trained from a random start (the classic recipe)
    "arcface-128-random": {"head_init": "random", "embedding_dim": 128, "lrate": 1e-3, "num_epochs": 30, "init_epochs": 20, "step_epochs": 10},
    "triplet-128-random": {
        "head_init": "random",
        "loss": "triplet",
        "embedding_dim": 128,
        "lrate": 1e-3,
        "num_epochs": 30,
        "init_epochs": 20,
        "step_epochs": 10,
    },
    # the backbone fine-tuned too, at 0.1× the head's rate (slow on a CPU)
    "default-finetune": {"base_gradient_multiplier": 0.1, "num_epochs": 3, "lrate": 1e-3},
}
COMMON = {"image_size": 96, "batch_size": 32, "test_freq": 10}


@dataclass
class Ctx:
    """Minimal in-memory DeepTrainContext (no checkpoints kept: nothing resumes here)."""

    data: DeepData
    hyper: dict[str, Any]
    work_dir: Path = Path("/tmp")
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    seed: int = 0
    rows: list[EpochReport] = field(default_factory=list)

    def report(self, row: EpochReport) -> None:
        self.rows.append(row)

    def check_cancelled(self) -> None:
        pass

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        pass

    def load_checkpoint(self) -> None:
        return None


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[:, :, None], 3, axis=2)


def sample(seed: int, n_train: int, n_val: int, n_eval: int, held_out: list[str] | None = None) -> tuple[DeepData, list[np.ndarray], np.ndarray]:
    held_out = held_out or HELD_OUT
    train_concepts = [c for c in ANIMAL_CLASSES if c not in held_out]
    images, labels = _animal_arrays()
    rng = np.random.default_rng(seed)

    def split(idx: np.ndarray, name: str) -> LabeledImages:
        return LabeledImages([f"am-{i}" for i in idx], [_rgb(images[i]) for i in idx], [[name]] * len(idx))

    parts: dict[str, list[LabeledImages]] = {"train": [], "val": []}
    for name in train_concepts:
        idx = rng.permutation(np.flatnonzero(labels == ANIMAL_CLASSES.index(name)))
        parts["train"].append(split(idx[:n_train], name))
        parts["val"].append(split(idx[n_train : n_train + n_val], name))

    def cat(xs: list[LabeledImages]) -> LabeledImages:
        return LabeledImages([i for x in xs for i in x.input_ids], [m for x in xs for m in x.images], [y for x in xs for y in x.labels])

    data = DeepData(train_concepts, cat(parts["train"]), cat(parts["val"]), LabeledImages([], [], []))
    eval_imgs: list[np.ndarray] = []
    eval_y: list[int] = []
    for k, name in enumerate(held_out):
        idx = rng.permutation(np.flatnonzero(labels == ANIMAL_CLASSES.index(name)))[:n_eval]
        eval_imgs += [_rgb(images[i]) for i in idx]
        eval_y += [k] * len(idx)
    return data, eval_imgs, np.asarray(eval_y)


def base_features(pixels: np.ndarray, backbone: torch.nn.Module, device: str) -> torch.Tensor:
    """Pooled features averaged over each image and its mirror (as the trained embedder does)."""
    f = E.backbone_features(backbone, pixels, device)
    return 0.5 * (f + E.backbone_features(backbone, pixels, device, flip=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="default,arcface-128-random,triplet-128-random", help=f"any of {','.join(VARIANTS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-train", type=int, default=150, help="training images per training concept")
    ap.add_argument("--n-val", type=int, default=30)
    ap.add_argument("--n-eval", type=int, default=200, help="held-out images per held-out concept")
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--held-out", default=",".join(HELD_OUT), help="concepts kept out of training (the rest train)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 spin-wait badly on a loaded shared machine)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "embedder_oneshot.json")
    args = ap.parse_args()
    configure_torch_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.variants.split(",")
    device = Ctx.device
    backbone = load_efficientnet(device)
    size = COMMON["image_size"]
    results: dict[str, dict[str, list[float]]] = {"base": {"1-shot": [], "5-shot": []}}
    results.update({n: {"1-shot": [], "5-shot": [], "val_oneshot": [], "val_new_concept": [], "train_seconds": []} for n in names})
    started = time.perf_counter()
    for seed in seeds:
        held_out = args.held_out.split(",")
        data, eval_imgs, eval_y = sample(seed, args.n_train, args.n_val, args.n_eval, held_out)
        pixels = E.to_pixels(eval_imgs, size)
        feats = base_features(pixels, backbone, device)
        base = torch.nn.functional.normalize(feats, dim=1).numpy()
        for shots in (1, 5):
            acc = E.oneshot_accuracy(base, eval_y, shots=shots, episodes=args.episodes, seed=seed)
            results["base"][f"{shots}-shot"].append(acc)
        print(f"seed {seed}: base 1-shot {results['base']['1-shot'][-1]:.3f} 5-shot {results['base']['5-shot'][-1]:.3f}", flush=True)
        for name in names:
            ctx = Ctx(data, {**COMMON, **VARIANTS[name]}, seed=seed)
            result = E.TEMPLATE.fit(ctx)
            with torch.inference_mode():
                if result.report["frozen_backbone"]:  # same backbone: the exported module == head(features)
                    emb = result.module.net.project(feats.to(device)).cpu().numpy()
                else:
                    emb = torch.cat([result.module(torch.from_numpy(pixels[s : s + 32]))[0] for s in range(0, len(pixels), 32)]).numpy()
            r = results[name]
            for shots in (1, 5):
                r[f"{shots}-shot"].append(E.oneshot_accuracy(emb, eval_y, shots=shots, episodes=args.episodes, seed=seed))
            r["val_oneshot"].append(result.validation["oneshot_accuracy"])
            # The template's own selection metric: its new-concept probe (frozen backbone only).
            r["val_new_concept"].append(result.validation.get(E.PRIMARY_METRIC, float("nan")))
            r["train_seconds"].append(result.timings["train_seconds"])
            print(
                f"seed {seed}: {name:22s} 1-shot {r['1-shot'][-1]:.3f} 5-shot {r['5-shot'][-1]:.3f} "
                f"(validation: one-shot on training concepts {r['val_oneshot'][-1]:.3f}, "
                f"new-concept probe {r['val_new_concept'][-1]:.3f}; {r['train_seconds'][-1]:.0f}s)",
                flush=True,
            )
    print(
        f"\nheld-out concepts {args.held_out.split(',')}; {len(seeds)} seeds × {args.episodes} episodes; image_size {size}; total {time.perf_counter() - started:.0f}s"  # noqa: E501
    )
    print(f"{'embedding':24s} {'1-shot':>15s} {'5-shot':>15s} {'val train-concepts':>19s} {'val new-concept probe':>22s}")
    summary = {}
    for name, r in results.items():
        row = {k: (float(np.mean(v)), float(np.std(v))) for k, v in r.items()}
        summary[name] = row
        vals = "".join(f"   {row[k][0]:>16.3f}" if k in row else "" for k in ("val_oneshot", "val_new_concept"))
        print(f"{name:24s} {row['1-shot'][0]:.3f} ± {row['1-shot'][1]:.3f}   {row['5-shot'][0]:.3f} ± {row['5-shot'][1]:.3f}{vals}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "common": COMMON,
                "variants": {n: VARIANTS[n] for n in names},
                "per_seed": results,
                "summary": summary,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
