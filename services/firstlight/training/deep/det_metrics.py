"""Detection metrics: per-class average precision (PASCAL VOC 2010+ all-point interpolation) and
mAP at an IoU threshold. Pure numpy, no torch.

Matching follows VOC: per class, detections over all images are ranked by score; each one is a
true positive when its best-IoU ground-truth box of the same class in the same image reaches the
threshold and has not been claimed by a higher-scoring detection, otherwise a false positive
(duplicates are false positives). AP is the area under the precision envelope (precision made
monotonically decreasing) over recall. mAP averages AP over the classes that have at least one
ground-truth box in the evaluated set (a class absent from it has no defined recall).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (any consistent unit)
    concept: str
    score: float


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix between boxes ``a`` [N,4] and ``b`` [M,4] (x0,y0,x1,y1) -> [N,M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP: sum over recall steps of the maximum precision at any recall ≥
    that step (recall/precision in ranked order)."""
    r = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    p = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def class_ap(
    detections: Sequence[Sequence[Detection]],
    ground_truth: Sequence[Sequence[tuple[float, float, float, float, str]]],
    concept: str,
    iou_threshold: float = 0.5,
) -> tuple[float, int, int]:
    """(AP, number of ground-truth boxes, number of detections) of one concept. ``detections[i]`` and
    ``ground_truth[i]`` belong to image i; ground-truth entries are (x0, y0, x1, y1, concept)."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truth)} images")
    gts = [np.array([g[:4] for g in img if g[4] == concept], dtype=np.float64).reshape(-1, 4) for img in ground_truth]
    n_gt = sum(len(g) for g in gts)
    ranked = [(d.score, i, d.box) for i, img in enumerate(detections) for d in img if d.concept == concept]
    # Stable sort on score alone: ties keep image order, so the result is deterministic.
    ranked.sort(key=lambda t: -t[0])
    if n_gt == 0:
        return float("nan"), 0, len(ranked)
    claimed = [np.zeros(len(g), dtype=bool) for g in gts]
    tp = np.zeros(len(ranked))
    for k, (_score, i, box) in enumerate(ranked):
        if len(gts[i]) == 0:
            continue
        ious = box_iou(np.array([box]), gts[i])[0]
        j = int(np.argmax(ious))
        if ious[j] >= iou_threshold and not claimed[i][j]:
            claimed[i][j] = True
            tp[k] = 1
    if not ranked:
        return 0.0, n_gt, 0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(ranked) + 1)
    return voc_ap(recall, precision), n_gt, len(ranked)


def mean_average_precision(
    detections: Sequence[Sequence[Detection]],
    ground_truth: Sequence[Sequence[tuple[float, float, float, float, str]]],
    concepts: Sequence[str],
    iou_threshold: float = 0.5,
) -> dict:
    """``{"map": mAP, "per_class_ap": {concept: AP}, "gt_counts": {...}, "det_counts": {...}}``;
    classes without ground truth get AP NaN and are left out of the mean."""
    per_class, gt_counts, det_counts = {}, {}, {}
    for c in concepts:
        ap, n_gt, n_det = class_ap(detections, ground_truth, c, iou_threshold)
        per_class[c], gt_counts[c], det_counts[c] = ap, n_gt, n_det
    valid = [v for v in per_class.values() if not np.isnan(v)]
    return {
        "map": float(np.mean(valid)) if valid else 0.0,
        "per_class_ap": per_class,
        "gt_counts": gt_counts,
        "det_counts": det_counts,
    }
