"""Apps, inputs, uploads and labels (IngestionService), and an app's embedding model."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from firstlight.clients.policy import deadline_for
from firstlight.sdk.base import ServiceCalls, pages
from firstlight.sdk.errors import wrap_errors
from firstlight.sdk.items import SPLITS, ReembedReport, UploadItem, UploadReport, folder_items, region_protos
from firstlight.sdk.quality import QualityFilter
from firstlight.v1 import common_pb2, ingestion_pb2


class IngestionCalls(ServiceCalls):
    # -- apps & inputs ----------------------------------------------------------------
    @wrap_errors
    def create_app(self, app_id: str, name: str = "", exist_ok: bool = False) -> common_pb2.App:
        """Create an app (admin key). With ``exist_ok``, an existing app is returned first, so
        an app's own key can call this for its app (creating needs the admin key)."""
        get = ingestion_pb2.GetAppRequest(id=app_id)
        if exist_ok:
            try:
                return self.ingestion.GetApp(get, timeout=self._deadline("GetApp"))
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        try:
            return self.ingestion.CreateApp(ingestion_pb2.CreateAppRequest(id=app_id, name=name), timeout=self._deadline("CreateApp"))
        except grpc.RpcError as exc:
            if exist_ok and exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                return self.ingestion.GetApp(get, timeout=self._deadline("GetApp"))
            raise

    @wrap_errors
    def upload(
        self,
        app_id: str,
        items: Sequence[UploadItem],
        *,
        chunk: int = 256,
        on_progress: Callable[[int], None] | None = None,
    ) -> UploadReport:
        """Stream ``items`` (StreamInputs, ``chunk`` per call); bad images are reported, not fatal.

        Items without an id get one here (a uuid), so a chunk cut off by a restarting service
        is sent again without duplicating what the first attempt stored: on a resend, an id the
        interrupted attempt had already sent that comes back ALREADY_EXISTS counts as accepted."""
        report = UploadReport()
        start = time.perf_counter()
        ids = [item.id or uuid.uuid4().hex for item in items]
        for begin in range(0, len(items), chunk):
            part = items[begin : begin + chunk]
            sent: set[int] = set()  # offsets in `part` that any attempt has put on the wire

            def messages(part: Sequence[UploadItem] = part, begin: int = begin, sent: set[int] = sent) -> Iterator[ingestion_pb2.StreamInputsRequest]:
                for offset, item in enumerate(part):
                    first = offset not in sent
                    sent.add(offset)
                    yield ingestion_pb2.StreamInputsRequest(
                        app_id=app_id,
                        input=common_pb2.InputSpec(
                            id=ids[begin + offset],
                            image_bytes=item.image_bytes,
                            concepts=item.concepts,
                            metadata=item.metadata,
                            split=SPLITS[item.split],
                            regions=region_protos(item.regions),
                        ),
                    )
                    if on_progress and first:
                        on_progress(1)

            attempt: dict[str, Any] = {"n": 0, "sent_before": set()}  # attempts so far; what was sent before the last

            def send(attempt: dict[str, Any] = attempt, sent: set[int] = sent) -> ingestion_pb2.StreamInputsResponse:
                attempt["n"] += 1
                attempt["sent_before"] = set(sent)
                return self.ingestion.StreamInputs(messages(), timeout=self._deadline("StreamInputs"))

            resp = self.retry.call(send)
            accepted = list(resp.input_ids)
            for failure in resp.failures:
                if failure.code == "ALREADY_EXISTS" and attempt["n"] > 1 and failure.index in attempt["sent_before"]:
                    accepted.append(failure.id)  # stored by the interrupted attempt
                    continue
                failure.index += begin
                report.failures.append(failure)
            order = {input_id: n for n, input_id in enumerate(ids[begin : begin + chunk])}
            report.input_ids += sorted(accepted, key=lambda i: order.get(i, len(order)))
        report.seconds = time.perf_counter() - start
        return report

    def upload_folder(self, app_id: str, folder: str | Path, **kw: Any) -> UploadReport:
        return self.upload(app_id, folder_items(Path(folder)), **kw)

    @wrap_errors
    def get_input(self, app_id: str, input_id: str) -> common_pb2.Input:
        return self.ingestion.GetInput(ingestion_pb2.GetInputRequest(app_id=app_id, input_id=input_id), timeout=self._deadline("GetInput"))

    @wrap_errors
    def list_inputs(
        self, app_id: str, *, concepts: Iterable[str] = (), quality: QualityFilter | str | None = None, page_size: int = 100
    ) -> Iterator[common_pb2.Input]:
        """The app's inputs (with any of ``concepts``; with a stored quality metric in the range
        ``quality``, a :class:`QualityFilter` or its text such as ``"blur<=0.2"``), page by page."""
        for page in pages(
            lambda token: self.ingestion.ListInputs(self._list_request(app_id, concepts, quality, page_size, token), timeout=self._deadline("ListInputs"))
        ):
            yield from page.inputs

    @wrap_errors
    def count_inputs(self, app_id: str, *, concepts: Iterable[str] = (), quality: QualityFilter | str | None = None) -> int:
        """How many inputs :meth:`list_inputs` would list."""
        return int(self.ingestion.ListInputs(self._list_request(app_id, concepts, quality, 1, ""), timeout=self._deadline("ListInputs")).total_size)

    @staticmethod
    def _list_request(app_id: str, concepts: Iterable[str], quality: QualityFilter | str | None, page_size: int, token: str) -> ingestion_pb2.ListInputsRequest:
        req = ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=page_size, page_token=token, filter=common_pb2.InputFilter(concepts=list(concepts)))
        if quality is not None:
            req.quality.CopyFrom((QualityFilter.parse(quality) if isinstance(quality, str) else quality).to_proto())
        return req

    @wrap_errors
    def quality_histogram(self, app_id: str, metric: str, *, bins: int = 20) -> ingestion_pb2.GetQualityHistogramResponse:
        """Histogram of one stored image-quality metric over the app's inputs: ``edges`` (bins + 1,
        empty when no input has the metric), ``counts`` per bucket, and ``unmeasured`` (inputs
        stored before ingestion measured quality)."""
        return self.ingestion.GetQualityHistogram(
            ingestion_pb2.GetQualityHistogramRequest(app_id=app_id, metric=metric, bins=bins), timeout=self._deadline("GetQualityHistogram")
        )

    @wrap_errors
    def list_concepts(self, app_id: str) -> list[common_pb2.Concept]:
        return list(self.ingestion.ListConcepts(ingestion_pb2.ListConceptsRequest(app_id=app_id), timeout=self._deadline("ListConcepts")).concepts)

    # -- labeling ---------------------------------------------------------------------
    @wrap_errors
    def bulk_label(
        self,
        app_id: str,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        input_ids: Iterable[str] = (),
        text: str = "",
        image: bytes = b"",
        like_input: str = "",
        min_score: float = 0.0,
        max_results: int = 100,
        only_unlabeled: bool = False,
        dry_run: bool = False,
    ) -> ingestion_pb2.BulkAnnotateResponse:
        """Label (add), un-label (remove) or relabel (both) a hand-picked list or every result of a
        search by text / image / input above ``min_score``, in one call."""
        sel = ingestion_pb2.BulkSelection(
            input_ids=list(input_ids),
            search_text=text,
            search_image=image,
            search_input_id=like_input,
            min_score=min_score,
            max_results=max_results,
            filter=common_pb2.InputFilter(labeled=common_pb2.LABELED_FILTER_UNLABELED if only_unlabeled else common_pb2.LABELED_FILTER_UNSPECIFIED),
        )
        return self.ingestion.BulkAnnotate(
            ingestion_pb2.BulkAnnotateRequest(app_id=app_id, selection=sel, add_concepts=list(add), remove_concepts=list(remove), dry_run=dry_run),
            timeout=self._deadline("BulkAnnotate"),
        )

    @wrap_errors
    def annotate(
        self,
        app_id: str,
        labels: dict[str, Iterable[str]] | None = None,
        *,
        regions: dict[str, Iterable[Any]] | None = None,
        replace_regions: bool = False,
        remove: dict[str, Iterable[str]] | None = None,
    ) -> list[common_pb2.Input]:
        """Add concepts per input ({input_id: [concept, ...]}) and/or box labels
        ({input_id: [region, ...]}, forms as in :func:`region_protos`; their concepts are added
        too), all-or-nothing. ``replace_regions`` drops the inputs' previous regions first;
        ``remove`` ({input_id: [concept, ...]}) takes concepts off."""
        labels, regions, remove = labels or {}, regions or {}, remove or {}
        ids = list(dict.fromkeys([*labels, *regions, *remove]))
        resp = self.ingestion.PostAnnotations(
            ingestion_pb2.PostAnnotationsRequest(
                app_id=app_id,
                annotations=[
                    ingestion_pb2.Annotation(
                        input_id=i,
                        add_concepts=list(labels.get(i, ())),
                        remove_concepts=list(remove.get(i, ())),
                        add_regions=region_protos(regions.get(i, ())),
                        clear_regions=replace_regions and i in regions,
                    )
                    for i in ids
                ],
            ),
            timeout=self._deadline("PostAnnotations"),
        )
        return list(resp.inputs)

    # -- re-embedding ----------------------------------------------------------------
    #: Listed ids per ReembedInputs call (the service's maximum).
    REEMBED_IDS_PER_CALL = 1000

    @wrap_errors
    def reembed(
        self,
        app_id: str,
        ids: Iterable[str] | None = None,
        *,
        only_rotated: bool = False,
        all_inputs: bool = False,
        page_size: int = 0,
        on_progress: Callable[[ReembedReport], None] | None = None,
    ) -> ReembedReport:
        """Embed inputs again and re-index them (ReembedInputs): the listed ``ids``, or every
        input whose stored photo has an EXIF orientation other than 1 (``only_rotated``: older
        versions embedded those sideways), or ``all_inputs``. Returns once every one is queued
        (committed for announcement); the embedding and indexing follow in the background, and
        searches answer from the old vectors until each is replaced. Safe to run again: the index
        upserts by input. ``on_progress`` gets the running report after each page."""
        if ids is not None and not isinstance(ids, (list, tuple)):
            ids = list(ids)
        report = ReembedReport()
        start = time.perf_counter()

        def call(req: ingestion_pb2.ReembedInputsRequest) -> ingestion_pb2.ReembedInputsResponse:
            resp = self.ingestion.ReembedInputs(req, timeout=self._deadline("ReembedInputs"))
            report.queued_ids += resp.queued_input_ids
            report.scanned += resp.scanned
            report.unreadable_ids += resp.unreadable_input_ids
            report.seconds = time.perf_counter() - start
            return resp

        if ids:  # listed: in calls of at most the service's maximum
            listed = list(dict.fromkeys(ids))
            report.total = len(listed)
            for begin in range(0, len(listed), self.REEMBED_IDS_PER_CALL):
                part = listed[begin : begin + self.REEMBED_IDS_PER_CALL]
                call(ingestion_pb2.ReembedInputsRequest(app_id=app_id, input_ids=part, only_rotated=only_rotated, all_inputs=all_inputs))
                if on_progress:
                    on_progress(report)
            return report

        def scan(token: str) -> ingestion_pb2.ReembedInputsResponse:
            return call(
                ingestion_pb2.ReembedInputsRequest(app_id=app_id, only_rotated=only_rotated, all_inputs=all_inputs, page_size=page_size, page_token=token)
            )

        for resp in pages(scan):
            report.total = int(resp.total_size)
            if on_progress:
                on_progress(report)
        return report

    @wrap_errors
    def indexing_backlog(self, app_id: str) -> ingestion_pb2.IndexingBacklog:
        """The app's inputs announced for embedding and not yet confirmed searchable."""
        return self.ingestion.GetIndexingBacklog(ingestion_pb2.GetIndexingBacklogRequest(app_id=app_id), timeout=self._deadline("GetIndexingBacklog"))

    def wait_reindexed(self, app_id: str, timeout: float = 3600.0, on_progress: Callable[[int], None] | None = None) -> float:
        """Wait until every input announced so far (what :meth:`reembed` queued included) is
        embedded and indexed; ``on_progress`` gets the inputs still in flight. Returns the
        seconds waited."""
        start = time.perf_counter()
        while True:
            backlog = self.indexing_backlog(app_id)
            left = int(backlog.unrelayed + backlog.awaiting_index)
            if on_progress:
                on_progress(left)
            if not left:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"{left} input(s) of {app_id} still not indexed after {timeout:.0f}s")
            time.sleep(0.25)

    # -- embedding model -------------------------------------------------------------
    @wrap_errors
    def set_embedding_model(self, app_id: str, model_id: str = "", version: str = "") -> ingestion_pb2.SetEmbeddingModelResponse:
        """Switch the app's image-embedding model to ``version`` (the latest when empty) of its
        own trained ``visual_embedder`` model ``model_id``; no model switches back to the base
        backbone. Inputs are re-embedded and re-indexed in the background; searches keep using
        the old index until the new one holds every input (see :meth:`wait_embedding_model`)."""
        ref = model_id + (f"@{version}" if model_id and version else "")
        return self.ingestion.SetEmbeddingModel(
            ingestion_pb2.SetEmbeddingModelRequest(app_id=app_id, embedding_model=ref),
            timeout=max(self.timeout_s, deadline_for("SetEmbeddingModel")),
        )
