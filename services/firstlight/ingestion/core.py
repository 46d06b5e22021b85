"""Ingestion domain logic: validation, storage and event emission. No grpc or kafka here:
events are written to the store's outbox and a relay publishes them."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from firstlight import validation
from firstlight.blobstore import BlobStore
from firstlight.config import ImageLimits
from firstlight.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from firstlight.images import DecodeBudget, ImageInfo, check_image, decode_memory, image_header
from firstlight.ingestion.store import InputRow, MetadataStore, OutboxEvent, utcnow
from firstlight.messaging import topics
from firstlight.v1 import common_pb2, events_pb2

PRODUCER = "ingestion"
SPLITS = {0, 1, 2, 3}


@dataclass
class NewInput:
    """An input as a client described it (already converted from proto)."""

    image_bytes: bytes
    id: str = ""
    concepts: Sequence[str] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    split: int = 0
    # Labeled objects: anything with ``concept`` and ``box`` (common.Region), validated here.
    regions: Sequence = ()


def region_proto(g: tuple[str, float, float, float, float]) -> common_pb2.Region:
    """A stored labeled object as a common.Region (score 0: it is a label, not a detection)."""
    return common_pb2.Region(concept=g[0], box=common_pb2.BoundingBox(x0=g[1], y0=g[2], x1=g[3], y1=g[4]))


def _header(key: str | None = None) -> events_pb2.EventHeader:
    header = events_pb2.EventHeader(idempotency_key=key or uuid.uuid4().hex, producer=PRODUCER)
    header.event_time.GetCurrentTime()
    return header


class Ingestion:
    def __init__(self, store: MetadataStore, blobs: BlobStore, limits: ImageLimits) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = limits
        # Concurrent uploads share a memory budget for checking their images (issue 14: a burst
        # of 40 MP uploads held 1.6 GB and kept 860 MB after it).
        self.decode_budget = DecodeBudget(int(getattr(limits, "decode_budget_mb", 256)) << 20)

    # -- apps -------------------------------------------------------------------------
    def create_app(self, app_id: str, name: str = "", description: str = "") -> dict:
        validation.app_id(app_id)
        if self.store.get_app(app_id):
            raise AlreadyExists(f"app {app_id!r} already exists")
        return self.store.insert_app(app_id, name or app_id, description)

    def get_app(self, app_id: str) -> dict:
        validation.app_id(app_id)
        app = self.store.get_app(app_id)
        if not app:
            raise NotFound(f"app {app_id!r} does not exist")
        return app

    # -- inputs -----------------------------------------------------------------------
    def _prepare(self, app_id: str, item: NewInput, label: str) -> tuple[InputRow, bytes]:
        input_id = validation.input_id(item.id) if item.id else uuid.uuid4().hex
        if item.split not in SPLITS:
            raise InvalidArgument(f"{label}: unknown split {item.split}")
        regions = validation.regions(item.regions, f"{label}: regions")
        # A region's concept is one of the input's concepts (concept filters and datasets see it).
        concepts = validation.concepts(list(dict.fromkeys([*item.concepts, *(g[0] for g in regions)])))
        meta = validation.metadata(dict(item.metadata))
        decoded = self._check_image(item.image_bytes, label)
        row = InputRow(
            app_id=app_id,
            id=input_id,
            blob_uri="",
            width=decoded.width,
            height=decoded.height,
            format=decoded.format,
            sha256=hashlib.sha256(item.image_bytes).hexdigest(),
            split=item.split,
            metadata=meta,
            created_at=utcnow(),
            label_revision=1 if concepts else 0,
            concepts=concepts,
            regions=regions,
        )
        return row, item.image_bytes

    def _check_image(self, data: bytes, label: str) -> ImageInfo:
        """Validate an upload's image (a full decode, of a JPEG at 1/8 scale) within the decode
        memory budget; the pixels are not kept (the embedding worker decodes the stored bytes)."""
        limits = self.limits
        header = image_header(data) if data and len(data) <= limits.max_image_bytes else None
        weight = 1 << 20
        if header is not None:
            w, h, fmt = header
            if w * h <= limits.max_image_pixels:  # over the limit: refused before decoding anyway
                weight = decode_memory(w, h, fmt)
        taken = self.decode_budget.acquire(weight, label)
        try:
            return check_image(
                data, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels, label=label,
                max_side=getattr(limits, "max_image_side", 0),
            )  # fmt: skip
        finally:
            self.decode_budget.release(taken)

    def _ingested_event(self, row: InputRow, key: str | None = None, embedding_model: str = "") -> OutboxEvent:
        event = events_pb2.InputIngested(
            embedding_model=embedding_model,
            header=_header(key),
            app_id=row.app_id,
            input_id=row.id,
            blob_uri=row.blob_uri,
            concepts=row.concepts,
            split=row.split,  # type: ignore[arg-type]
            label_revision=row.label_revision,
        )
        return OutboxEvent(
            topics.INPUTS_INGESTED, topics.event_key(row.app_id, row.id), event.SerializeToString()
        )

    def post_inputs(self, app_id: str, items: Sequence[NewInput], *, idempotency_key: str | None = None) -> list[InputRow]:
        """Validate all, then store all (all-or-nothing)."""
        model = self.get_app(app_id).get("embedding_model", "")
        if not items:
            raise InvalidArgument("no inputs in the request")
        if len(items) > self.limits.max_batch_size:
            raise ResourceExhausted(
                f"{len(items)} inputs in one request, over the limit of {self.limits.max_batch_size}; "
                "split the batch or use StreamInputs"
            )
        prepared = [self._prepare(app_id, item, f"input {n}" + (f" ({item.id})" if item.id else "")) for n, item in enumerate(items)]
        ids = [row.id for row, _ in prepared]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidArgument(f"input id {dup!r} appears twice in the request")
        taken = self.store.existing_input_ids(app_id, ids)
        if taken:
            raise AlreadyExists(f"input id(s) already exist in app {app_id!r}: {', '.join(sorted(taken)[:5])}")
        for row, data in prepared:
            row.blob_uri = self.blobs.put(app_id, row.id, data)
        rows = [row for row, _ in prepared]
        self.store.insert_inputs(rows, [self._ingested_event(r, idempotency_key, model) for r in rows])
        return rows

    def set_embedding_model(self, app_id: str, model: str) -> tuple[dict, bool, int]:
        """Switch the app's image-embedding model: one ``app.embedding_model.changed`` event
        listing every input, and every input re-announced on ``inputs.ingested`` with the new
        model, all in the transaction that changes the app. Returns (app, changed, inputs).
        Whether Triton serves ``model`` is checked by the caller (the servicer asks the
        EmbeddingService) before this runs."""
        previous = self.get_app(app_id).get("embedding_model", "")
        model = validation.embedding_model(model)

        def events(rows: list[InputRow]) -> list[OutboxEvent]:
            changed = events_pb2.EmbeddingModelChanged(
                header=_header(),
                app_id=app_id,
                embedding_model=model,
                previous_embedding_model=previous,
                input_ids=[r.id for r in rows],
            )
            out = [OutboxEvent(topics.EMBEDDING_MODEL_CHANGED, topics.event_key(app_id), changed.SerializeToString())]
            # New idempotency keys: these are new logical events (same input, another model).
            return out + [self._ingested_event(r, None, model) for r in rows]

        changed, n = self.store.set_embedding_model(app_id, model, events)
        return self.get_app(app_id), changed, n

    def reannouncements(self, pairs: Sequence[tuple[str, str]], tag: str = "") -> tuple[list[OutboxEvent], list[tuple[str, str]]]:
        """Fresh ``inputs.ingested`` events for (app, input) pairs from what the store holds now
        (current labels and the app's current embedding model), and the pairs that no longer
        exist (deleted inputs or apps). Used to announce again what a broker lost."""
        events: list[OutboxEvent] = []
        gone: list[tuple[str, str]] = []
        by_app: dict[str, list[str]] = {}
        for app_id, input_id in pairs:
            by_app.setdefault(app_id, []).append(input_id)
        for app_id, ids in by_app.items():
            app = self.store.get_app(app_id)
            found = self.store.get_inputs(app_id, ids) if app else {}
            model = (app or {}).get("embedding_model", "")
            for input_id in ids:
                row = found.get(input_id)
                if row is None:
                    gone.append((app_id, input_id))
                else:
                    events.append(self._ingested_event(row, f"{app_id}/{input_id}:again{tag}", model))
        return events, gone

    def get_input(self, app_id: str, input_id: str) -> InputRow:
        self.get_app(app_id)
        validation.input_id(input_id)
        found = self.store.get_inputs(app_id, [input_id])
        if input_id not in found:
            raise NotFound(f"input {input_id!r} does not exist in app {app_id!r}")
        return found[input_id]

    def list_inputs(
        self,
        app_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        concepts_any: Sequence[str] = (),
        split: int = 0,
        labeled: bool | None = None,
    ) -> tuple[list[InputRow], str, int]:
        self.get_app(app_id)
        size = validation.page_size(page_size, default=100, maximum=1000)
        if split not in SPLITS:
            raise InvalidArgument(f"unknown split {split}")
        rows, next_seq, total = self.store.list_inputs(
            app_id,
            after_seq=validation.decode_page_token("s", page_token, app_id),
            limit=size,
            concepts_any=[validation.concept(c) for c in concepts_any],
            split=split,
            labeled=labeled,
        )
        return rows, validation.encode_page_token("s", next_seq, app_id) if next_seq else "", total

    def delete_inputs(self, app_id: str, input_ids: Sequence[str]) -> int:
        self.get_app(app_id)
        if not input_ids:
            raise InvalidArgument("no input ids given")
        ids = list(dict.fromkeys(validation.input_id(i) for i in input_ids))
        missing = set(ids) - self.store.existing_input_ids(app_id, ids)
        if missing:
            raise NotFound(f"input(s) not found in app {app_id!r}: {', '.join(sorted(missing)[:5])}")
        event = events_pb2.InputsDeleted(header=_header(), app_id=app_id, input_ids=ids)
        uris = self.store.delete_inputs(
            app_id, ids, [OutboxEvent(topics.INPUTS_DELETED, topics.event_key(app_id), event.SerializeToString())]
        )
        for uri in uris:
            self.blobs.delete(uri)
        return len(ids)

    def annotate(self, app_id: str, changes: Sequence[tuple], labeled_by: str = "") -> list[InputRow]:
        """Each change is (input_id, add_concepts, remove_concepts, split or 0[, add_regions,
        clear_regions]); the concepts of added regions are added too. New labels record
        ``labeled_by`` (who: the caller's key) and when."""
        self.get_app(app_id)
        if not changes:
            raise InvalidArgument("no annotations given")
        clean = []
        for n, change in enumerate(changes):
            input_id, add, remove, split = change[:4]
            add_regions = change[4] if len(change) > 4 else ()
            clear_regions = bool(change[5]) if len(change) > 5 else False
            validation.input_id(input_id)
            if split not in SPLITS:
                raise InvalidArgument(f"input {input_id!r}: unknown split {split}")
            regions = validation.regions(add_regions, f"annotations[{n}].add_regions")
            add_c = validation.concepts(list(dict.fromkeys([*add, *(g[0] for g in regions)])))
            remove_c = validation.concepts(list(remove))
            if not add_c and not remove_c and not split and not clear_regions:
                raise InvalidArgument(f"annotation for input {input_id!r} changes nothing")
            clean.append((input_id, add_c, remove_c, split, regions, clear_regions))
        ids = [c[0] for c in clean]
        if len(set(ids)) != len(ids):
            raise InvalidArgument("an input appears in more than one annotation of the request")
        missing = set(ids) - self.store.existing_input_ids(app_id, ids)
        if missing:
            raise NotFound(f"input(s) not found in app {app_id!r}: {', '.join(sorted(missing)[:5])}")

        def events(rows: list[InputRow]) -> list[OutboxEvent]:
            out = []
            for r in rows:
                ev = events_pb2.AnnotationsChanged(
                    header=_header(),
                    app_id=r.app_id,
                    input_id=r.id,
                    concepts=r.concepts,
                    split=r.split,  # type: ignore[arg-type]
                    label_revision=r.label_revision,
                    regions=[region_proto(g) for g in r.regions],
                )
                out.append(OutboxEvent(topics.ANNOTATIONS_CHANGED, topics.event_key(r.app_id, r.id), ev.SerializeToString()))
            return out

        return self.store.apply_annotations(app_id, clean, events, labeled_by=labeled_by)

    def list_concepts(self, app_id: str) -> list[tuple[str, int]]:
        self.get_app(app_id)
        return self.store.list_concepts(app_id)

    # -- events from outside ----------------------------------------------------------
    def submit(self, event: events_pb2.InputSubmitted) -> InputRow | None:
        """Handle an ``inputs.submit`` event. The input id defaults to one derived from the
        idempotency key, so a redelivered submission is recognised and ignored (returns None)."""
        spec = event.input
        key = event.header.idempotency_key
        if not spec.id and not key:
            raise InvalidArgument("submission has neither an input id nor an idempotency key")
        input_id = spec.id or "sub-" + hashlib.sha256(key.encode()).hexdigest()[:32]
        validation.app_id(event.app_id)
        existing = self.store.get_inputs(event.app_id, [input_id]).get(input_id)
        if existing is not None:
            if existing.sha256 == hashlib.sha256(spec.image_bytes).hexdigest():
                return None  # a redelivery (or a resend) of what is stored: nothing to do
            # Same id, other bytes: not a redelivery. Dead-lettered, never dropped in silence.
            raise AlreadyExists(f"input id {input_id!r} already exists in app {event.app_id!r} with other image bytes")
        item = NewInput(
            image_bytes=spec.image_bytes,
            id=input_id,
            concepts=list(spec.concepts),
            metadata=dict(spec.metadata),
            split=int(spec.split),
            regions=list(spec.regions),
        )
        return self.post_inputs(event.app_id, [item], idempotency_key=key or None)[0]
