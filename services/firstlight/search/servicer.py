"""SearchService gRPC servicer. Query images and texts are embedded by the EmbeddingService
(over gRPC, with a deadline); the index is local to this service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import numpy as np

from firstlight.errors import FailedPrecondition, FirstlightError, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from firstlight.models.backbone import BACKBONE_VERSION
from firstlight.runtime.channels import aio_internal_channel
from firstlight.runtime.retry import CHANNEL_OPTIONS, INTERNAL_POLICY
from firstlight.runtime.status import map_errors
from firstlight.search.core import Hit, Searcher, check_page, make_filter
from firstlight import validation
from firstlight.search.models import BASE_MODEL, model_ref
from firstlight.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc, search_pb2, search_pb2_grpc
from firstlight.domain.frames import parse_frame_input_id

LABELED = {0: None, 1: True, 2: False}
_CODES: dict[grpc.StatusCode, type[FirstlightError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.NOT_FOUND: NotFound,
}


class EmbeddingClient:
    """Calls the EmbeddingService; its errors keep their meaning for our caller."""

    def __init__(self, address: str, timeout_s: float = 30.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.channel: grpc.aio.Channel | None = None
        self.stub: embedding_pb2_grpc.EmbeddingServiceStub | None = None

    def _stub(self) -> embedding_pb2_grpc.EmbeddingServiceStub:
        # Created lazily: an aio channel belongs to the event loop that is running when it is made.
        if self.stub is None:
            self.channel = aio_internal_channel(
                self.address,
                options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20), *CHANNEL_OPTIONS],
            )
            self.stub = embedding_pb2_grpc.EmbeddingServiceStub(self.channel)
        return self.stub

    async def _call(self, name: str, request):  # type: ignore[no-untyped-def]
        method = getattr(self._stub(), name)
        try:
            # Embedding is a pure function of the request: safe to retry while embedding restarts.
            return await INTERNAL_POLICY.acall(lambda: method(request, timeout=self.timeout_s))
        except grpc.aio.AioRpcError as exc:
            error = _CODES.get(exc.code(), Unavailable)
            raise error(exc.details() or str(exc.code())) from None

    async def embed_image(self, data: bytes, app_id: str, model: str = "") -> np.ndarray:
        """``model``: the app's embedding model as an internal reference ("" = base backbone);
        the EmbeddingService is asked by the app's model id, never by Triton name."""
        request = embedding_pb2.EmbedImagesRequest(images=[data], app_id=app_id, model=validation.public_embedding_model(app_id, model))
        resp = await self._call("EmbedImages", request)
        return np.asarray(resp.embeddings[0].vector, dtype=np.float32)

    async def text_query(self, text: str) -> tuple[np.ndarray, list[common_pb2.ScoredConcept]]:
        resp = await self._call(
            "EmbedTexts", embedding_pb2.EmbedTextsRequest(texts=[text], space=embedding_pb2.TEXT_SPACE_IMAGE)
        )
        return np.asarray(resp.embeddings[0].vector, dtype=np.float32), list(resp.interpretations[0].concepts)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()


def _hits(hits: list[Hit]) -> list[common_pb2.SearchHit]:
    out = []
    for h in hits:
        hit = common_pb2.SearchHit(input_id=h.input_id, score=h.score, concepts=h.concepts, split=h.split)  # type: ignore[arg-type]
        frame = parse_frame_input_id(h.input_id)  # a video frame's id names its video and time
        if frame is not None:
            hit.video_id, hit.video_t = frame
        out.append(hit)
    return out


@map_errors
class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, searcher: Searcher, embedding: EmbeddingClient, index_current: Callable[[], bool] | None = None) -> None:
        self.searcher = searcher
        self.embedding = embedding
        self.index_current = index_current or (lambda: True)

    @staticmethod
    def _filter(app_id: str, f: common_pb2.InputFilter):  # type: ignore[no-untyped-def]
        if f.labeled not in LABELED:
            raise InvalidArgument(f"unknown labeled filter {f.labeled}")
        return make_filter(app_id, list(f.concepts), int(f.split), LABELED[f.labeled])

    async def SearchByImage(self, request, context):  # type: ignore[no-untyped-def]
        flt = self._filter(request.app_id, request.filter)
        check_page(request.page_size, request.page_token, request.app_id)  # fail fast, before embedding the query
        which = request.WhichOneof("query")
        if which == "image_bytes":
            # The query is embedded with the model of the index it searches; the search then names
            # that index, so a switch flipping meanwhile cannot pair a vector with the wrong index.
            model = (await asyncio.to_thread(self.searcher.app_models, request.app_id)).active
            vector = await self.embedding.embed_image(request.image_bytes, request.app_id, model_ref(model))
        elif which == "input_id":
            vector, model = await asyncio.to_thread(self.searcher.vector_of, request.app_id, request.input_id)
        else:
            raise InvalidArgument("give either image_bytes or input_id")
        hits, token = await asyncio.to_thread(self.searcher.search, vector, flt, request.page_size, request.page_token, model)
        if not hits and not request.page_token:
            # The app flipped to a new index between embedding and searching (the old index's
            # points are gone): search the new one the same way.
            now = (await asyncio.to_thread(self.searcher.app_models, request.app_id)).active
            if now != model:
                return await self.SearchByImage(request, context)
        return search_pb2.SearchResponse(hits=_hits(hits), next_page_token=token)

    async def SearchByText(self, request, context):  # type: ignore[no-untyped-def]
        flt = self._filter(request.app_id, request.filter)
        check_page(request.page_size, request.page_token, request.app_id)
        if not request.text.strip():
            raise InvalidArgument("text is empty")
        model = (await asyncio.to_thread(self.searcher.app_models, request.app_id)).active
        if model != BASE_MODEL:
            return await self._text_by_prototype(request, flt, model)
        vector, concepts = await self.embedding.text_query(request.text)
        # Once the app has labeled examples of a concept named like the query, its prototype
        # (mean labeled embedding) is a far better query than the ImageNet-name bridge; blend
        # them, trusting the prototype more as its examples grow (n / (n + 2)).
        proto = await asyncio.to_thread(self.searcher.concept_prototype, request.app_id, request.text, vector, 256, model)
        if proto is not None:
            name, centre, n = proto
            weight = n / (n + 2.0)
            vector = weight * centre + (1 - weight) * vector
            vector = vector / (np.linalg.norm(vector) + 1e-12)
            concepts = [common_pb2.ScoredConcept(name=f"{name} (app prototype, {n} labeled)", score=weight)] + [
                common_pb2.ScoredConcept(name=c.name, score=c.score * (1 - weight)) for c in concepts
            ]
        hits, token = await asyncio.to_thread(self.searcher.search, vector, flt, request.page_size, request.page_token, model)
        return search_pb2.SearchResponse(hits=_hits(hits), next_page_token=token, interpreted_as=concepts)

    async def _text_by_prototype(self, request, flt, model: str):  # type: ignore[no-untyped-def]
        """A trained embedder's space has no text bridge (that maps names onto the base
        backbone's ImageNet head): a text query is the prototype of the app's inputs labeled with
        a concept of that name."""
        proto = await asyncio.to_thread(self.searcher.concept_prototype, request.app_id, request.text, None, 256, model)
        if proto is None:
            raise FailedPrecondition(
                f"app {request.app_id!r} searches with embedding model {model!r}: text search there needs inputs "
                f"labeled with a concept named {request.text.strip()!r}"
            )
        name, vector, n = proto
        hits, token = await asyncio.to_thread(self.searcher.search, vector, flt, request.page_size, request.page_token, model)
        interpreted = [common_pb2.ScoredConcept(name=f"{name} (app prototype, {n} labeled)", score=1.0)]
        return search_pb2.SearchResponse(hits=_hits(hits), next_page_token=token, interpreted_as=interpreted)

    async def GetIndexStats(self, request, context):  # type: ignore[no-untyped-def]
        for _ in range(5):
            state = await asyncio.to_thread(self.searcher.app_models, request.app_id)
            n = await asyncio.to_thread(self.searcher.count, request.app_id, state.active)
            # A switch may flip (and empty the old index) between the two reads: count again
            # until the state is the one the count was taken under.
            if await asyncio.to_thread(self.searcher.app_models, request.app_id) == state:
                break
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
