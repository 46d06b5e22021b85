"""Stratified splits and dataset version ids."""

from collections import Counter

import pytest

from firstlight.domain.errors import SplitError, SplitPreconditionError
from firstlight.domain.splits import (
    check_split,
    dataset_version_id,
    stratification_keys,
    stratified_split,
)
from firstlight.errors import FailedPrecondition, InvalidArgument


def per_split(labels, split):
    return {name: Counter(labels[i] for i in idx) for name, idx in split.items()}


def assert_partition(split, n, used=None):
    everything = split["train"] + split["validation"] + split["test"]
    assert len(everything) == len(set(everything)), "an index is in two splits"
    assert all(0 <= i < n for i in everything)
    assert len(everything) == (n if used is None else used)
    for idx in split.values():
        assert idx == sorted(idx)


def test_fractions_are_stratified_per_concept():
    labels = ["cat"] * 400 + ["dog"] * 250 + ["cow"] * 100 + ["yak"] * 50
    split = stratified_split(labels, fractions=(0.8, 0.1, 0.1), seed=3)
    assert_partition(split, len(labels))
    assert [len(split[s]) for s in ("train", "validation", "test")] == [640, 80, 80]
    assert stratified_split(labels, fractions=None, seed=3) == split  # None: the 0.8/0.1/0.1 default
    counts = per_split(labels, split)
    for concept, total in Counter(labels).items():
        assert counts["train"][concept] == pytest.approx(0.8 * total, abs=1)
        assert counts["validation"][concept] == pytest.approx(0.1 * total, abs=1)
        assert counts["test"][concept] == pytest.approx(0.1 * total, abs=1)


def test_exact_counts_with_even_proportions():
    labels = ["a"] * 350 + ["b"] * 210 + ["c"] * 140  # 700 = 50% / 30% / 20%
    split = stratified_split(labels, counts=(500, 100, 100), seed=0)
    assert_partition(split, 700)
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (500, 100, 100)
    counts = per_split(labels, split)
    assert counts["train"] == {"a": 250, "b": 150, "c": 100}
    assert counts["validation"] == {"a": 50, "b": 30, "c": 20}
    assert counts["test"] == {"a": 50, "b": 30, "c": 20}


def test_counts_may_leave_inputs_out_but_totals_stay_exact():
    labels = ["a"] * 600 + ["b"] * 300 + ["c"] * 100 + ["d"] * 7
    split = stratified_split(labels, counts=(50, 20, 10), seed=5)
    assert_partition(split, len(labels), used=80)
    assert [len(split[s]) for s in ("train", "validation", "test")] == [50, 20, 10]
    counts = per_split(labels, split)
    assert counts["validation"]["d"] >= 1 and counts["train"]["d"] >= 1  # rare concept kept
    assert counts["train"]["a"] > counts["train"]["b"] > counts["train"]["c"]


def test_deterministic_for_a_seed_and_different_across_seeds():
    labels = [f"c{i % 7}" for i in range(300)]
    a = stratified_split(labels, seed=11)
    b = stratified_split(labels, seed=11)
    c = stratified_split(labels, seed=12)
    assert a == b
    assert a != c
    for split in (a, c):  # both proportional (ties in the rounding may fall differently)
        for name, frac in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
            for concept, k in per_split(labels, split)[name].items():
                assert abs(k - frac * labels.count(concept)) < 1


def test_small_concepts_still_reach_train_and_validation():
    labels = ["big"] * 97 + ["two"] * 2 + ["three"] * 3
    split = stratified_split(labels, seed=1)
    assert_partition(split, len(labels))
    counts = per_split(labels, split)
    for concept in ("two", "three", "big"):
        assert counts["train"][concept] >= 1
        assert counts["validation"][concept] >= 1
    assert [len(split[s]) for s in ("train", "validation", "test")] == [82, 10, 10]


def test_concept_with_one_example_is_named():
    labels = ["cat"] * 20 + ["zebra"]
    with pytest.raises(SplitPreconditionError, match="'zebra' has 1 labeled input") as info:
        stratified_split(labels, seed=0)
    assert info.value.concept == "zebra"
    assert isinstance(info.value, FailedPrecondition) and isinstance(info.value, ValueError)


def test_one_example_is_fine_without_validation():
    labels = ["cat"] * 20 + ["zebra"]
    split = stratified_split(labels, fractions=(1.0, 0.0, 0.0), seed=0)
    assert len(split["train"]) == 21 and split["validation"] == [] and split["test"] == []


def test_validation_smaller_than_concept_count():
    labels = [c for c in "abc" for _ in range(50)]
    with pytest.raises(SplitPreconditionError, match="validation split has 2 inputs, fewer than the 3 concepts"):
        stratified_split(labels, counts=(100, 2, 0), seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fractions": (0.5, 0.2, 0.2)}, "must sum to 1"),
        ({"fractions": (0.8, 0.3, -0.1)}, "finite and >= 0"),
        ({"fractions": (0.5, 0.5)}, "3 values"),
        ({"counts": (50, 30, 30)}, "only 100 are labeled"),
        ({"counts": (50, -1, 3)}, "non-negative integer"),
        ({"counts": (0, 50, 50)}, "train split would be empty"),
    ],
)
def test_bad_arguments_are_invalid_argument(kwargs, message):
    labels = ["a"] * 50 + ["b"] * 50
    with pytest.raises(SplitError, match=message) as info:
        stratified_split(labels, seed=0, **kwargs)
    assert isinstance(info.value, InvalidArgument) and not isinstance(info.value, FailedPrecondition)


def test_check_split_names_missing_concept():
    labels = ["a", "a", "b", "b"]
    check_split(labels, {"train": [0, 2], "validation": [1, 3], "test": []})
    with pytest.raises(SplitPreconditionError, match="'b' has no input in the validation split"):
        check_split(labels, {"train": [0, 2, 3], "validation": [1], "test": []})


def test_stratification_keys_use_rarest_concept():
    rows = [["cat"], ["cat", "hat"], ["cat"], [], ["hat", "cat", "bow"]]
    assert stratification_keys(rows) == ["cat", "hat", "cat", "", "bow"]


def test_dataset_version_id_is_a_stable_content_hash():
    rows = [("in-1", ["dog", "cat"], "train"), ("in-2", "cow", "validation"), ("in-3", [], "test")]
    vid = dataset_version_id(rows)
    assert vid.startswith("ds-") and len(vid) == 27
    assert dataset_version_id(list(reversed(rows))) == vid
    assert dataset_version_id([("in-1", ["cat", "dog"], "train"), *rows[1:]]) == vid
    assert dataset_version_id([("in-1", ["cat"], "train"), *rows[1:]]) != vid
    assert dataset_version_id([("in-1", ["cat", "dog"], "test"), *rows[1:]]) != vid
    assert dataset_version_id(rows, extra={"embedder": "efficientnet-lite0"}) != vid
    with pytest.raises(SplitError, match="'in-2' appears twice"):
        dataset_version_id([*rows, ("in-2", "cow", "train")])
