"""IngestionService gRPC servicer: proto ⇄ domain conversion around :class:`Ingestion` (the
rules, bulk labeling and model switches included, are the core's)."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterator, Callable

import grpc

from firstlight.domain import validation
from firstlight.errors import FirstlightError, InvalidArgument
from firstlight.hosting import keys
from firstlight.hosting.auth import CURRENT_PRINCIPAL, caller_is_service
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.events import region_proto
from firstlight.ingestion.ports import InputFilter, InputRow, QualityRange, SearchQuery, Selection
from firstlight.ingestion.servicer_video import VideoRpcs
from firstlight.media.thumbnail import thumbnail_name
from firstlight.runtime.convert import labeled_of, timestamp
from firstlight.runtime.status import map_errors, status_for
from firstlight.v1 import common_pb2, ingestion_pb2, ingestion_pb2_grpc

#: StreamInputs messages checked and stored at once: two per core, up to 4. An input's wall time
#: is its decode plus ~5 ms of fsyncs (original, thumbnail, preview, the row) and thread hops;
#: with one per core in flight the cores idled through those waits (the 12 MP upload used ~1.4
#: of 2 cores, issue 17). The decode memory budget still bounds what is held.
STREAM_WINDOW = max(1, min(4, 2 * (os.cpu_count() or 1)))


def input_to_proto(row: InputRow) -> common_pb2.Input:
    service = caller_is_service()
    return common_pb2.Input(
        id=row.id,
        app_id=row.app_id,
        # The services read the bytes at the store's URI; clients are not shown the server's
        # paths (a file:// URI names a directory on the server), only an opaque reference.
        blob_uri=row.blob_uri if service or not row.blob_uri else f"blob:{row.app_id}/{row.id}",
        thumbnail_uri=row.thumbnail_uri if service or not row.thumbnail_uri else f"blob:{row.app_id}/{thumbnail_name(row.id)}",
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
        label_records=[common_pb2.LabelRecord(concept=c, labeled_by=by, labeled_at=timestamp(at) if at else None) for c, by, at in row.label_records],
        quality=quality_to_proto(row.quality),
    )


_QUALITY_FIELDS = ("blur", "brightness", "highlight", "contrast", "saturation", "noise", "aspect_ratio", "grayscale", "blank_fraction", "width", "height")


def quality_to_proto(q: dict[str, float] | None) -> common_pb2.ImageQuality | None:
    """The stored metrics as the message; None leaves it unset."""
    if q is None:
        return None
    kinds = {"grayscale": bool, "width": int, "height": int}
    return common_pb2.ImageQuality(**{k: kinds.get(k, float)(q[k]) for k in _QUALITY_FIELDS if k in q})  # type: ignore[arg-type]


def quality_range_of(request) -> QualityRange | None:  # type: ignore[no-untyped-def]
    """ListInputsRequest.quality as the core's filter (None when unset)."""
    if not request.HasField("quality"):
        return None
    q = request.quality
    return QualityRange(q.metric, q.min if q.HasField("min") else None, q.max if q.HasField("max") else None)


def app_to_proto(app: dict) -> common_pb2.App:
    return common_pb2.App(
        id=app["id"],
        name=app["name"],
        description=app["description"],
        created_at=timestamp(app["created_at"]),
        # Stored as the internal (Triton) reference; clients see the app's own model id.
        embedding_model=validation.public_embedding_model(app["id"], app.get("embedding_model", "")),
    )


def selection_to_domain(sel: ingestion_pb2.BulkSelection) -> Selection:
    f = sel.filter
    return Selection(
        input_ids=tuple(sel.input_ids),
        query=SearchQuery(text=sel.search_text, image=sel.search_image, input_id=sel.search_input_id),
        # Listed ids ignore the filter (as they always did): only a search's filter is checked.
        filter=InputFilter(tuple(f.concepts), int(f.split), None if sel.input_ids else labeled_of(f.labeled, "selection.filter.labeled")),
        max_results=sel.max_results,
        min_score=sel.min_score,
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
    def __init__(self, core: Ingestion, key_name: Callable[[str, str], str] | None = None) -> None:
        self.core = core
        self.key_name = key_name  # (app, key id) -> the key's name, for who-labeled records

    def _labeler(self) -> str:
        """Who is labeling, for the label records: the key's name and id, "admin key",
        "service", or "" when authentication is off."""
        p = CURRENT_PRINCIPAL.get()
        if p is None:
            return ""
        if p.kind != keys.APP:
            return "admin key" if p.kind == keys.ADMIN else "service"
        name = self.key_name(p.app_id, p.key_id) if self.key_name else ""
        return f"{name} ({p.key_id})" if name else p.key_id

    async def CreateApp(self, request, context):  # type: ignore[no-untyped-def]
        app = await asyncio.to_thread(self.core.create_app, request.id, request.name, request.description)
        return app_to_proto(app)

    async def SetEmbeddingModel(self, request, context):  # type: ignore[no-untyped-def]
        app, changed, n = await self.core.switch_embedding_model(request.app_id, request.embedding_model)
        return ingestion_pb2.SetEmbeddingModelResponse(app=app_to_proto(app), inputs_to_reembed=n, changed=changed)

    async def GetApp(self, request, context):  # type: ignore[no-untyped-def]
        return app_to_proto(await asyncio.to_thread(self.core.get_app, request.id))

    async def PostInputs(self, request, context):  # type: ignore[no-untyped-def]
        items = [spec_to_domain(s) for s in request.inputs]
        rows = await asyncio.to_thread(self.core.post_inputs, request.app_id, items)
        return ingestion_pb2.PostInputsResponse(inputs=[input_to_proto(r) for r in rows])

    async def StreamInputs(self, request_iterator: AsyncIterator, context):  # type: ignore[no-untyped-def]
        app_id = ""
        response = ingestion_pb2.StreamInputsResponse()
        index = 0
        # Up to STREAM_WINDOW inputs are checked and stored side by side (a photo's decode is
        # tens of ms of CPU, its blob and row writes wait on the disk), answered in order.
        pending: deque[tuple[int, str, asyncio.Future]] = deque()

        async def settle() -> None:
            at, given_id, job = pending.popleft()
            try:
                rows = await job
                response.input_ids.append(rows[0].id)
            except FirstlightError as exc:
                code, text = status_for(exc)
                response.failures.append(ingestion_pb2.InputFailure(index=at, id=given_id, code=code.name, message=text))

        async for message in request_iterator:
            if not app_id:
                if not message.app_id:
                    raise InvalidArgument("the first StreamInputs message must carry app_id")
                app_id = message.app_id
                await asyncio.to_thread(self.core.get_app, app_id)  # unknown app: fail the stream
            elif message.app_id and message.app_id != app_id:
                raise InvalidArgument("app_id changed in the middle of a StreamInputs upload")
            given = message.input.id
            while pending and (len(pending) >= STREAM_WINDOW or (given and any(given == p[1] for p in pending))):
                await settle()  # a repeated id waits for the first: it gets ALREADY_EXISTS, as in order
            pending.append((index, given, asyncio.ensure_future(asyncio.to_thread(self._post_one, app_id, message.input))))
            index += 1
        while pending:
            await settle()
        if not app_id:
            raise InvalidArgument("StreamInputs received no inputs")
        return response

    def _post_one(self, app_id: str, spec) -> list[InputRow]:  # type: ignore[no-untyped-def]
        return self.core.post_inputs(app_id, [spec_to_domain(spec)])

    async def GetInput(self, request, context):  # type: ignore[no-untyped-def]
        return input_to_proto(await asyncio.to_thread(self.core.get_input, request.app_id, request.input_id))

    async def ListInputs(self, request, context):  # type: ignore[no-untyped-def]
        f = request.filter
        labeled = labeled_of(f.labeled)
        rows, token, total = await asyncio.to_thread(
            self.core.list_inputs,
            request.app_id,
            page_size=request.page_size,
            page_token=request.page_token,
            concepts_any=list(f.concepts),
            split=int(f.split),
            labeled=labeled,
            input_ids=list(request.input_ids),
            quality_range=quality_range_of(request),
        )
        out = [input_to_proto(r) for r in rows]
        if request.with_pixel_signature:
            for msg, row in zip(out, rows, strict=True):
                msg.pixel_signature = row.pixel_signature or b""
        return ingestion_pb2.ListInputsResponse(inputs=out, next_page_token=token, total_size=total)

    async def DeleteInputs(self, request, context):  # type: ignore[no-untyped-def]
        n = await asyncio.to_thread(self.core.delete_inputs, request.app_id, list(request.input_ids))
        return ingestion_pb2.DeleteInputsResponse(deleted_count=n)

    async def PostAnnotations(self, request, context):  # type: ignore[no-untyped-def]
        changes = [(a.input_id, list(a.add_concepts), list(a.remove_concepts), int(a.split), list(a.add_regions), a.clear_regions) for a in request.annotations]
        rows = await asyncio.to_thread(self.core.annotate, request.app_id, changes, self._labeler())
        return ingestion_pb2.PostAnnotationsResponse(inputs=[input_to_proto(r) for r in rows])

    async def BulkAnnotate(self, request, context):  # type: ignore[no-untyped-def]
        result = await self.core.bulk_annotate(
            request.app_id,
            selection_to_domain(request.selection),
            list(request.add_concepts),
            list(request.remove_concepts),
            dry_run=request.dry_run,
            labeled_by=self._labeler(),
        )
        return ingestion_pb2.BulkAnnotateResponse(input_ids=result.input_ids, scores=result.scores)

    async def ReembedInputs(self, request, context):  # type: ignore[no-untyped-def]
        page = await asyncio.to_thread(
            self.core.reembed_inputs,
            request.app_id,
            input_ids=list(request.input_ids),
            only_rotated=request.only_rotated,
            all_inputs=request.all_inputs,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return ingestion_pb2.ReembedInputsResponse(
            scanned=page.scanned,
            queued=len(page.queued_ids),
            queued_input_ids=page.queued_ids,
            next_page_token=page.next_page_token,
            total_size=page.total,
            unreadable_input_ids=page.unreadable_ids,
        )

    async def GetIndexingBacklog(self, request, context):  # type: ignore[no-untyped-def]
        unrelayed, awaiting = await asyncio.to_thread(self.core.indexing_backlog, request.app_id)
        return ingestion_pb2.IndexingBacklog(unrelayed=unrelayed, awaiting_index=awaiting)

    async def GetQualityHistogram(self, request, context):  # type: ignore[no-untyped-def]
        edges, counts, unmeasured = await asyncio.to_thread(self.core.quality_histogram, request.app_id, request.metric, request.bins)
        return ingestion_pb2.GetQualityHistogramResponse(metric=request.metric, edges=edges, counts=counts, unmeasured=unmeasured)

    async def ListConcepts(self, request, context):  # type: ignore[no-untyped-def]
        concepts = await asyncio.to_thread(self.core.list_concepts, request.app_id)
        return ingestion_pb2.ListConceptsResponse(concepts=[common_pb2.Concept(name=n, input_count=c) for n, c in concepts])


def add_to_server(servicer: IngestionServicer, server: grpc.aio.Server) -> list[str]:
    ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(servicer, server)
    return [ingestion_pb2.DESCRIPTOR.services_by_name["IngestionService"].full_name]
