"""When the background HNSW build runs (IndexBuilder.due): pure policy, no engine."""

from __future__ import annotations

from firstlight.search.index_builder import IndexBuilder


class NoBuilds:  # a store without background builds (e.g. a Qdrant server, which indexes itself)
    pass


def builder() -> IndexBuilder:
    return IndexBuilder(NoBuilds(), "c", min_points=20_000, growth=0.2, quiet_s=5.0, max_wait_s=300.0)  # type: ignore[arg-type]


def test_small_or_mostly_indexed_collections_are_never_due() -> None:
    b = builder()
    assert not b.due(19_999, 0, 999.0, 0.0)  # scanned exactly anyway
    assert not b.due(100_000, 100_000, 999.0, 0.0)
    assert not b.due(100_000, 81_000, 999.0, 0.0)  # 19% outside the graph: under the growth share


def test_due_after_writes_pause_or_after_max_wait_of_steady_writes() -> None:
    b = builder()
    assert not b.due(100_000, 0, 1.0, 10.0)  # a bulk load is still writing
    assert b.due(100_000, 0, 5.0, 11.0)  # paused
    b = builder()
    assert not b.due(100_000, 0, 0.1, 10.0)
    assert not b.due(100_000, 0, 0.1, 309.0)
    assert b.due(100_000, 0, 0.1, 310.0)  # writes never pause: build anyway after max_wait_s


def test_stores_without_background_builds_are_left_alone() -> None:
    b = builder()
    assert not b.supported and b.current()
    b.start()  # no thread for them
    b.stop()
