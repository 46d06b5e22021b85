"""Detector models (``visual_detector`` versions) at prediction time: their pixels and their regions.

A detector's Triton model returns one fixed-size tensor DETECTIONS N×K×6: x0, y0, x1, y1
(normalised to its input), score, concept index (-1 pads). Its input is the whole image resized to
``image_size`` — no centre crop, unlike the backbone's preprocessing — so a box normalised to the
model input is the same box normalised to the original image, whatever its aspect ratio.

Pure numpy + PIL: no grpc, no tritonclient (the servicer converts :class:`FoundRegion` to
``firstlight.v1.Region``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

OUTPUT = "DETECTIONS"  # the output of an exported visual_detector


@dataclass(frozen=True)
class FoundRegion:
    concept: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1] of the original image


def detector_pixels(images: Sequence[Image.Image], size: int) -> np.ndarray:
    """Decoded images -> uint8 N×size×size×3, each resized whole (bilinear), the way the detector
    was trained (``detector.resize_whole``)."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img, dtype=np.uint8)
    return out


def regions(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    concepts: Sequence[str],
    *,
    allowed: np.ndarray | None = None,
    top_k: int = 0,
    min_score: float = 0.0,
) -> list[list[FoundRegion]]:
    """Per image, the detections as regions, best first: padding (class -1), concepts outside
    ``allowed`` (indices; None = all) and scores below ``min_score`` dropped; at most ``top_k``
    (0 = all the model returned)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    classes = np.asarray(classes).astype(np.int64)
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2] or classes.shape != boxes.shape[:2]:
        raise ValueError(f"detector outputs disagree: boxes {boxes.shape}, scores {scores.shape}, classes {classes.shape}")
    keep_cls = {int(i) for i in allowed} if allowed is not None else None
    out: list[list[FoundRegion]] = []
    for b, s, c in zip(boxes, scores, classes):
        order = np.argsort(-s, kind="stable")
        row = []
        for j in order:
            k = int(c[j])
            if k < 0 or k >= len(concepts) or s[j] < min_score or (keep_cls is not None and k not in keep_cls):
                continue
            x0, y0, x1, y1 = (float(v) for v in np.clip(b[j], 0.0, 1.0))
            row.append(FoundRegion(concepts[k], float(s[j]), (x0, y0, x1, y1)))
            if top_k and len(row) >= top_k:
                break
        out.append(row)
    return out


def regions_from_packed(
    detections: np.ndarray,
    concepts: Sequence[str],
    *,
    allowed: np.ndarray | None = None,
    top_k: int = 0,
    min_score: float = 0.0,
) -> list[list[FoundRegion]]:
    """:func:`regions` of the model's DETECTIONS output (N×K×6)."""
    d = np.asarray(detections, dtype=np.float32)
    if d.ndim != 3 or d.shape[-1] != 6:
        raise ValueError(f"detector output must be N×K×6, got {d.shape}")
    return regions(d[..., :4], d[..., 4], np.rint(d[..., 5]), concepts, allowed=allowed, top_k=top_k, min_score=min_score)


def concepts_of(found: Sequence[FoundRegion]) -> list[tuple[str, float]]:
    """Each concept found with its best region's score, best first (Prediction.concepts)."""
    best: dict[str, float] = {}
    for r in found:
        best[r.concept] = max(best.get(r.concept, 0.0), r.score)
    return sorted(best.items(), key=lambda kv: -kv[1])
