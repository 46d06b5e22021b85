"""Replays inside the freshness window (issue 14): a genuine signed record whose effect was undone
since changes nothing. The pure rule (``domain.generations``) and the search index that applies
it, on plain values; the ingestion events that carry the stamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from firstlight.domain.generations import Stamp, generation_of, stale_delete, stale_update
from firstlight.ingestion import events as ingestion_events
from firstlight.ingestion.ports import AnnotationsChanged, InputIngested, InputRow, InputsDeleted
from firstlight.search.indexing import TOMBSTONES, Embedded, Index, Labels
from firstlight.search.models import COLLECTION
from firstlight.search.qdrant_client_store import QdrantClientStore
from firstlight.search.vector_store import point_id
from firstlight.v1 import events_pb2

DIM = 4
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_generation_is_microseconds_and_naive_times_are_utc() -> None:
    assert generation_of(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005
    assert generation_of(T0.replace(tzinfo=None)) == generation_of(T0)
    assert generation_of(T0 + timedelta(microseconds=1)) == generation_of(T0) + 1


@pytest.mark.parametrize(
    ("incoming", "current", "deleted", "stale"),
    [
        (Stamp(5, 1), None, None, None),  # nothing stored
        (Stamp(5, 1), Stamp(5, 1), None, None),  # a redelivery: applied again, harmless
        (Stamp(5, 2), Stamp(5, 1), None, None),  # newer revision
        (Stamp(6, 0), Stamp(5, 9), None, None),  # a newer generation beats any revision
        (Stamp(5, 1), Stamp(5, 2), None, "label revision 1 is older"),
        (Stamp(5, 9), Stamp(6, 0), None, "generation 5 is older"),
        (Stamp(5, 1), None, 5, "was deleted"),  # the deleted generation cannot come back
        (Stamp(4, 1), None, 5, "was deleted"),
        (Stamp(6, 1), None, 5, None),  # a re-upload after the delete
        (Stamp(0, 1), Stamp(0, 0), None, None),  # records from before generations still apply to old state
        (Stamp(0, 9), Stamp(5, 0), None, "generation 0 is older"),
    ],
)
def test_stale_update(incoming: Stamp, current: Stamp | None, deleted: int | None, stale: str | None) -> None:
    why = stale_update(incoming, current, deleted)
    assert (why is None) == (stale is None) and (stale is None or stale in (why or "")), why


def test_stale_delete() -> None:
    assert stale_delete(5, None) is None
    assert stale_delete(5, Stamp(5, 3)) is None  # the generation it names (or older) goes
    assert stale_delete(5, Stamp(4)) is None
    assert "generation 6 was stored since" in (stale_delete(5, Stamp(6)) or "")
    assert stale_delete(None, Stamp(6)) is None  # a record from before generations deletes what is there


def _point(store: QdrantClientStore, input_id: str) -> dict | None:
    found = store.retrieve(COLLECTION, [point_id("app", input_id)], with_vectors=False)
    return found[0].payload if found else None


def test_replays_of_undone_records_change_nothing() -> None:
    """Captured genuine records of input i1 replayed after their effect was undone: the old
    deletion after a re-upload, the old labels after a relabel and after a re-upload, the old
    embedding after a re-upload and after a delete."""
    store = QdrantClientStore(":memory:")
    try:
        index = Index(store, DIM)
        g1, g2 = 1_000, 2_000
        old_vec, new_vec = np.array([1, 0, 0, 0], np.float32), np.array([0, 1, 0, 0], np.float32)
        old_embedding = Embedded("app", "i1", "", old_vec, ["coffee"], 0, 1, g1)
        assert index.add([old_embedding]) == [None]
        assert index.set_labels(Labels("app", "i1", ["coffee", "tea"], 0, 2, g1)) is None
        old_labels = Labels("app", "i1", ["coffee", "tea"], 0, 2, g1)
        assert index.set_labels(Labels("app", "i1", ["tea"], 0, 3, g1)) is None  # relabeled
        # the labels of revision 2 replayed after revision 3: refused, revision 3 stays
        assert "label revision 2 is older" in (index.set_labels(old_labels) or "")
        assert (_point(store, "i1") or {})["concepts"] == ["tea"]
        # redelivery of the current state: not stale
        assert index.set_labels(Labels("app", "i1", ["tea"], 0, 3, g1)) is None

        assert index.delete("app", ["i1"], [g1]) == []
        assert _point(store, "i1") is None
        assert store.retrieve(TOMBSTONES, [point_id("app", "i1")], with_vectors=False)[0].payload["generation"] == g1
        # the deleted generation's embedding and labels replayed: refused, nothing comes back
        assert "was deleted" in (index.add([old_embedding])[0] or "")
        assert "was deleted" in (index.set_labels(old_labels) or "")
        assert _point(store, "i1") is None

        # uploaded again with the same id: a new generation
        assert index.add([Embedded("app", "i1", "", new_vec, ["cat"], 0, 1, g2)]) == [None]
        # the old deletion replayed: the re-upload stays
        stale = index.delete("app", ["i1"], [g1])
        assert len(stale) == 1 and "generation 2000 was stored since" in stale[0]
        assert (_point(store, "i1") or {})["concepts"] == ["cat"]
        # the old labels (a higher revision of the old generation) and the old vector replayed
        assert "was deleted" in (index.set_labels(old_labels) or "")
        assert "generation 1500 is older" in (index.set_labels(Labels("app", "i1", ["x"], 0, 9, 1_500)) or "")
        assert "was deleted" in (index.add([old_embedding])[0] or "")
        [rec] = store.retrieve(COLLECTION, [point_id("app", "i1")], with_vectors=True)
        assert rec.payload["concepts"] == ["cat"] and np.allclose(rec.vector, new_vec)
        # the genuine deletion of the new generation still works
        assert index.delete("app", ["i1"], [g2]) == [] and _point(store, "i1") is None
    finally:
        store.close()


def test_an_embedding_keeps_newer_labels_and_old_records_still_apply() -> None:
    store = QdrantClientStore(":memory:")
    try:
        index = Index(store, DIM)
        vec = np.ones(DIM, np.float32)
        index.add([Embedded("app", "i1", "", vec, ["a"], 0, 1, 7)])
        index.set_labels(Labels("app", "i1", ["b"], 0, 2, 7))
        # re-announced with the labels it was ingested with (revision 1): the vector is updated,
        # the newer labels stay
        assert index.add([Embedded("app", "i1", "", vec * 2, ["a"], 0, 1, 7)]) == [None]
        assert (_point(store, "i1") or {})["concepts"] == ["b"]
        # records from before generations (0) apply to points from before them, deletions too
        index.add([Embedded("app", "old", "", vec, ["x"], 0, 1)])
        assert index.set_labels(Labels("app", "old", ["y"], 0, 2)) is None
        assert (_point(store, "old") or {})["concepts"] == ["y"]
        assert index.delete("app", ["old"]) == [] and _point(store, "old") is None
        # labels parked before generations (0) still win over an upgraded embedding's older ones
        index.set_labels(Labels("app", "parked", ["z"], 0, 5))
        assert index.add([Embedded("app", "parked", "", vec, ["a"], 0, 1, 9)]) == [None]
        assert (_point(store, "parked") or {})["concepts"] == ["z"]
    finally:
        store.close()


def _row(created_at: datetime) -> InputRow:
    return InputRow("app", "i1", "file:///b/i1", 4, 4, "PNG", "0" * 64, 0, {}, created_at, 2, ["cat"])


def test_ingestion_events_carry_the_stamps() -> None:
    row = _row(T0)
    g = generation_of(T0)
    ingested = events_pb2.InputIngested.FromString(ingestion_events.encode(InputIngested(row)).value)
    changed = events_pb2.AnnotationsChanged.FromString(ingestion_events.encode(AnnotationsChanged(row)).value)
    deleted = events_pb2.InputsDeleted.FromString(ingestion_events.encode(InputsDeleted("app", ("i1", "i2"), (g, g + 1))).value)
    assert (ingested.generation, ingested.label_revision) == (g, 2)
    assert (changed.generation, changed.label_revision) == (g, 2)
    assert (list(deleted.input_ids), list(deleted.generations)) == (["i1", "i2"], [g, g + 1])


def test_deletion_markers_are_pruned_after_their_window(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Search's markers of deleted generations would only grow: they are dropped once older than
    the given age (search.main uses two signature windows); a marker written before markers had
    a date gets one on the first pass and goes that age later. Until pruned, a marker still bars
    a replayed embedding of its generation."""
    import numpy as np

    from firstlight.search.indexing import TOMBSTONES, Embedded, Index
    from firstlight.search.qdrant_client_store import QdrantClientStore
    from firstlight.search.vector_store import Point, point_id

    now = [1_000.0]
    store = QdrantClientStore(":memory:")
    index = Index(store, 4, clock=lambda: now[0])
    vec = np.array([1.0, 0, 0, 0], np.float32)
    index.add([Embedded("a", f"i{n}", "", vec, generation=5) for n in range(3)])
    index.delete("a", ["i0", "i1"], [5, 5])
    store.upsert(TOMBSTONES, [Point(point_id("a", "old"), [1.0], {"app_id": "a", "input_id": "old", "generation": 1})])
    now[0] += 50
    assert index.prune_tombstones(older_than_s=100) == 0  # young markers stay; "old" gets a date
    index.add([Embedded("a", "i0", "", vec, generation=5)])  # a replay: still barred
    assert store.retrieve("inputs", [point_id("a", "i0")], with_vectors=False) == []
    now[0] += 60
    assert index.prune_tombstones(older_than_s=100) == 2  # i0, i1 (110 s); "old" dated 60 s ago
    now[0] += 50
    assert index.prune_tombstones(older_than_s=100) == 1
    assert store.scroll(TOMBSTONES, filter=None, limit=10)[0] == []
    store.close()
