"""Ingestion domain logic over a real SQLite store and blob directory (no broker: events land
in the outbox table, which is what the relay publishes)."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.messaging import topics
from firstlight.v1 import events_pb2


def png(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def core(tmp_path: Path) -> Ingestion:
    store = MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}"))
    ing = Ingestion(store, LocalBlobStore(tmp_path / "blobs"), ImageLimits(max_batch_size=4))
    ing.create_app("app")
    return ing


def outbox(core: Ingestion) -> list[tuple[str, bytes, bytes]]:
    return [(e.topic, e.key, e.value) for _, e in core.store.outbox_batch(1000)]


def test_post_stores_bytes_metadata_and_event_together(core: Ingestion) -> None:
    rows = core.post_inputs("app", [NewInput(png(1), id="a", concepts=["cat"], metadata={"k": "v"}, split=1)])
    assert rows[0].id == "a" and rows[0].width == 32 and rows[0].concepts == ["cat"]
    assert core.blobs.get(rows[0].blob_uri) == png(1)
    [(topic, key, value)] = outbox(core)
    assert topic == topics.INPUTS_INGESTED and key == b"app/a"
    event = events_pb2.InputIngested.FromString(value)
    assert (event.input_id, list(event.concepts), event.split, event.blob_uri) == ("a", ["cat"], 1, rows[0].blob_uri)
    assert event.header.idempotency_key


def test_batch_is_all_or_nothing(core: Ingestion) -> None:
    with pytest.raises(InvalidArgument, match="input 1"):
        core.post_inputs("app", [NewInput(png(1), id="ok"), NewInput(b"garbage", id="bad")])
    assert core.store.existing_input_ids("app", ["ok"]) == set()
    assert outbox(core) == []


def test_limits_and_duplicates(core: Ingestion) -> None:
    with pytest.raises(ResourceExhausted):
        core.post_inputs("app", [NewInput(png(i)) for i in range(5)])
    with pytest.raises(InvalidArgument, match="no inputs"):
        core.post_inputs("app", [])
    with pytest.raises(InvalidArgument, match="twice"):
        core.post_inputs("app", [NewInput(png(1), id="x"), NewInput(png(2), id="x")])
    core.post_inputs("app", [NewInput(png(1), id="x")])
    with pytest.raises(AlreadyExists):
        core.post_inputs("app", [NewInput(png(1), id="x")])


def test_unknown_app_and_input(core: Ingestion) -> None:
    with pytest.raises(NotFound, match="app 'nope'"):
        core.post_inputs("nope", [NewInput(png())])
    with pytest.raises(NotFound, match="input 'ghost'"):
        core.get_input("app", "ghost")
    with pytest.raises(AlreadyExists):
        core.create_app("app")


def test_list_filters_and_pages(core: Ingestion) -> None:
    core.post_inputs("app", [NewInput(png(i), id=f"i{i}", concepts=["dog"] if i % 2 else []) for i in range(4)])
    core.post_inputs("app", [NewInput(png(9), id="t", split=3)])
    seen, token = [], ""
    while True:
        rows, token, total = core.list_inputs("app", page_size=2, page_token=token)
        seen += [r.id for r in rows]
        if not token:
            break
    assert seen == ["i0", "i1", "i2", "i3", "t"] and total == 5
    assert [r.id for r in core.list_inputs("app", concepts_any=["dog"])[0]] == ["i1", "i3"]
    assert [r.id for r in core.list_inputs("app", labeled=False)[0]] == ["i0", "i2", "t"]
    assert [r.id for r in core.list_inputs("app", split=3)[0]] == ["t"]
    with pytest.raises(InvalidArgument, match="page_token"):
        core.list_inputs("app", page_token="not-a-token")


def test_annotations_bump_revision_and_emit_full_state(core: Ingestion) -> None:
    core.post_inputs("app", [NewInput(png(), id="a", concepts=["cat"])])
    [row] = core.annotate("app", [("a", ["kitten"], ["cat"], 2)])
    assert row.concepts == ["kitten"] and row.split == 2 and row.label_revision == 2
    event = events_pb2.AnnotationsChanged.FromString(outbox(core)[-1][2])
    assert list(event.concepts) == ["kitten"] and event.label_revision == 2
    assert core.list_concepts("app") == [("kitten", 1)]
    with pytest.raises(NotFound):
        core.annotate("app", [("ghost", ["x"], [], 0)])
    with pytest.raises(InvalidArgument, match="changes nothing"):
        core.annotate("app", [("a", [], [], 0)])


def test_delete_removes_blob_and_emits_event(core: Ingestion) -> None:
    [row] = core.post_inputs("app", [NewInput(png(), id="a")])
    assert core.delete_inputs("app", ["a"]) == 1
    with pytest.raises(NotFound):
        core.blobs.get(row.blob_uri)
    assert outbox(core)[-1][0] == topics.INPUTS_DELETED
    with pytest.raises(NotFound):
        core.delete_inputs("app", ["a"])


def test_submission_redelivery_is_a_no_op(core: Ingestion) -> None:
    event = events_pb2.InputSubmitted(app_id="app")
    event.header.idempotency_key = "k-1"
    event.input.image_bytes = png()
    first = core.submit(event)
    assert first is not None
    assert core.submit(event) is None
    assert len(outbox(core)) == 1


def test_blob_store_resolves_the_opaque_references_clients_see(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Clients see blob:<app>/<input id> (never a server path); a server-side reader holding the
    store (the gateway) resolves it, within the app only, and nothing outside the store."""
    from firstlight.blobstore import LocalBlobStore
    from firstlight.errors import NotFound

    store = LocalBlobStore(tmp_path / "blobs")
    store.put("app", "x1", b"bytes")
    assert store.get("blob:app/x1", app_id="app") == b"bytes"
    for bad in ("blob:other/x1", "blob:app/../app/x1", "blob:app/x1\n", "blob:../etc/passwd", "blob:app/"):
        with pytest.raises(NotFound):
            store.get(bad, app_id="app")


def test_quality_metrics_are_stored_and_filter_listings(core: Ingestion) -> None:
    """Also run on PostgreSQL (tests/integration/test_postgres.py): the JSON range filter."""
    from firstlight.ingestion.ports import QualityRange

    dark = Image.open(io.BytesIO(png(1))).point(lambda v: v // 8)
    buf = io.BytesIO()
    dark.save(buf, "PNG")
    core.post_inputs("app", [NewInput(png(2), id="lit"), NewInput(buf.getvalue(), id="dark")])
    assert core.get_input("app", "dark").quality["brightness"] < 0.1  # type: ignore[index]
    rows, _, total = core.list_inputs("app", quality_range=QualityRange("brightness", max=0.2))
    assert [r.id for r in rows] == ["dark"] and total == 1
    assert [r.id for r in core.list_inputs("app", quality_range=QualityRange("brightness", min=0.2))[0]] == ["lit"]
