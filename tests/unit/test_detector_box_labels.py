"""How box labels reach the detector's training data (jobs._split / fetch_regions) and the SDK's
accepted region forms; the integration test runs the same path through the real services."""

import numpy as np
import pytest
from training_doubles import training_core

from firstlight.domain.errors import InsufficientData
from firstlight.domain.splits import dataset_version_id
from firstlight.errors import FailedPrecondition
from firstlight.sdk import DetectedRegion, region_protos
from firstlight.training.deep.context import Box
from firstlight.training.deep.detector import _check_boxes
from firstlight.training.deep.jobs import _split, fetch_regions
from firstlight.training.store import DatasetRow
from firstlight.v1 import common_pb2


class Platform:
    def __init__(self, regions):
        self.asked = []
        self._regions = regions

    def regions(self, app_id, input_ids):
        self.asked.append(list(input_ids))
        return {i: self._regions.get(i, []) for i in input_ids}


def test_regions_fill_boxes_and_inputs_without_boxes_are_left_out() -> None:
    peers = Platform(
        {
            "a": [("cat", 0.1, 0.1, 0.5, 0.5), ("tree", 0.0, 0.0, 1.0, 1.0)],  # "tree" is not a model concept
            "b": [("dog", 0.2, 0.3, 0.4, 0.9)],
        }
    )
    rows = [DatasetRow("a", ["cat"], 1), DatasetRow("b", ["dog"], 1), DatasetRow("c", ["cat"], 1)]
    images = {i: np.zeros((8, 8, 3), np.uint8) for i in "abc"}
    regions = fetch_regions(peers, "app", rows, ["cat", "dog"])
    assert peers.asked == [["a", "b", "c"]]
    labeled = _split(rows, images, regions)
    assert labeled.input_ids == ["a", "b"]  # "c" has a concept but no box: not a detector example
    assert labeled.boxes == [[Box(0.1, 0.1, 0.5, 0.5, "cat")], [Box(0.2, 0.3, 0.4, 0.9, "dog")]]
    assert labeled.labels == [["cat"], ["dog"]]
    assert _check_boxes("train", labeled, ["cat", "dog"]) == labeled.boxes
    # classification templates get every row and no boxes
    plain = _split(rows, images)
    assert plain.input_ids == ["a", "b", "c"] and plain.boxes is None


def test_a_split_without_boxes_is_the_detectors_failed_precondition() -> None:
    peers = Platform({})
    rows = [DatasetRow("a", ["cat"], 2)]
    labeled = _split(rows, {"a": np.zeros((8, 8, 3), np.uint8)}, fetch_regions(peers, "app", rows, ["cat"]))
    assert len(labeled) == 0
    with pytest.raises(InsufficientData, match="visual_detector needs boxes: the validation split"):
        _check_boxes("validation", labeled, ["cat"])
    with pytest.raises(FailedPrecondition, match="cannot read regions"):
        fetch_regions(object(), "app", rows, ["cat"])


class LabeledPlatform(Platform):
    """Ingestion's view: labeled inputs with their current boxes (which the test then changes)."""

    def __init__(self, regions, concepts):
        super().__init__(regions)
        self.concepts = concepts

    def labeled_inputs(self, app_id, wanted):
        return [(i, cs, list(self._regions.get(i, []))) for i, cs in self.concepts.items()]


def test_a_dataset_version_freezes_box_labels(tmp_path) -> None:
    concepts = {f"i{k}": ["cat" if k % 2 else "dog"] for k in range(40)}
    boxes = {i: [(cs[0], 0.1, 0.1, 0.6, 0.6), ("tree", 0.0, 0.0, 1.0, 1.0)] for i, cs in concepts.items()}
    platform = LabeledPlatform(boxes, concepts)
    service = training_core(tmp_path, platform)
    try:
        ds = service.create_dataset("app", "ds", concepts=["cat", "dog"], seed=0)
        assert all(r.regions == [(r.concepts[0], 0.1, 0.1, 0.6, 0.6)] for r in ds["rows"])  # "tree" not wanted
        # Relabeling a box after the freeze does not change what the version trains on...
        platform._regions["i1"] = [("cat", 0.5, 0.5, 0.9, 0.9)]
        model = {"app_id": "app", "concepts": ["cat", "dog"]}
        _, rows = service.dataset_for(model, "ds")
        assert fetch_regions(service.peers, "app", rows, ["cat", "dog"])["i1"] == [Box(0.1, 0.1, 0.6, 0.6, "cat")]
        assert platform.asked == []  # read from the snapshot, not from ingestion
        # ...and freezing again gives a new version that has the new box.
        ds2 = service.extend_dataset("app", "ds")
        assert ds2["version"] != ds["version"]
        assert next(r for r in ds2["rows"] if r.input_id == "i1").regions == [("cat", 0.5, 0.5, 0.9, 0.9)]
    finally:
        service.shutdown()


def test_versions_frozen_before_box_snapshots_read_todays_boxes() -> None:
    peers = Platform({"a": [("cat", 0.1, 0.1, 0.5, 0.5)]})
    rows = [DatasetRow("a", ["cat"], 1), DatasetRow("b", ["cat"], 1, [("cat", 0.2, 0.2, 0.3, 0.3)])]
    got = fetch_regions(peers, "app", rows, ["cat"])
    assert peers.asked == [["a"]]
    assert got == {"a": [Box(0.1, 0.1, 0.5, 0.5, "cat")], "b": [Box(0.2, 0.2, 0.3, 0.3, "cat")]}


def test_box_labels_enter_the_version_id_and_plain_rows_keep_theirs() -> None:
    plain = [("a", ["cat"], 1), ("b", ["dog"], 2)]
    assert dataset_version_id(plain) == dataset_version_id([(*r, None) for r in plain]) == dataset_version_id([(*r, []) for r in plain])
    boxed = [("a", ["cat"], 1, [("cat", 0.1, 0.1, 0.5, 0.5)]), ("b", ["dog"], 2, [])]
    moved = [("a", ["cat"], 1, [("cat", 0.1, 0.1, 0.5, 0.6)]), ("b", ["dog"], 2, [])]
    assert len({dataset_version_id(plain), dataset_version_id(boxed), dataset_version_id(moved)}) == 3


def test_sdk_region_forms() -> None:
    want = common_pb2.Region(concept="cat", box=common_pb2.BoundingBox(x0=0.25, y0=0.5, x1=0.75, y1=1.0))
    forms = [
        ("cat", (0.25, 0.5, 0.75, 1.0)),
        ("cat", 0.25, 0.5, 0.75, 1.0),
        {"concept": "cat", "box": [0.25, 0.5, 0.75, 1.0]},
        DetectedRegion("cat", 0.9, (0.25, 0.5, 0.75, 1.0)),
        Box(0.25, 0.5, 0.75, 1.0, "cat"),
        want,
    ]
    assert region_protos(forms) == [want] * len(forms)
