"""SearchService gRPC servicer: proto ⇄ domain conversion around :class:`firstlight.search.core.Search`
(query embedding, the text blend and the index-switch retry are the core's)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from firstlight.domain import validation
from firstlight.domain.frames import parse_frame_input_id
from firstlight.runtime.convert import labeled_of
from firstlight.runtime.status import map_errors
from firstlight.search.core import Hit, Search, make_filter
from firstlight.search.vector_store import SearchFilter
from firstlight.v1 import common_pb2, search_pb2, search_pb2_grpc


def _hits(hits: list[Hit]) -> list[common_pb2.SearchHit]:
    out = []
    for h in hits:
        hit = common_pb2.SearchHit(input_id=h.input_id, score=h.score, concepts=h.concepts, split=h.split)  # type: ignore[arg-type]
        frame = parse_frame_input_id(h.input_id)  # a video frame's id names its video and time
        if frame is not None:
            hit.video_id, hit.video_t = frame
        out.append(hit)
    return out


def _concepts(pairs: list[tuple[str, float]]) -> list[common_pb2.ScoredConcept]:
    return [common_pb2.ScoredConcept(name=n, score=s) for n, s in pairs]


@map_errors
class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, search: Search, index_current: Callable[[], bool] | None = None) -> None:
        self.search = search
        self.searcher = search.searcher
        self.index_current = index_current or (lambda: True)

    @staticmethod
    def _filter(app_id: str, f: common_pb2.InputFilter) -> SearchFilter:
        return make_filter(app_id, list(f.concepts), int(f.split), labeled_of(f.labeled))

    async def SearchByImage(self, request, context):  # type: ignore[no-untyped-def]
        flt = self._filter(request.app_id, request.filter)
        which = request.WhichOneof("query")
        hits, token = await self.search.by_image(
            flt,
            request.page_size,
            request.page_token,
            image=request.image_bytes if which == "image_bytes" else None,
            input_id=request.input_id if which == "input_id" else "",
        )
        return search_pb2.SearchResponse(hits=_hits(hits), next_page_token=token)

    async def SearchByText(self, request, context):  # type: ignore[no-untyped-def]
        flt = self._filter(request.app_id, request.filter)
        result = await self.search.by_text(flt, request.text, request.page_size, request.page_token)
        return search_pb2.SearchResponse(hits=_hits(result.hits), next_page_token=result.next_page_token, interpreted_as=_concepts(result.interpreted_as))

    async def GetIndexStats(self, request, context):  # type: ignore[no-untyped-def]
        state, n = await self.search.index_stats(request.app_id)
        current = await asyncio.to_thread(self.index_current)
        return search_pb2.IndexStats(
            app_id=request.app_id,
            indexed_count=n,
            # Clients see the app's own model ids (or the backbone's version), never Triton names.
            model=validation.public_embedding_model(request.app_id, state.active),
            switching_to=validation.public_embedding_model(request.app_id, state.target),
            switch_remaining=state.remaining if state.target else 0,
            switch_total=state.total if state.target else 0,
            ann_current=current,
        )

    async def GetVectors(self, request, context):  # type: ignore[no-untyped-def]
        found, model = await asyncio.to_thread(self.searcher.vectors_of, request.app_id, list(request.input_ids))
        return search_pb2.GetVectorsResponse(
            vectors=[search_pb2.InputVector(input_id=i, vector=v.tolist()) for i, v in found],
            model=validation.public_embedding_model(request.app_id, model),
        )


def add_to_server(servicer: SearchServicer, server: grpc.aio.Server) -> list[str]:
    search_pb2_grpc.add_SearchServiceServicer_to_server(servicer, server)
    return [search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name]
