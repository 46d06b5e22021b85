"""Generated detection scenes: animal-mnist silhouettes pasted on backgrounds with known boxes.

No detector weights or box-labeled photos ship in any installable package, so the
``visual_detector`` template is trained and measured on scenes built here: each scene is a square
background (noise, gradients, stripes/checks, or a crop of a bundled sample photo) with 1 to
``max_objects`` animals pasted at random scales and positions, each tinted a colour that contrasts
with the background under it, overlapping another animal by at most ``max_iou``. Boxes are the
tight box of the pasted silhouette (not the 28×28 patch), normalised to [0, 1].

Everything is pure numpy (+ PIL for resizing) and deterministic for a seed. The three splits draw
their animals from disjoint animal-mnist images, so test scenes show silhouettes never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from firstlight.datasets import ANIMAL_CLASSES, _animal_arrays
from firstlight.training.deep.context import Box, DeepData, LabeledImages

# Bundled photos used as backgrounds (none shows an animal silhouette: skimage's `horse` and the
# cat photos are left out so backgrounds never carry an unlabeled object of a class).
_SKIMAGE_PHOTOS = (
    "brick",
    "grass",
    "gravel",
    "coffee",
    "astronaut",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "camera",
)
_SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # of each class's animal-mnist images: train / validation / test
_MASK_LEVEL = 40  # silhouette pixels brighter than this belong to the object (its box)


@dataclass
class Scene:
    image: np.ndarray  # uint8 size×size×3
    boxes: list[Box]  # normalised (x0, y0, x1, y1, concept)


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = []
    for name in _SKIMAGE_PHOTOS:
        a = np.asarray(getattr(data, name)())
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        out.append(np.ascontiguousarray(a[..., :3].astype(np.uint8)))
    out += [np.asarray(img, dtype=np.uint8) for img in load_sample_images().images]
    return tuple(out)


def split_indices(split: str, classes: list[str]) -> dict[str, np.ndarray]:
    """animal-mnist indices per class for ``split`` (train/validation/test): a fixed, disjoint
    partition of each class's 1,000 images."""
    _, labels = _animal_arrays()
    names = ("train", "validation", "test")
    if split not in names:
        raise ValueError(f"split must be one of {names}, got {split!r}")
    out = {}
    for name in classes:
        idx = np.flatnonzero(labels == ANIMAL_CLASSES.index(name))
        idx = np.random.default_rng(1234 + ANIMAL_CLASSES.index(name)).permutation(idx)
        cuts = np.cumsum([0] + [round(f * len(idx)) for f in _SPLIT_FRACTIONS])
        cuts[-1] = len(idx)
        k = names.index(split)
        out[name] = np.sort(idx[cuts[k] : cuts[k + 1]])
    return out


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = rng.integers(5)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 0:  # smooth colour noise: a small random grid upsampled
        g = rng.integers(2, 9)
        small = rng.uniform(0, 255, size=(g, g, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        img += rng.normal(0, rng.uniform(0, 25), size=img.shape)
    elif kind == 1:  # linear gradient between two colours
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        theta = rng.uniform(0, 2 * np.pi)
        t = np.cos(theta) * xx + np.sin(theta) * yy
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        img = a * (1 - t[..., None]) + b * t[..., None]
        img += rng.normal(0, rng.uniform(0, 15), size=img.shape)
    elif kind == 2:  # stripes or checks (sharp edges the detector must learn to ignore)
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        period = rng.uniform(0.05, 0.3)
        theta = rng.uniform(0, np.pi)
        u = np.cos(theta) * xx + np.sin(theta) * yy
        m = (np.floor(u / period) % 2).astype(np.float32)
        if rng.random() < 0.5:
            v = -np.sin(theta) * xx + np.cos(theta) * yy
            m = np.abs(m - (np.floor(v / period) % 2))
        img = a * (1 - m[..., None]) + b * m[..., None]
    else:  # a random crop of a bundled photo
        photos = _photos()
        p = photos[rng.integers(len(photos))]
        h, w = p.shape[:2]
        c = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        crop = Image.fromarray(p[y0 : y0 + c, x0 : x0 + c])
        img = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        if rng.random() < 0.5:
            img = img[:, ::-1]
    return np.clip(img, 0, 255).astype(np.float32)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_scene(
    rng: np.random.Generator,
    pool: dict[str, np.ndarray],
    *,
    size: int = 128,
    max_objects: int = 3,
    scale: tuple[float, float] = (0.2, 0.45),
    max_iou: float = 0.15,
) -> Scene:
    """One scene. ``pool`` maps concept → animal-mnist indices to draw from; ``scale`` is the pasted
    28×28 patch's side as a fraction of the scene side."""
    images, _ = _animal_arrays()
    concepts = list(pool)
    canvas = _background(rng, size)
    boxes: list[Box] = []
    n = int(rng.integers(1, max_objects + 1))
    for _ in range(n):
        for _attempt in range(20):  # re-draw placements that overlap an earlier animal too much
            concept = concepts[rng.integers(len(concepts))]
            src = images[pool[concept][rng.integers(len(pool[concept]))]]
            side = max(8, round(rng.uniform(*scale) * size))
            aspect = rng.uniform(0.8, 1.25)  # mild stretch: more shape variety than the 28×28 set has
            pw, ph = max(8, int(side * aspect)), max(8, int(side / aspect))
            pw, ph = min(pw, size), min(ph, size)
            patch = Image.fromarray(src)
            if rng.random() < 0.5:
                patch = patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            alpha = np.asarray(patch.resize((pw, ph), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
            ys, xs = np.nonzero(alpha > _MASK_LEVEL / 255.0)
            if len(xs) == 0:
                continue
            x0, y0 = int(rng.integers(0, size - pw + 1)), int(rng.integers(0, size - ph + 1))
            box = ((x0 + xs.min()) / size, (y0 + ys.min()) / size, (x0 + xs.max() + 1) / size, (y0 + ys.max() + 1) / size)
            if any(_iou(box, b[:4]) > max_iou for b in boxes):
                continue
            region = canvas[y0 : y0 + ph, x0 : x0 + pw]
            # Tint: far from the mean colour under the animal, so it stays visible on any background.
            under = region.reshape(-1, 3).mean(0)
            for _c in range(8):
                colour = rng.uniform(0, 255, 3)
                if np.abs(colour - under).sum() > 180:
                    break
            else:
                colour = 255.0 - under
            shade = colour * rng.uniform(0.85, 1.15, size=(ph, pw, 1))  # slight texture inside the animal
            a = alpha[..., None]
            canvas[y0 : y0 + ph, x0 : x0 + pw] = region * (1 - a) + np.clip(shade, 0, 255) * a
            boxes.append(Box(*box, concept))
            break
    return Scene(np.clip(canvas, 0, 255).astype(np.uint8), boxes)


def generate_scenes(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    size: int = 128,
    classes: list[str] | None = None,
    max_objects: int = 3,
    scale: tuple[float, float] = (0.2, 0.45),
    max_iou: float = 0.15,
) -> list[Scene]:
    """``n`` scenes whose animals come from ``split``'s animal-mnist images; the same arguments give
    the same scenes."""
    classes = list(classes or ANIMAL_CLASSES)
    unknown = [c for c in classes if c not in ANIMAL_CLASSES]
    if unknown:
        raise ValueError(f"unknown animal-mnist classes {unknown}")
    pool = split_indices(split, classes)
    # Each split has its own stream, so growing one split leaves the others unchanged.
    rng = np.random.default_rng([seed, ("train", "validation", "test").index(split)])
    return [make_scene(rng, pool, size=size, max_objects=max_objects, scale=scale, max_iou=max_iou) for _ in range(n)]


def as_labeled(scenes: list[Scene], prefix: str) -> LabeledImages:
    return LabeledImages(
        input_ids=[f"{prefix}-{i:05d}" for i in range(len(scenes))],
        images=[s.image for s in scenes],
        labels=[sorted({b.concept for b in s.boxes}) for s in scenes],
        boxes=[list(s.boxes) for s in scenes],
    )


def scene_data(
    n_train: int,
    n_validation: int,
    n_test: int,
    *,
    seed: int = 0,
    size: int = 128,
    classes: list[str] | None = None,
    **kwargs: Any,
) -> DeepData:
    """A :class:`DeepData` of generated scenes (train/validation/test), as the training service
    would hand it to the detector."""
    classes = list(classes or ANIMAL_CLASSES)
    parts = {
        split: as_labeled(generate_scenes(n, split=split, seed=seed, size=size, classes=classes, **kwargs), split)
        for split, n in (("train", n_train), ("validation", n_validation), ("test", n_test))
    }
    return DeepData(concepts=classes, train=parts["train"], validation=parts["validation"], test=parts["test"])
