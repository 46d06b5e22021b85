"""The training service's peers (ingestion, search, embedding, the blob store) over gRPC: the
core's :class:`~firstlight.training.ports.Peers`. Events go through :mod:`firstlight.training.events`."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np
from PIL import Image

from firstlight.blobstore import BlobStore
from firstlight.clients.errors import from_rpc_error
from firstlight.clients.policy import INTERNAL_POLICY
from firstlight.domain import validation
from firstlight.errors import FailedPrecondition, Unavailable
from firstlight.media.decode import draft_reduction, to_rgb, upright
from firstlight.media.formats import open_image
from firstlight.runtime.channels import internal_channel
from firstlight.runtime.convert import labeled_proto
from firstlight.runtime.retry import CHANNEL_OPTIONS
from firstlight.training.records import Box
from firstlight.v1 import (
    common_pb2,
    curation_pb2,
    curation_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

TIMEOUT_S = 60.0


def _call(method: Callable[..., Any], request: Any) -> Any:
    # Every call here is a read, an embedding, or PostAnnotations setting absolute splits:
    # repeating any of them changes nothing, so UNAVAILABLE (a peer restarting) is retried.
    try:
        return INTERNAL_POLICY.call(lambda: method(request, timeout=TIMEOUT_S))
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None  # the peer's status as the domain error (one map)


class GrpcPlatform:
    def __init__(self, ingestion_addr: str, search_addr: str, embedding_addr: str = "", blobs: BlobStore | None = None) -> None:
        opts = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 64 << 20), *CHANNEL_OPTIONS]
        self._channels = [internal_channel(a, options=opts) for a in (ingestion_addr, search_addr)]
        self.ingestion = ingestion_pb2_grpc.IngestionServiceStub(self._channels[0])
        self.search = search_pb2_grpc.SearchServiceStub(self._channels[1])
        self.embedding = None
        if embedding_addr:
            self._channels.append(internal_channel(embedding_addr, options=opts))
            self.embedding = embedding_pb2_grpc.EmbeddingServiceStub(self._channels[-1])
        self.blobs = blobs

    def flipped_vectors(self, app_id: str, input_ids: Sequence[str], model: str = "") -> dict[str, np.ndarray]:
        """Embeddings of horizontally mirrored images (the ``augment_flip`` option): read the
        originals from the blob store, mirror, embed through the EmbeddingService with
        ``model`` (the model the originals' vectors come from; empty: the backbone)."""
        if self.embedding is None or self.blobs is None:
            raise FailedPrecondition("augment_flip needs FIRSTLIGHT_EMBEDDING_ADDR and FIRSTLIGHT_BLOB_URL on the training service")
        uris = {}
        for input_id in input_ids:
            uris[input_id] = _call(self.ingestion.GetInput, ingestion_pb2.GetInputRequest(app_id=app_id, input_id=input_id)).blob_uri
        out: dict[str, np.ndarray] = {}
        ids = list(input_ids)
        for start in range(0, len(ids), 32):
            chunk = ids[start : start + 32]
            images = []
            for input_id in chunk:
                with open_image(self.blobs.get(uris[input_id], app_id=app_id)) as img:
                    buf = io.BytesIO()
                    # upright first: a PNG carries no EXIF tag, so a sideways phone photo would stay sideways
                    to_rgb(upright(img)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buf, format="PNG")
                images.append(buf.getvalue())
            request = embedding_pb2.EmbedImagesRequest(images=images, app_id=app_id, model=validation.public_embedding_model(app_id, model))
            resp = _call(self.embedding.EmbedImages, request)
            out.update({i: np.asarray(e.vector, dtype=np.float32) for i, e in zip(chunk, resp.embeddings)})
        return out

    def images(self, app_id: str, input_ids: Sequence[str], short_side: int = 0) -> dict[str, np.ndarray]:
        """Decoded RGB uint8 pixels of inputs (deep templates train on pixels): the blob reference
        from ingestion's GetInput, the bytes from the blob store (as ``flipped_vectors`` does).
        With ``short_side``, larger images are shrunk (aspect kept) as they arrive, so a dataset
        of photos does not sit in memory at full resolution."""
        if self.blobs is None:
            raise FailedPrecondition("deep templates need FIRSTLIGHT_BLOB_URL on the training service")
        out: dict[str, np.ndarray] = {}
        for input_id in input_ids:
            uri = _call(self.ingestion.GetInput, ingestion_pb2.GetInputRequest(app_id=app_id, input_id=input_id)).blob_uri
            with open_image(self.blobs.get(uri)) as img:
                if short_side:
                    draft_reduction(img, short_side)  # a large JPEG decoded at the scale kept
                rgb = to_rgb(upright(img))  # as inference sees it (EXIF orientation, sRGB)
                w, h = rgb.size
                if short_side and min(w, h) > short_side:
                    scale = short_side / min(w, h)
                    rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
                out[input_id] = np.asarray(rgb, dtype=np.uint8)
        return out

    def regions(self, app_id: str, input_ids: Sequence[str]) -> dict[str, list[tuple[str, float, float, float, float]]]:
        """Box labels of inputs as (concept, x0, y0, x1, y1), normalised (visual_detector's
        data), read live from ingestion's GetInput like the pixels."""
        out: dict[str, list[tuple[str, float, float, float, float]]] = {}
        for input_id in input_ids:
            got = _call(self.ingestion.GetInput, ingestion_pb2.GetInputRequest(app_id=app_id, input_id=input_id))
            out[input_id] = [(r.concept, r.box.x0, r.box.y0, r.box.x1, r.box.y1) for r in got.regions]
        return out

    def labeled_inputs(self, app_id: str, concepts: Sequence[str]) -> list[tuple[str, list[str], list[Box]]]:
        """(id, concepts, box labels) of the app's labeled inputs with any of ``concepts`` (all
        labeled inputs when empty): what a dataset version freezes."""
        out, token = [], ""
        while True:
            resp = _call(
                self.ingestion.ListInputs,
                ingestion_pb2.ListInputsRequest(
                    app_id=app_id,
                    page_size=1000,
                    page_token=token,
                    filter=common_pb2.InputFilter(concepts=list(concepts), labeled=common_pb2.LABELED_FILTER_LABELED),
                ),
            )
            out += [(i.id, list(i.concepts), [(r.concept, r.box.x0, r.box.y0, r.box.x1, r.box.y1) for r in i.regions]) for i in resp.inputs]
            token = resp.next_page_token
            if not token:
                return out

    def existing(self, app_id: str, input_ids: Sequence[str]) -> set[str]:
        """Those of ``input_ids`` that are still inputs of the app (not deleted)."""
        out: set[str] = set()
        ids = list(input_ids)
        for start in range(0, len(ids), 1000):
            req = ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=1000, input_ids=ids[start : start + 1000])
            out.update(i.id for i in _call(self.ingestion.ListInputs, req).inputs)
        return out

    def inputs(self, app_id: str, *, labeled: bool | None, split: int = 0) -> list[tuple[str, list[str], int]]:
        """(id, concepts, split) of the app's inputs, oldest first (a dataset that keeps the inputs' own splits)."""
        flt = common_pb2.InputFilter(
            labeled=labeled_proto(labeled),
            split=common_pb2.Split.ValueType(split),
        )
        out, token = [], ""
        while True:
            resp = _call(self.ingestion.ListInputs, ingestion_pb2.ListInputsRequest(app_id=app_id, page_size=1000, page_token=token, filter=flt))
            out += [(i.id, list(i.concepts), int(i.split)) for i in resp.inputs]
            token = resp.next_page_token
            if not token:
                return out

    def write_splits(self, app_id: str, splits_by_input: dict[str, int]) -> None:
        items = list(splits_by_input.items())
        for start in range(0, len(items), 500):
            _call(
                self.ingestion.PostAnnotations,
                ingestion_pb2.PostAnnotationsRequest(
                    app_id=app_id,
                    annotations=[ingestion_pb2.Annotation(input_id=i, split=common_pb2.Split.ValueType(s)) for i, s in items[start : start + 500]],
                ),
            )

    def vectors_of(self, app_id: str, input_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], str]:
        """(vectors by input id, the embedding model they come from, as the index names it)."""
        out: dict[str, np.ndarray] = {}
        models = set()
        ids = list(input_ids)
        for start in range(0, len(ids), 5000):
            resp = _call(self.search.GetVectors, search_pb2.GetVectorsRequest(app_id=app_id, input_ids=ids[start : start + 5000]))
            out.update({v.input_id: np.asarray(v.vector, dtype=np.float32) for v in resp.vectors})
            # Search shows the app's model id ("emb@1"); training records the internal reference.
            models.add(validation.app_embedding_model(app_id, resp.model))
        if len(models) > 1:  # the app's embedding-model switch flipped between two pages
            raise Unavailable("the app's embedding model changed while its vectors were read; try again")
        return out, models.pop() if models else ""

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


class GrpcHealthChecks:
    """The curation service's RunHealthCheck on a frozen dataset version (the training core's
    :class:`~firstlight.training.ports.HealthChecks`). Without the pixel checks: those read and
    decode every image, too slow for CreateDataset's answer (`firstlight check --dataset` runs
    them). Not retried: a check that cannot run is recorded as skipped, the freeze goes on."""

    def __init__(self, curation_addr: str, timeout_s: float = 120.0) -> None:
        self._channel = internal_channel(curation_addr, options=CHANNEL_OPTIONS)
        self.curation = curation_pb2_grpc.CurationServiceStub(self._channel)
        self.timeout_s = timeout_s  # under CreateDataset's own 300 s deadline

    def dataset_health(self, app_id: str, dataset_id: str, version: str) -> dict[str, Any]:
        req = curation_pb2.HealthCheckRequest(app_id=app_id, dataset_id=dataset_id, dataset_version=version, images=False, max_examples=5)
        try:
            r = self.curation.RunHealthCheck(req, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return {"status": r.status, "checks": [{"name": c.name, "status": c.status, "message": c.message, "count": c.count} for c in r.checks]}

    def duplicate_groups(self, app_id: str, input_ids: Sequence[str]) -> list[list[str]]:
        """FindDuplicateGroups with the pixels (stored at upload: cheap), so re-encodes, flips
        and crops the embedding misses are kept together too. A read: retried on UNAVAILABLE."""
        req = curation_pb2.FindDuplicateGroupsRequest(app_id=app_id, input_ids=list(input_ids), images=True)
        try:
            r = INTERNAL_POLICY.call(lambda: self.curation.FindDuplicateGroups(req, timeout=self.timeout_s))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return [list(g.input_ids) for g in r.groups]

    def close(self) -> None:
        self._channel.close()
