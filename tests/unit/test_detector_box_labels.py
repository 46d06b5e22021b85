"""How box labels reach the detector's training data (jobs._split / fetch_regions) and the SDK's
accepted region forms; the integration test runs the same path through the real services."""

from types import SimpleNamespace

import numpy as np
import pytest

from firstlight.errors import FailedPrecondition
from firstlight.sdk import DetectedRegion, region_protos
from firstlight.training.deep.context import Box
from firstlight.training.deep.detector import _check_boxes
from firstlight.training.deep.jobs import _split, fetch_regions
from firstlight.training.errors import InsufficientData
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
    service = SimpleNamespace(platform=Platform({
        "a": [("cat", 0.1, 0.1, 0.5, 0.5), ("tree", 0.0, 0.0, 1.0, 1.0)],  # "tree" is not a model concept
        "b": [("dog", 0.2, 0.3, 0.4, 0.9)],
    }))
    rows = [DatasetRow("a", ["cat"], 1), DatasetRow("b", ["dog"], 1), DatasetRow("c", ["cat"], 1)]
    images = {i: np.zeros((8, 8, 3), np.uint8) for i in "abc"}
    regions = fetch_regions(service, "app", rows, ["cat", "dog"])
    assert service.platform.asked == [["a", "b", "c"]]
    labeled = _split(service, "app", rows, images, regions)
    assert labeled.input_ids == ["a", "b"]  # "c" has a concept but no box: not a detector example
    assert labeled.boxes == [[Box(0.1, 0.1, 0.5, 0.5, "cat")], [Box(0.2, 0.3, 0.4, 0.9, "dog")]]
    assert labeled.labels == [["cat"], ["dog"]]
    assert _check_boxes("train", labeled, ["cat", "dog"]) == labeled.boxes
    # classification templates get every row and no boxes
    plain = _split(service, "app", rows, images)
    assert plain.input_ids == ["a", "b", "c"] and plain.boxes is None


def test_a_split_without_boxes_is_the_detectors_failed_precondition() -> None:
    service = SimpleNamespace(platform=Platform({}))
    rows = [DatasetRow("a", ["cat"], 2)]
    labeled = _split(service, "app", rows, {"a": np.zeros((8, 8, 3), np.uint8)}, fetch_regions(service, "app", rows, ["cat"]))
    assert len(labeled) == 0
    with pytest.raises(InsufficientData, match="visual_detector needs boxes: the validation split"):
        _check_boxes("validation", labeled, ["cat"])
    with pytest.raises(FailedPrecondition, match="cannot read regions"):
        fetch_regions(SimpleNamespace(platform=object()), "app", rows, ["cat"])


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
