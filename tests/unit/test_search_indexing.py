"""The index rules (``search.indexing.Index``) on plain values, no events: labels that arrive
before the embedding wait for it, newer labels win, a vector of the wrong size is refused."""

from __future__ import annotations

import numpy as np

from firstlight.search.indexing import PENDING, Embedded, Index, Labels
from firstlight.search.models import BASE_MODEL, COLLECTION
from firstlight.search.qdrant_client_store import QdrantClientStore
from firstlight.search.vector_store import point_id

DIM = 4


def test_labels_wait_for_the_embedding_and_newer_labels_win() -> None:
    store = QdrantClientStore(":memory:")
    try:
        index = Index(store, DIM)
        index.set_labels(Labels("app", "i1", ["cat"], 1, 3))  # before the embedding
        assert store.retrieve(PENDING, [point_id("app", "i1")], with_vectors=False)
        vec = np.array([1, 0, 0, 0], np.float32)
        refused = index.add([Embedded("app", "i1", BASE_MODEL, vec, [], 0, 1), None, Embedded("app", "i2", "", np.ones(3, np.float32))])
        assert refused[0] is None and refused[1] is None and "3 dimensions" in (refused[2] or "")
        [point] = store.retrieve(COLLECTION, [point_id("app", "i1")], with_vectors=False)
        assert (point.payload["concepts"], point.payload["label_revision"]) == (["cat"], 3)  # the parked, newer labels
        assert store.retrieve(PENDING, [point_id("app", "i1")], with_vectors=False) == []  # settled
        index.set_labels(Labels("app", "i1", ["dog"], 0, 2))  # older: ignored
        index.set_labels(Labels("app", "i1", ["cow"], 0, 4))
        [point] = store.retrieve(COLLECTION, [point_id("app", "i1")], with_vectors=False)
        assert point.payload["concepts"] == ["cow"]
        index.delete("app", ["i1"])
        assert store.retrieve(COLLECTION, [point_id("app", "i1")], with_vectors=False) == []
    finally:
        store.close()
