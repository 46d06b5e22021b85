"""Background HNSW builds of the embedded engine (QdrantEdgeStore.build_index_in_background): a
real qdrant-edge shard, a real child process; writes made during the build survive the swap."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from firstlight.search import qdrant_edge_store
from firstlight.search.index_builder import IndexBuilder
from firstlight.search.qdrant_edge_store import QdrantEdgeStore
from firstlight.search.vector_store import Point, SearchFilter, point_id

pytestmark = pytest.mark.integration

DIM = 1280
N = 2600  # 13 MB of vectors: above the engine's indexing threshold, so optimize() builds a graph


def vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def points(x: np.ndarray, start: int = 0) -> list[Point]:
    return [Point(point_id("a", str(start + i)), v, {"app_id": "a", "input_id": str(start + i), "labeled": False}) for i, v in enumerate(x)]


def test_build_in_background_keeps_writes_made_during_the_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = QdrantEdgeStore(tmp_path / "v")
    store.ensure_collection("c", DIM)
    base = vectors(N, 0)
    for s in range(0, N, 500):
        store.upsert("c", points(base[s : s + 500], s))
    assert store.index_status("c")[:2] == (N, 0)

    late = vectors(5, 1)
    real_run = subprocess.run

    def run_with_writes(*args, **kwargs):  # type: ignore[no-untyped-def]
        # The collection was copied; these land only in the live one and must be replayed.
        store.upsert("c", points(late, N))
        store.delete("c", [point_id("a", "0"), point_id("a", "1")])
        assert store.set_payload("c", point_id("a", "2"), {"labeled": True})
        return real_run(*args, **kwargs)

    monkeypatch.setattr(qdrant_edge_store.subprocess, "run", run_with_writes)
    builder = IndexBuilder(store, "c", min_points=1000, quiet_s=0.0, nice=1)  # nice: the `nice -n` prefix path
    assert not builder.current()
    assert builder.check_once() and builder.builds == 1  # the service's scheduler, one round
    assert builder.current()
    points_count, indexed, _ = store.index_status("c")
    assert points_count == N + 5 - 2
    assert indexed >= N - 2  # the copy's vectors are in the graph

    def check(s: QdrantEdgeStore) -> None:
        ids = {r.id for r in s.retrieve("c", [point_id("a", str(i)) for i in (0, 1, 2, N, N + 4)], with_vectors=False)}
        assert ids == {point_id("a", str(i)) for i in (2, N, N + 4)}
        assert s.count("c", SearchFilter("a", labeled=True)) == 1
        hit = s.search("c", late[3], filter=SearchFilter("a"), limit=1)[0]
        assert hit.id == point_id("a", str(N + 3)) and hit.score > 0.999
        hit = s.search("c", base[100], filter=SearchFilter("a"), limit=1)[0]
        assert hit.id == point_id("a", "100")

    check(store)
    store.close()
    assert not list((tmp_path / "v").glob(".build-*")) and not (tmp_path / "v" / "c.old").exists()
    reopened = QdrantEdgeStore(tmp_path / "v")
    reopened.ensure_collection("c", DIM)
    check(reopened)  # persisted: a restart serves the built copy with the replayed writes
    assert reopened.index_status("c")[1] >= N - 2
    reopened.close()


def test_a_crash_between_the_swap_renames_keeps_the_old_copy(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path / "v")
    store.ensure_collection("c", 8)
    store.upsert("c", [Point(point_id("a", "x"), [1.0] * 8, {"app_id": "a", "input_id": "x"})])
    store.close()
    (tmp_path / "v" / "c").rename(tmp_path / "v" / "c.old")  # as if killed after the first rename
    (tmp_path / "v" / ".build-c-dead").mkdir()  # and a half-built copy left behind
    store = QdrantEdgeStore(tmp_path / "v")
    store.ensure_collection("c", 8)
    assert store.count("c") == 1
    assert not (tmp_path / "v" / ".build-c-dead").exists()
    store.close()
