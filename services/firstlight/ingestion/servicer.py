"""IngestionService gRPC servicer: proto ⇄ domain conversion around :class:`Ingestion`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from firstlight.errors import FailedPrecondition, FirstlightError, InvalidArgument, NotFound, Unavailable
from firstlight.ingestion.core import Ingestion, NewInput, region_proto
from firstlight.ingestion.outbox import OutboxRelay
from firstlight.ingestion.servicer_video import VideoRpcs
from firstlight.ingestion.store import InputRow
from firstlight.runtime.auth import caller_is_service
from firstlight.runtime.channels import aio_internal_channel
from firstlight.runtime.convert import timestamp
from firstlight.runtime.retry import CHANNEL_OPTIONS, INTERNAL_POLICY
from firstlight.runtime.status import map_errors, status_for
from firstlight import validation
from firstlight.v1 import (
    common_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

LABELED = {
    common_pb2.LABELED_FILTER_UNSPECIFIED: None,
    common_pb2.LABELED_FILTER_LABELED: True,
    common_pb2.LABELED_FILTER_UNLABELED: False,
}


def input_to_proto(row: InputRow) -> common_pb2.Input:
    return common_pb2.Input(
        id=row.id,
        app_id=row.app_id,
        # The services read the bytes at the store's URI; clients are not shown the server's
        # paths (a file:// URI names a directory on the server), only an opaque reference.
        blob_uri=row.blob_uri if caller_is_service() or not row.blob_uri else f"blob:{row.app_id}/{row.id}",
        concepts=row.concepts,
        metadata=row.metadata,
        split=row.split,  # type: ignore[arg-type]
        width=row.width,
        height=row.height,
        format=row.format,
        sha256=row.sha256,
        created_at=timestamp(row.created_at),
        label_revision=row.label_revision,
        regions=[region_proto(g) for g in row.regions],
    )


def app_to_proto(app: dict) -> common_pb2.App:
    return common_pb2.App(
        id=app["id"],
        name=app["name"],
        description=app["description"],
        created_at=timestamp(app["created_at"]),
        # Stored as the internal (Triton) reference; clients see the app's own model id.
        embedding_model=validation.public_embedding_model(app["id"], app.get("embedding_model", "")),
    )


def spec_to_domain(spec: common_pb2.InputSpec) -> NewInput:
    return NewInput(
        image_bytes=spec.image_bytes,
        id=spec.id,
        concepts=list(spec.concepts),
        metadata=dict(spec.metadata),
        split=int(spec.split),
        regions=list(spec.regions),
    )


@map_errors
class IngestionServicer(VideoRpcs, ingestion_pb2_grpc.IngestionServiceServicer):
    def __init__(self, core: Ingestion, relay: OutboxRelay | None = None, search_addr: str = "", embedding_addr: str = "") -> None:
        self.core = core
        self.relay = relay
        self.search = SearchClient(search_addr)
        self.embedding = EmbeddingModels(embedding_addr)

    def _published(self) -> None:
        if self.relay:
            self.relay.notify()

    async def CreateApp(self, request, context):  # type: ignore[no-untyped-def]
        app = await asyncio.to_thread(self.core.create_app, request.id, request.name, request.description)
        return app_to_proto(app)

    async def SetEmbeddingModel(self, request, context):  # type: ignore[no-untyped-def]
        # The model is one of the app's own, by model id (or the backbone): never a Triton name.
        model = validation.app_embedding_model(request.app_id, request.embedding_model)
        app = await asyncio.to_thread(self.core.get_app, request.app_id)  # NOT_FOUND before asking Triton
        if model and model != app.get("embedding_model", ""):
            # NOT_FOUND / FAILED_PRECONDITION if it cannot embed
            await self.embedding.describe(request.app_id, validation.public_embedding_model(request.app_id, model))
        app, changed, n = await asyncio.to_thread(self.core.set_embedding_model, request.app_id, model)
        if changed:
            self._published()
        return ingestion_pb2.SetEmbeddingModelResponse(app=app_to_proto(app), inputs_to_reembed=n, changed=changed)

    async def GetApp(self, request, context):  # type: ignore[no-untyped-def]
        return app_to_proto(await asyncio.to_thread(self.core.get_app, request.id))

    async def PostInputs(self, request, context):  # type: ignore[no-untyped-def]
        items = [spec_to_domain(s) for s in request.inputs]
        rows = await asyncio.to_thread(self.core.post_inputs, request.app_id, items)
        self._published()
        return ingestion_pb2.PostInputsResponse(inputs=[input_to_proto(r) for r in rows])

    async def StreamInputs(self, request_iterator: AsyncIterator, context):  # type: ignore[no-untyped-def]
        app_id = ""
        response = ingestion_pb2.StreamInputsResponse()
        index = 0
        async for message in request_iterator:
            if not app_id:
                if not message.app_id:
                    raise InvalidArgument("the first StreamInputs message must carry app_id")
                app_id = message.app_id
                await asyncio.to_thread(self.core.get_app, app_id)  # unknown app: fail the stream
            elif message.app_id and message.app_id != app_id:
                raise InvalidArgument("app_id changed in the middle of a StreamInputs upload")
            try:
                rows = await asyncio.to_thread(self.core.post_inputs, app_id, [spec_to_domain(message.input)])
                response.input_ids.append(rows[0].id)
                self._published()
            except FirstlightError as exc:
                code, text = status_for(exc)
                response.failures.append(
                    ingestion_pb2.InputFailure(index=index, id=message.input.id, code=code.name, message=text)
                )
            index += 1
        if not app_id:
            raise InvalidArgument("StreamInputs received no inputs")
        return response

    async def GetInput(self, request, context):  # type: ignore[no-untyped-def]
        return input_to_proto(await asyncio.to_thread(self.core.get_input, request.app_id, request.input_id))

    async def ListInputs(self, request, context):  # type: ignore[no-untyped-def]
        f = request.filter
        if f.labeled not in LABELED:
            raise InvalidArgument(f"unknown labeled filter {f.labeled}")
        rows, token, total = await asyncio.to_thread(
            self.core.list_inputs,
            request.app_id,
            page_size=request.page_size,
            page_token=request.page_token,
            concepts_any=list(f.concepts),
            split=int(f.split),
            labeled=LABELED[f.labeled],
        )
        return ingestion_pb2.ListInputsResponse(
            inputs=[input_to_proto(r) for r in rows], next_page_token=token, total_size=total
        )

    async def DeleteInputs(self, request, context):  # type: ignore[no-untyped-def]
        n = await asyncio.to_thread(self.core.delete_inputs, request.app_id, list(request.input_ids))
        self._published()
        return ingestion_pb2.DeleteInputsResponse(deleted_count=n)

    async def PostAnnotations(self, request, context):  # type: ignore[no-untyped-def]
        changes = [
            (a.input_id, list(a.add_concepts), list(a.remove_concepts), int(a.split), list(a.add_regions), a.clear_regions)
            for a in request.annotations
        ]
        rows = await asyncio.to_thread(self.core.annotate, request.app_id, changes)
        self._published()
        return ingestion_pb2.PostAnnotationsResponse(inputs=[input_to_proto(r) for r in rows])

    async def BulkAnnotate(self, request, context):  # type: ignore[no-untyped-def]
        sel = request.selection
        queries = sum(bool(x) for x in (sel.search_text, sel.search_image, sel.search_input_id))
        if bool(sel.input_ids) + queries != 1:
            raise InvalidArgument("select inputs with exactly one of input_ids, search_text, search_image, search_input_id")
        if not request.add_concepts and not request.remove_concepts:
            raise InvalidArgument("give concepts to add and/or remove")
        await asyncio.to_thread(self.core.get_app, request.app_id)
        if sel.input_ids:
            ids, scores = list(dict.fromkeys(sel.input_ids)), []
        else:
            ids, scores = await self.search.select(request.app_id, sel)
        if ids and not request.dry_run:
            changes = [(i, list(request.add_concepts), list(request.remove_concepts), 0) for i in ids]
            await asyncio.to_thread(self.core.annotate, request.app_id, changes)
            self._published()
        return ingestion_pb2.BulkAnnotateResponse(input_ids=ids, scores=scores)

    async def ListConcepts(self, request, context):  # type: ignore[no-untyped-def]
        concepts = await asyncio.to_thread(self.core.list_concepts, request.app_id)
        return ingestion_pb2.ListConceptsResponse(
            concepts=[common_pb2.Concept(name=n, input_count=c) for n, c in concepts]
        )


class EmbeddingModels:
    """Asks the EmbeddingService whether Triton serves an embedding model before an app switches
    to it (a model that cannot embed would leave every new input unsearchable)."""

    def __init__(self, address: str, timeout_s: float = 120.0) -> None:
        self.address = address
        self.timeout_s = timeout_s  # loading a model into Triton can take a while
        self._stub: embedding_pb2_grpc.EmbeddingServiceStub | None = None

    async def describe(self, app_id: str, model: str) -> embedding_pb2.EmbeddingModelInfo:
        if not self.address:
            raise FailedPrecondition("switching embedding models needs FIRSTLIGHT_EMBEDDING_ADDR on the ingestion service")
        if self._stub is None:  # lazily: an aio channel belongs to the running loop
            self._stub = embedding_pb2_grpc.EmbeddingServiceStub(aio_internal_channel(self.address, options=CHANNEL_OPTIONS))
        request = embedding_pb2.DescribeEmbeddingModelRequest(app_id=app_id, model=model)
        try:  # a read: safe to retry while the embedding service restarts
            return await INTERNAL_POLICY.acall(lambda: self._stub.DescribeEmbeddingModel(request, timeout=self.timeout_s))
        except grpc.aio.AioRpcError as exc:
            mapped = {
                grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
                grpc.StatusCode.NOT_FOUND: NotFound,
                grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
            }
            raise mapped.get(exc.code(), Unavailable)(f"embedding model {model!r}: {exc.details()}") from None


class SearchClient:
    """Resolves bulk selections given as searches (ingestion → search over gRPC)."""

    def __init__(self, address: str, timeout_s: float = 60.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._stub: search_pb2_grpc.SearchServiceStub | None = None

    def stub(self) -> search_pb2_grpc.SearchServiceStub:
        if not self.address:
            raise FailedPrecondition("bulk labeling by search needs FIRSTLIGHT_SEARCH_ADDR on the ingestion service")
        if self._stub is None:  # lazily: an aio channel belongs to the running loop
            self._stub = search_pb2_grpc.SearchServiceStub(aio_internal_channel(self.address, options=CHANNEL_OPTIONS))
        return self._stub

    async def select(self, app_id: str, sel: ingestion_pb2.BulkSelection) -> tuple[list[str], list[float]]:
        limit = sel.max_results or 100
        if not 0 < limit <= 10_000:
            raise InvalidArgument(f"max_results must be between 1 and 10000 (got {sel.max_results})")
        ids: list[str] = []
        scores: list[float] = []
        token = ""
        while len(ids) < limit:
            page = min(1000, limit - len(ids))
            try:
                if sel.search_text:
                    text_req = search_pb2.SearchByTextRequest(
                        app_id=app_id, text=sel.search_text, filter=sel.filter, page_size=page, page_token=token
                    )
                    resp = await INTERNAL_POLICY.acall(lambda: self.stub().SearchByText(text_req, timeout=self.timeout_s))
                else:
                    req = search_pb2.SearchByImageRequest(app_id=app_id, filter=sel.filter, page_size=page, page_token=token)
                    if sel.search_image:
                        req.image_bytes = sel.search_image
                    else:
                        req.input_id = sel.search_input_id
                    resp = await INTERNAL_POLICY.acall(lambda: self.stub().SearchByImage(req, timeout=self.timeout_s))
            except grpc.aio.AioRpcError as exc:
                mapped = {grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument, grpc.StatusCode.NOT_FOUND: NotFound}
                raise mapped.get(exc.code(), Unavailable)(f"search failed: {exc.details()}") from None
            for hit in resp.hits:
                if hit.score < sel.min_score:
                    return ids, scores
                ids.append(hit.input_id)
                scores.append(hit.score)
            token = resp.next_page_token
            if not token:
                break
        return ids[:limit], scores[:limit]


def add_to_server(servicer: IngestionServicer, server: grpc.aio.Server) -> list[str]:
    ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(servicer, server)
    return [ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"].full_name]
