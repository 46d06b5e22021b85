"""After a broker loss, search brings labels and deletions back from ingestion's state
(``search.reconcile``): the pure plan, then one pass over a real vector store (both twins) with
ingestion stood in by a list, and the thread that retries while ingestion is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from firstlight.runtime.retry import Backoff
from firstlight.search.indexing import PENDING, Embedded, Index, Labels
from firstlight.search.models import COLLECTION
from firstlight.search.qdrant_client_store import QdrantClientStore
from firstlight.search.qdrant_edge_store import QdrantEdgeStore
from firstlight.search.reconcile import InputLabels, Plan, Reconciler, plan, reconcile
from firstlight.search.vector_store import VectorStore, point_id

DIM = 4


def test_plan() -> None:
    indexed = {"a": 2, "b": 1, "gone": 1, "same": 3}
    current = [InputLabels("a", ["cat"], 1, 3), InputLabels("b", [], 0, 1), InputLabels("same", ["x"], 0, 3), InputLabels("new", ["dog"], 0, 1),
               InputLabels("fresh", [], 0, 0)]  # fmt: skip
    out = plan(indexed, current)
    assert out.delete == ["gone"]
    assert [c.input_id for c in out.relabel] == ["a", "new"]  # newer than the index; "new" is parked
    assert plan({}, []) == Plan()


class Ingestion:
    def __init__(self, apps: dict[str, list[InputLabels]], failures: int = 0) -> None:
        self.apps, self.failures, self.calls, self.closed = apps, failures, 0, 0

    async def labels(self, app_id: str) -> list[InputLabels] | None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ingestion down")
        return self.apps.get(app_id)

    async def close(self) -> None:
        self.closed += 1


def _vec(n: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[n % DIM] = 1.0
    return v


@pytest.fixture(params=["client", "edge"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s: VectorStore = QdrantClientStore(":memory:") if request.param == "client" else QdrantEdgeStore(tmp_path / "edge")
    yield s
    s.close()


def test_reconcile_restores_lost_labels_and_deletions(store: VectorStore) -> None:
    index = Index(store, DIM)
    index.add([Embedded("a", f"i{n}", "", _vec(n), ["cat"], 0, 1) for n in range(5)] + [Embedded("b", "j0", "", _vec(0))])
    # What the broker lost: i1 was deleted, i2 relabelled (revision 2), "late" labelled before
    # its embedding (not indexed: its labels are parked); app c is unknown to ingestion.
    index.add([Embedded("c", "k0", "", _vec(1))])
    ingestion = Ingestion(
        {
            "a": [
                InputLabels("i0", ["cat"], 0, 1),
                InputLabels("i2", ["dog"], 2, 2),
                InputLabels("i3", ["cat"], 0, 1),
                InputLabels("i4", ["cat"], 0, 1),
                InputLabels("late", ["cow"], 1, 4),
            ],
            "b": [InputLabels("j0", [], 0, 0)],
        }
    )
    assert index.label_revisions(page=2) == {
        "a": {f"i{n}": 1 for n in range(5)},
        "b": {"j0": 0},
        "c": {"k0": 0},
    }  # paged through (2 per page)
    out = asyncio.run(reconcile(index, ingestion))
    assert (out.apps, out.deleted, out.relabeled, out.skipped_apps) == (2, 1, 2, ["c"])
    assert store.retrieve(COLLECTION, [point_id("a", "i1")], with_vectors=False) == []
    [i2] = store.retrieve(COLLECTION, [point_id("a", "i2")], with_vectors=False)
    assert (i2.payload["concepts"], i2.payload["split"], i2.payload["label_revision"]) == (["dog"], 2, 2)
    assert store.retrieve(PENDING, [point_id("a", "late")], with_vectors=False)  # parked for its embedding
    assert store.retrieve(COLLECTION, [point_id("c", "k0")], with_vectors=False)  # left alone
    # A second pass finds nothing to do (idempotent).
    again = asyncio.run(reconcile(index, ingestion))
    assert (again.deleted, again.relabeled) == (0, 1)  # only "late" again: still not indexed, parking is a no-op
    index.set_labels(Labels("a", "i2", ["cow"], 0, 3))  # a newer change still wins afterwards
    [i2] = store.retrieve(COLLECTION, [point_id("a", "i2")], with_vectors=False)
    assert i2.payload["concepts"] == ["cow"]


def test_reconcile_relabels_points_stamped_with_a_generation(store: VectorStore) -> None:
    """Points indexed since replay stamps (issue 14) carry their input's generation: the
    reconcile must carry ingestion's generation too, or its relabel is taken for an older
    incarnation's record and refused."""
    index = Index(store, DIM)
    gen = 1_765_000_000_000_000
    index.add([Embedded("a", "i0", "", _vec(0), ["cat"], 0, 1, gen)])
    out = asyncio.run(reconcile(index, Ingestion({"a": [InputLabels("i0", ["dog"], 1, 2, gen)]})))
    assert out.relabeled == 1
    [i0] = store.retrieve(COLLECTION, [point_id("a", "i0")], with_vectors=False)
    assert (i0.payload["concepts"], i0.payload["label_revision"]) == (["dog"], 2)


def test_reconciler_retries_until_ingestion_answers() -> None:
    store = QdrantClientStore(":memory:")
    try:
        index = Index(store, DIM)
        index.add([Embedded("a", "i0", "", _vec(0)), Embedded("a", "gone", "", _vec(1))])
        sources: list[Ingestion] = []
        shared = {"failures": 2}

        def factory() -> Ingestion:
            src = Ingestion({"a": [InputLabels("i0", [], 0, 0)]}, failures=shared["failures"])
            shared["failures"] = max(0, shared["failures"] - 1)
            sources.append(src)
            return src

        rec = Reconciler(index, factory, Backoff(0.01, 0.02))
        rec.start()
        rec.request("test")
        deadline = time.monotonic() + 20
        while rec.runs < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        rec.stop()
        assert rec.runs == 1 and rec.last is not None and rec.last.deleted == 1 and rec.last_error is None
        assert len(sources) == 3 and all(s.closed == 1 for s in sources)  # two failed passes, each source closed
    finally:
        store.close()
