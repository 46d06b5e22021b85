"""Keeps the vector index's HNSW graph current in the background, so large collections are
searched through the graph instead of scanned.

The embedded engine (qdrant-edge) never indexes by itself and its ``optimize()`` blocks the whole
process, so the store's ``build_index_in_background`` runs the build in a child process on a
copy. This thread decides *when*: once the collection is past the exact-search size and a
sizeable share of its points is outside the graph, after writes have paused for ``quiet_s``
(a bulk load is not rebuilt after every batch), or after ``max_wait_s`` of steady writes. A
Qdrant server (the client twin) indexes by itself and has no such method: then nothing runs.
"""

from __future__ import annotations

import logging
import threading
import time

from firstlight.search.vector_store import CollectionNotFound, VectorStore

log = logging.getLogger(__name__)


class IndexBuilder:
    def __init__(
        self,
        store: VectorStore,
        collection: str,
        *,
        min_points: int,
        growth: float = 0.2,
        quiet_s: float = 5.0,
        max_wait_s: float = 300.0,
        interval_s: float = 2.0,
        nice: int = 0,
    ) -> None:
        self.store = store
        self.collection = collection
        self.min_points = min_points
        self.growth = growth
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self.interval_s = interval_s
        self.nice = nice
        self.builds = 0
        self.building = False
        self.last_error: str | None = None
        self._due_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-builder", daemon=True)

    @property
    def supported(self) -> bool:
        return self.min_points > 0 and hasattr(self.store, "build_index_in_background")

    def start(self) -> IndexBuilder:
        if self.supported:
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops deciding; a build already running finishes in its child process and is
        discarded if the store closes first."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def due(self, points: int, indexed: int, idle_s: float, now: float) -> bool:
        """Whether to build now (pure: the policy, unit-tested)."""
        backlog = points - indexed
        if points < self.min_points or backlog <= 0 or backlog < self.growth * points:
            self._due_since = None
            return False
        if self._due_since is None:
            self._due_since = now
        return idle_s >= self.quiet_s or now - self._due_since >= self.max_wait_s

    def current(self) -> bool:
        """True when searches go through a graph covering all but a small share of the points, or
        the collection is small enough to be scanned exactly (or the engine indexes by itself)."""
        if not self.supported:
            return True
        if self.building:
            return False
        try:
            points, indexed, _ = self.store.index_status(self.collection)  # type: ignore[attr-defined]
        except CollectionNotFound:
            return True
        return points < self.min_points or points - indexed < self.growth * points

    def check_once(self) -> bool:
        """Build if due; True when a build ran."""
        try:
            points, indexed, idle_s = self.store.index_status(self.collection)  # type: ignore[attr-defined]
        except CollectionNotFound:
            return False
        if not self.due(points, indexed, idle_s, time.monotonic()):
            return False
        log.info("building the HNSW index of %s in the background (%d points, %d in the graph)", self.collection, points, indexed)
        start = time.perf_counter()
        self.building = True
        try:
            built = self.store.build_index_in_background(self.collection, nice=self.nice)  # type: ignore[attr-defined]
        finally:
            self.building = False
        if built:
            self.builds += 1
            self._due_since = None
            log.info("HNSW index of %s swapped in after %.1fs", self.collection, time.perf_counter() - start)
        return bool(built)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - searches still work (scan); retry later
                self.last_error = repr(exc)
                log.warning("background index build failed (searches scan meanwhile): %r", exc)
                self._stop.wait(30.0)
