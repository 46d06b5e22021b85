"""Box labels (regions) through ingestion: validation naming the field, storage with the input,
concepts derived from regions, annotations that add/clear/remove them, the full state in the
`annotations.changed` event, and the additive migration of a store created before regions."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.domain import validation
from firstlight.errors import InvalidArgument, ResourceExhausted
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.servicer import input_to_proto
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.messaging import topics
from firstlight.v1 import common_pb2, events_pb2


def png(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def region(concept: str, x0: float, y0: float, x1: float, y1: float) -> common_pb2.Region:
    return common_pb2.Region(concept=concept, box=common_pb2.BoundingBox(x0=x0, y0=y0, x1=x1, y1=y1))


@pytest.fixture
def core(tmp_path: Path) -> Ingestion:
    store = MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}"))
    ing = Ingestion(store, LocalBlobStore(tmp_path / "blobs"), ImageLimits(max_batch_size=4))
    ing.create_app("app")
    return ing


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (region("cat", 0.5, 0.1, 0.4, 0.9), r"regions\[0\]\.box: x0 .* must be < x1"),
        (region("cat", 0.1, 0.5, 0.4, 0.5), r"regions\[0\]\.box: y0 .* must be < y1"),
        (region("cat", -0.1, 0.1, 0.4, 0.9), r"regions\[0\]\.box\.x0 = -0\.1.* outside \[0, 1\]"),
        (region("cat", 0.1, 0.1, 0.4, 1.5), r"regions\[0\]\.box\.y1 = 1\.5 is outside"),
        (region("cat", 0.1, 0.1, float("nan"), 0.5), r"regions\[0\]\.box\.x1 = nan"),
        (region(" ", 0.1, 0.1, 0.4, 0.5), r"regions\[0\]\.concept: concept name is empty"),
        (common_pb2.Region(concept="cat"), r"regions\[0\]\.box is missing"),
    ],
)
def test_validation_names_the_field(bad, match) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validation.regions([bad])


def test_validation_accepts_edges_and_limits_count() -> None:
    assert validation.regions([region(" cat ", 0, 0, 1, 1)]) == [("cat", 0.0, 0.0, 1.0, 1.0)]
    with pytest.raises(ResourceExhausted):
        validation.regions([region("cat", 0, 0, 1, 1)] * (validation.MAX_REGIONS_PER_INPUT + 1))


def test_post_stores_regions_and_their_concepts(core: Ingestion) -> None:
    regions = [region("cat", 0.1, 0.2, 0.5, 0.6), region("dog", 0.5, 0.5, 1.0, 1.0)]
    [row] = core.post_inputs("app", [NewInput(png(1), id="a", concepts=["indoor"], regions=regions)])
    assert row.concepts == ["indoor", "cat", "dog"]
    got = core.get_input("app", "a")
    assert sorted(got.concepts) == ["cat", "dog", "indoor"]
    assert [g[0] for g in got.regions] == ["cat", "dog"]
    assert got.regions[0][1:] == pytest.approx((0.1, 0.2, 0.5, 0.6))
    proto = input_to_proto(got)
    assert [(r.concept, round(r.box.x1, 3)) for r in proto.regions] == [("cat", 0.5), ("dog", 1.0)]
    # concept filters (what datasets select by) see region-only concepts
    rows, _, total = core.list_inputs("app", concepts_any=["dog"])
    assert total == 1 and rows[0].id == "a"


def test_bad_region_fails_the_batch_naming_input_and_field(core: Ingestion) -> None:
    with pytest.raises(InvalidArgument, match=r"input 1 \(b\): regions\[1\]\.box: x0"):
        core.post_inputs(
            "app",
            [NewInput(png(1), id="a"), NewInput(png(2), id="b", regions=[region("cat", 0, 0, 1, 1), region("cat", 0.9, 0, 0.1, 1)])],
        )
    assert core.store.existing_input_ids("app", ["a", "b"]) == set()


def test_annotations_add_clear_and_remove_regions_with_event(core: Ingestion) -> None:
    core.post_inputs("app", [NewInput(png(1), id="a", regions=[region("cat", 0.1, 0.1, 0.4, 0.4)])])
    core.store.outbox_ack([s for s, _ in core.store.outbox_batch(100)])

    [row] = core.annotate("app", [("a", [], [], 0, [region("dog", 0.5, 0.5, 0.9, 0.9)], False)])
    assert [g[0] for g in row.regions] == ["cat", "dog"] and sorted(row.concepts) == ["cat", "dog"]
    [(_, event)] = core.store.outbox_batch(100)
    assert event.topic == topics.ANNOTATIONS_CHANGED
    ev = events_pb2.AnnotationsChanged.FromString(event.value)
    assert [r.concept for r in ev.regions] == ["cat", "dog"] and ev.label_revision == row.label_revision

    # removing a concept removes its regions
    [row] = core.annotate("app", [("a", [], ["cat"], 0)])
    assert [g[0] for g in row.regions] == ["dog"] and row.concepts == ["dog"]
    # clearing keeps the concepts, redraws the boxes
    [row] = core.annotate("app", [("a", [], [], 0, [region("dog", 0.0, 0.0, 0.2, 0.2)], True)])
    assert row.regions == [("dog", 0.0, 0.0, pytest.approx(0.2), pytest.approx(0.2))] and row.concepts == ["dog"]
    [row] = core.annotate("app", [("a", [], [], 0, [], True)])
    assert row.regions == [] and row.concepts == ["dog"]
    with pytest.raises(InvalidArgument, match=r"annotations\[0\]\.add_regions\[0\]\.box\.y1"):
        core.annotate("app", [("a", [], [], 0, [region("dog", 0.1, 0.1, 0.2, 2.0)], False)])


def test_submission_carries_regions(core: Ingestion) -> None:
    spec = common_pb2.InputSpec(id="s1", image_bytes=png(3), regions=[region("cat", 0.1, 0.1, 0.3, 0.3)])
    event = events_pb2.InputSubmitted(app_id="app", input=spec)
    row = core.submit(event)
    assert row is not None and row.concepts == ["cat"] and row.regions[0][0] == "cat"
