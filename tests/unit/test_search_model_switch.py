"""Switching an app's embedding model, in the search service's indexer and searcher (in-memory
Qdrant): the old index answers until the new one holds every listed input, then one flip."""

from __future__ import annotations

import numpy as np
import pytest

from firstlight.messaging.bus import ParsedRecord
from firstlight.search.core import Searcher, make_filter
from firstlight.search.indexer import Indexer
from firstlight.search.models import BASE_MODEL, COLLECTION, collection_for
from firstlight.search.qdrant_client_store import QdrantClientStore
from firstlight.v1 import events_pb2

BASE_DIM = 8
NEW = "fl.shop.emb@2"
NEW_DIM = 4


def rec(msg):  # type: ignore[no-untyped-def]
    return ParsedRecord(key=None, message=msg, topic="t", partition=0, offset=0)


def vec(dim: int, k: int) -> list[float]:
    v = np.zeros(dim, dtype=np.float32)
    v[k % dim] = 1.0
    v[(k + 1) % dim] = 0.1
    return v.tolist()


def emb(app: str, input_id: str, model: str, dim: int, k: int, concepts=(), revision: int = 0):  # type: ignore[no-untyped-def]
    return rec(events_pb2.EmbeddingComputed(app_id=app, input_id=input_id, model=model, vector=vec(dim, k), concepts=list(concepts), label_revision=revision))


def changed(app: str, model: str, ids: list[str]):  # type: ignore[no-untyped-def]
    return rec(events_pb2.EmbeddingModelChanged(app_id=app, embedding_model=model, input_ids=ids))


@pytest.fixture()
def parts():  # type: ignore[no-untyped-def]
    store = QdrantClientStore(":memory:")
    indexer = Indexer(store, None, dim=BASE_DIM)
    searcher = Searcher(store, BASE_DIM)
    ids = [f"i{k}" for k in range(6)]
    assert indexer.on_embeddings([emb("shop", i, BASE_MODEL, BASE_DIM, k) for k, i in enumerate(ids)]) == [None] * 6
    indexer.on_embeddings([emb("other", "x", BASE_MODEL, BASE_DIM, 0)])
    yield store, indexer, searcher, ids
    store.close()


def ids_of(searcher: Searcher, app: str, dim: int, model: str | None = None) -> set[str]:
    hits, _ = searcher.search(vec(dim, 0), make_filter(app), 100, "", model)
    return {h.input_id for h in hits}


def test_old_index_answers_until_every_input_is_reembedded_then_flips(parts) -> None:  # type: ignore[no-untyped-def]
    store, indexer, searcher, ids = parts
    indexer.on_model_changed([changed("shop", NEW, ids)])
    state = searcher.app_models("shop")
    assert (state.active, state.target, state.remaining, state.total) == (BASE_MODEL, NEW, 6, 6)
    indexer.on_embeddings([emb("shop", i, NEW, NEW_DIM, k) for k, i in enumerate(ids[:5])])
    # 5 of 6 re-embedded: still the old index, all six found, with base-dimension queries
    assert searcher.app_models("shop").remaining == 1
    assert ids_of(searcher, "shop", BASE_DIM) == set(ids)
    indexer.on_embeddings([emb("shop", ids[5], NEW, NEW_DIM, 5)])
    state = searcher.app_models("shop")
    assert (state.active, state.target) == (NEW, "")
    assert ids_of(searcher, "shop", NEW_DIM) == set(ids)
    assert searcher.count("shop") == 6
    # the old index lost this app's points, not the other app's
    assert store.count(COLLECTION, make_filter("shop")) == 0
    assert store.count(COLLECTION, make_filter("other")) == 1
    assert searcher.app_models("other").active == BASE_MODEL
    vector, model = searcher.vector_of("shop", "i3")
    assert model == NEW and vector.shape == (NEW_DIM,)


def test_vectors_arriving_before_the_change_event_count(parts) -> None:  # type: ignore[no-untyped-def]
    _, indexer, searcher, ids = parts
    indexer.on_embeddings([emb("shop", i, NEW, NEW_DIM, k) for k, i in enumerate(ids)])
    assert searcher.app_models("shop").active == BASE_MODEL  # no switch asked for yet
    indexer.on_model_changed([changed("shop", NEW, ids)])
    assert searcher.app_models("shop").active == NEW


def test_deleting_the_last_missing_input_completes_the_switch(parts) -> None:  # type: ignore[no-untyped-def]
    _store, indexer, searcher, ids = parts
    indexer.on_model_changed([changed("shop", NEW, ids)])
    indexer.on_embeddings([emb("shop", i, NEW, NEW_DIM, k) for k, i in enumerate(ids[:4])])
    indexer.on_deleted([rec(events_pb2.InputsDeleted(app_id="shop", input_ids=ids[3:]))])
    assert searcher.app_models("shop").active == NEW
    assert ids_of(searcher, "shop", NEW_DIM) == set(ids[:3])


def test_labels_changed_during_a_switch_reach_both_indexes(parts) -> None:  # type: ignore[no-untyped-def]
    _, indexer, searcher, ids = parts
    indexer.on_model_changed([changed("shop", NEW, ids)])
    indexer.on_embeddings([emb("shop", i, NEW, NEW_DIM, k) for k, i in enumerate(ids[:3])])
    # i0 is in both indexes; i4 only in the old one (its new vector comes later, with stale labels)
    for i in ("i0", "i4"):
        indexer.on_annotations([rec(events_pb2.AnnotationsChanged(app_id="shop", input_id=i, concepts=["cat"], label_revision=3))])
    assert searcher.search(vec(BASE_DIM, 0), make_filter("shop", ["cat"]), 10, "")[0] != []
    indexer.on_embeddings([emb("shop", i, NEW, NEW_DIM, k, revision=1) for k, i in enumerate(ids) if k >= 3])
    assert searcher.app_models("shop").active == NEW
    hits, _ = searcher.search(vec(NEW_DIM, 0), make_filter("shop", ["cat"]), 10, "")
    assert {h.input_id for h in hits} == {"i0", "i4"}


def test_switching_back_before_completion_cancels(parts) -> None:  # type: ignore[no-untyped-def]
    _, indexer, searcher, ids = parts
    indexer.on_model_changed([changed("shop", NEW, ids)])
    indexer.on_model_changed([changed("shop", "", ids)])
    state = searcher.app_models("shop")
    assert (state.active, state.target) == (BASE_MODEL, "")
    indexer.on_embeddings([emb("shop", i, NEW, NEW_DIM, k) for k, i in enumerate(ids)])
    assert searcher.app_models("shop").active == BASE_MODEL
    assert ids_of(searcher, "shop", BASE_DIM) == set(ids)


def test_wrong_dimension_for_a_model_is_poison(parts) -> None:  # type: ignore[no-untyped-def]
    _, indexer, _, _ = parts
    indexer.on_embeddings([emb("shop", "i0", NEW, NEW_DIM, 0)])
    out = indexer.on_embeddings([emb("shop", "i1", NEW, NEW_DIM + 1, 0), emb("shop", "i2", BASE_MODEL, BASE_DIM + 1, 0)])
    assert all(o is not None and "dimensions" in str(o) for o in out)


def test_collection_names_are_valid_and_distinct() -> None:
    from firstlight.search.vector_store import check_collection_name

    names = {collection_for(m) for m in (BASE_MODEL, "a.b@1", "a.b@2", "a_b@1", "x" * 200)}
    assert len(names) == 5
    assert all(check_collection_name(n) for n in names)
