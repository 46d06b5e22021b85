"""Detection metrics on hand-made boxes: VOC all-point AP, mAP@0.5, IoU."""

from __future__ import annotations

import math

import numpy as np
import pytest

from firstlight.training.deep.det_metrics import Detection, box_iou, class_ap, mean_average_precision, voc_ap

GT = [
    [(0.1, 0.1, 0.4, 0.4, "cat"), (0.5, 0.5, 0.9, 0.9, "dog")],
    [(0.2, 0.2, 0.6, 0.6, "cat")],
]


def dets(*rows):  # type: ignore[no-untyped-def]
    return [[Detection(tuple(b[:4]), b[4], s) for b, s in row] for row in rows]


def test_iou_values() -> None:
    a = np.array([[0, 0, 2, 2]])
    assert box_iou(a, np.array([[0, 0, 2, 2]]))[0, 0] == pytest.approx(1.0)
    assert box_iou(a, np.array([[1, 0, 3, 2]]))[0, 0] == pytest.approx(2 / 6)
    assert box_iou(a, np.array([[5, 5, 6, 6]]))[0, 0] == 0.0
    assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)


def test_perfect_detections_score_one() -> None:
    perfect = dets([(GT[0][0], 0.9), (GT[0][1], 0.8)], [(GT[1][0], 0.7)])
    res = mean_average_precision(perfect, GT, ["cat", "dog"])
    assert res["map"] == pytest.approx(1.0)
    assert res["per_class_ap"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}
    assert res["gt_counts"] == {"cat": 2, "dog": 1}


def test_shifted_box_below_iou_threshold_is_a_miss() -> None:
    # Shift the dog box by half its width: IoU 1/3 < 0.5 -> AP 0 for dog; cats still perfect.
    shifted = (0.7, 0.5, 1.1, 0.9, "dog")
    res = mean_average_precision(dets([(GT[0][0], 0.9), (shifted, 0.8)], [(GT[1][0], 0.7)]), GT, ["cat", "dog"])
    assert res["per_class_ap"]["dog"] == 0.0
    assert res["map"] == pytest.approx(0.5)
    # A small shift keeps IoU above 0.5: still a hit.
    near = (0.52, 0.5, 0.92, 0.9, "dog")
    res = mean_average_precision(dets([(near, 0.8)], []), GT, ["dog"])
    assert res["per_class_ap"]["dog"] == pytest.approx(1.0)
    # ... unless the threshold is stricter than its IoU (0.152 / 0.168 ≈ 0.905).
    res = mean_average_precision(dets([(near, 0.8)], []), GT, ["dog"], iou_threshold=0.95)
    assert res["per_class_ap"]["dog"] == 0.0


def test_wrong_class_is_a_false_positive() -> None:
    res = mean_average_precision(dets([((0.1, 0.1, 0.4, 0.4, "dog"), 0.9)], []), GT, ["cat", "dog"])
    assert res["per_class_ap"] == {"cat": 0.0, "dog": 0.0}


def test_duplicates_and_ranking() -> None:
    # Two cats found, plus a duplicate of the first: the duplicate is a false positive.
    # Ranked: TP (0.9), FP dup (0.8), TP (0.7): precision 1, 0.5, 0.667 at recall 0.5, 0.5, 1.
    # All-point envelope: 0.5*1 + 0.5*0.667.
    d = dets([(GT[0][0], 0.9), (GT[0][0], 0.8)], [(GT[1][0], 0.7)])
    ap, n_gt, n_det = class_ap(d, GT, "cat")
    assert (n_gt, n_det) == (2, 3)
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    # The same false positive ranked last costs nothing: AP 1.
    d = dets([(GT[0][0], 0.9), (GT[0][0], 0.1)], [(GT[1][0], 0.7)])
    assert class_ap(d, GT, "cat")[0] == pytest.approx(1.0)


def test_missing_detection_halves_recall() -> None:
    d = dets([(GT[0][0], 0.9)], [])
    assert class_ap(d, GT, "cat")[0] == pytest.approx(0.5)
    assert class_ap(dets([], []), GT, "cat")[0] == 0.0


def test_class_without_ground_truth_is_left_out_of_the_mean() -> None:
    res = mean_average_precision(dets([(GT[0][0], 0.9), (GT[0][1], 0.8)], [(GT[1][0], 0.7)]), GT, ["cat", "dog", "cow"])
    assert math.isnan(res["per_class_ap"]["cow"])
    assert res["map"] == pytest.approx(1.0)


def test_voc_ap_envelope() -> None:
    # precision rises later: the envelope takes the later, higher value
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_ap(np.array([1.0]), np.array([1.0])) == pytest.approx(1.0)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        class_ap(dets([]), GT, "cat")
