"""The search core's query rules (``search.core.Search``) with in-memory fakes of its ports: the
query embedder (``ports.QueryEmbedder``) and the index (a fake ``Searcher``): the text blend and
its n/(n+2) weight, the prototype-only text search of a trained embedder, and the retry when an
index switch flips between embedding a query and searching."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from firstlight.errors import FailedPrecondition, InvalidArgument
from firstlight.search.core import Hit, Search, blend, make_filter, prototype_weight
from firstlight.search.models import BASE_MODEL, AppModels

DIM = 4


def unit(k: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[k] = 1.0
    return v


class FakeEmbedder:
    def __init__(self) -> None:
        self.images: list[tuple[str, str]] = []
        self.texts: list[str] = []

    async def embed_image(self, data: bytes, app_id: str, model: str = "") -> np.ndarray:
        self.images.append((app_id, model))
        return unit(0)

    async def text_query(self, text: str) -> tuple[np.ndarray, list[tuple[str, float]]]:
        self.texts.append(text)
        return unit(1), [("tabby", 0.75), ("tiger cat", 0.25)]


class FakeSearcher:
    """An app's index state and searches, recorded. ``flips``: the active model answers in turn
    (a switch flipping between two reads); ``prototype``: (name, centre, n) or None."""

    def __init__(self, active: list[str], prototype=None, hits_in: set[str] | None = None) -> None:  # type: ignore[no-untyped-def]
        self.active = list(active)
        self.prototype = prototype
        self.hits_in = {BASE_MODEL} if hits_in is None else hits_in
        self.searches: list[tuple[np.ndarray, str]] = []

    def app_models(self, app_id: str) -> AppModels:
        model = self.active.pop(0) if len(self.active) > 1 else self.active[0]
        return AppModels(app_id, active=model)

    def search(self, vector, flt, page_size, page_token, model=None):  # type: ignore[no-untyped-def]
        self.searches.append((np.asarray(vector), model))
        return ([Hit("i1", 0.9, [], 0)] if model in self.hits_in else []), ""

    def vector_of(self, app_id: str, input_id: str) -> tuple[np.ndarray, str]:
        return unit(2), self.app_models(app_id).active

    def concept_prototype(self, app_id, text, probe, limit=256, model=None):  # type: ignore[no-untyped-def]
        return self.prototype

    def count(self, app_id: str, model: str | None = None) -> int:
        return 7


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_prototype_weight_trusts_labeled_examples_more_as_they_grow() -> None:
    assert [prototype_weight(n) for n in (0, 2, 8)] == [0.0, 0.5, 0.8]
    vector, concepts = blend(unit(1), [("tabby", 0.75)], "cat", unit(3), 2)
    assert np.linalg.norm(vector) == pytest.approx(1.0)
    assert vector == pytest.approx(np.array([0, 1, 0, 1], dtype=np.float32) / np.sqrt(2))
    assert concepts == [("cat (app prototype, 2 labeled)", 0.5), ("tabby", pytest.approx(0.375))]


def test_text_search_blends_the_bridge_with_the_apps_prototype() -> None:
    searcher = FakeSearcher([BASE_MODEL], prototype=("cat", unit(3), 8))
    embedder = FakeEmbedder()
    result = run(Search(searcher, embedder).by_text(make_filter("app"), "Cat", 10, ""))  # type: ignore[arg-type]
    [(vector, model)] = searcher.searches
    expected = 0.8 * unit(3) + 0.2 * unit(1)
    assert model == BASE_MODEL and vector == pytest.approx(expected / np.linalg.norm(expected))
    assert result.interpreted_as[0] == ("cat (app prototype, 8 labeled)", pytest.approx(0.8))
    assert result.interpreted_as[1:] == [("tabby", pytest.approx(0.15)), ("tiger cat", pytest.approx(0.05))]
    assert [h.input_id for h in result.hits] == ["i1"] and embedder.texts == ["Cat"]


def test_text_search_without_labeled_examples_is_the_bridge_alone() -> None:
    searcher = FakeSearcher([BASE_MODEL])
    result = run(Search(searcher, FakeEmbedder()).by_text(make_filter("app"), "cat", 10, ""))  # type: ignore[arg-type]
    assert searcher.searches[0][0] == pytest.approx(unit(1)) and result.interpreted_as == [("tabby", 0.75), ("tiger cat", 0.25)]


def test_a_trained_embedder_searches_text_by_prototype_only() -> None:
    embedder = FakeEmbedder()
    searcher = FakeSearcher(["fl.app.emb@1"], prototype=("cat", unit(3), 4), hits_in={"fl.app.emb@1"})
    result = run(Search(searcher, embedder).by_text(make_filter("app"), "cat", 10, ""))  # type: ignore[arg-type]
    assert result.interpreted_as == [("cat (app prototype, 4 labeled)", 1.0)] and embedder.texts == []
    searcher.prototype = None
    with pytest.raises(FailedPrecondition, match="labeled with a concept named 'cat'"):
        run(Search(searcher, embedder).by_text(make_filter("app"), " cat ", 10, ""))  # type: ignore[arg-type]


def test_image_search_follows_a_switch_that_flipped_meanwhile() -> None:
    new = "fl.app.emb@2"
    # active read before embedding: base; after the (empty) search: the new model; then new.
    searcher = FakeSearcher([BASE_MODEL, new, new, new], hits_in={new})
    embedder = FakeEmbedder()
    hits, _ = run(Search(searcher, embedder).by_image(make_filter("app"), 10, "", image=b"img"))  # type: ignore[arg-type]
    assert [m for _, m in searcher.searches] == [BASE_MODEL, new] and [h.input_id for h in hits] == ["i1"]
    assert embedder.images == [("app", ""), ("app", new)]  # embedded again, with the index's model


def test_queries_are_checked_before_anything_is_embedded() -> None:
    embedder = FakeEmbedder()
    search = Search(FakeSearcher([BASE_MODEL]), embedder)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="image_bytes or input_id"):
        run(search.by_image(make_filter("app"), 10, ""))
    with pytest.raises(InvalidArgument, match="page"):
        run(search.by_image(make_filter("app"), 10, "garbage-token", image=b"img"))
    with pytest.raises(InvalidArgument, match="empty"):
        run(search.by_text(make_filter("app"), "  ", 10, ""))
    assert embedder.images == [] and embedder.texts == []
    run(search.by_image(make_filter("app"), 10, "", image=b""))  # given, if empty: the embedder's to judge
    assert embedder.images == [("app", "")]


def test_index_stats_counts_under_one_state() -> None:
    searcher = FakeSearcher([BASE_MODEL, "fl.app.emb@2", "fl.app.emb@2"])
    state, n = run(Search(searcher, FakeEmbedder()).index_stats("app"))  # type: ignore[arg-type]
    assert state.active == "fl.app.emb@2" and n == 7
