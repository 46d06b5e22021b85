"""Visual and text search, and the index's state (SearchService)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from firstlight.sdk.base import ServiceCalls
from firstlight.sdk.errors import wrap_errors
from firstlight.v1 import common_pb2, ingestion_pb2, search_pb2


class SearchCalls(ServiceCalls):
    @wrap_errors
    def indexed_count(self, app_id: str) -> int:
        return int(self.index_stats(app_id).indexed_count)

    def wait_indexed(self, app_id: str, count: int, timeout: float = 300.0, on_progress: Callable[[int], None] | None = None) -> float:
        """Wait until ``count`` inputs of the app are searchable; returns the seconds waited."""
        start = time.perf_counter()
        while True:
            n = self.indexed_count(app_id)
            if on_progress:
                on_progress(n)
            if n >= count:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"only {n} of {count} inputs indexed after {timeout:.0f}s")
            time.sleep(0.25)

    def wait_labels_visible(self, app_id: str, labeled: dict[str, str], timeout: float = 120.0) -> None:
        """Label changes reach the search index asynchronously (``annotations.changed``): wait
        until the last labeled input of each concept is found under that concept, so the next
        search sees the labels. ``labeled`` maps input id → concept, in labeling order."""
        last = {concept: input_id for input_id, concept in labeled.items()}
        deadline = time.monotonic() + timeout
        for concept, input_id in last.items():
            while time.monotonic() < deadline:
                hits = self.search_by_image(app_id, input_id=input_id, top_k=1, concepts=[concept]).hits
                if hits and hits[0].input_id == input_id:
                    break
                time.sleep(0.2)

    @wrap_errors
    def search_by_image(
        self, app_id: str, *, image: bytes | None = None, input_id: str = "", top_k: int = 10, concepts: Iterable[str] = ()
    ) -> search_pb2.SearchResponse:
        req = search_pb2.SearchByImageRequest(app_id=app_id, page_size=top_k, filter=common_pb2.InputFilter(concepts=list(concepts)))
        if image is not None:
            req.image_bytes = image
        else:
            req.input_id = input_id
        return self.search.SearchByImage(req, timeout=self._deadline("SearchByImage"))

    @wrap_errors
    def search_by_text(self, app_id: str, text: str, *, top_k: int = 10) -> search_pb2.SearchResponse:
        req = search_pb2.SearchByTextRequest(app_id=app_id, text=text, page_size=top_k)
        return self.search.SearchByText(req, timeout=self._deadline("SearchByText"))

    @wrap_errors
    def index_stats(self, app_id: str) -> search_pb2.IndexStats:
        """Searchable inputs, the embedding model searches use, and a running switch's progress."""
        return self.search.GetIndexStats(search_pb2.GetIndexStatsRequest(app_id=app_id), timeout=self._deadline("GetIndexStats"))

    @wrap_errors
    def wait_embedding_model(
        self, app_id: str, timeout: float = 3600.0, on_progress: Callable[[search_pb2.IndexStats], None] | None = None
    ) -> search_pb2.IndexStats:
        """Wait until the app's searches use the embedding model it was last switched to."""
        wanted = self.ingestion.GetApp(ingestion_pb2.GetAppRequest(id=app_id), timeout=self._deadline("GetApp")).embedding_model
        deadline = time.monotonic() + timeout
        while True:
            stats = self.index_stats(app_id)
            if on_progress:
                on_progress(stats)
            # The base backbone's index reports the backbone's version string
            # (firstlight.models.backbone.BACKBONE_VERSION, not imported here: it pulls in torch).
            if not stats.switching_to and (stats.model == wanted or (not wanted and stats.model.startswith("efficientnet-lite"))):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"app {app_id} still searches {stats.model!r} after {timeout:.0f}s ({stats.switch_remaining} inputs to go)")
            time.sleep(0.25)
