"""Ingestion domain logic: validation, storage, the rules of bulk labeling and of switching an
app's embedding model, and which events each write emits. No grpc, kafka or generated code
here: it talks to the outside through the Protocols of ``ports.py`` (the store commits the
domain events with the data, see there; ``events.py`` encodes them; the peers are
``firstlight.clients`` behind ``peers.py``)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from firstlight.config import ImageLimits
from firstlight.domain import validation
from firstlight.domain.generations import generation_of
from firstlight.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from firstlight.images import DecodeBudget, ImageInfo, decode_memory, image_header
from firstlight.ingestion.ports import (
    AnnotationsChanged,
    BlobStorePort,
    EmbeddingModelChanged,
    EmbeddingPeer,
    Event,
    InputIngested,
    InputRow,
    InputsDeleted,
    MetadataStorePort,
    QualityRange,
    SearchPeer,
    Selection,
    Submission,
    utcnow,
)
from firstlight.media import pixel_signature
from firstlight.media.decode import REDUCED_FORMATS, Photo, decode_photo, jpeg_reduction
from firstlight.media.image_metrics import METRICS, histogram, image_quality
from firstlight.media.orientation import HEADER_BYTES, header_orientation, is_rotated, needs_whole_blob
from firstlight.media.preview import PREVIEW_SIDE, encode_preview, preview_name, preview_uri_of, wants_preview
from firstlight.media.thumbnail import encode_thumbnail, thumbnail_name, thumbnail_uri_of

SPLITS = {0, 1, 2, 3}
#: A bulk selection given as a search: this many hits unless it says, and at most MAX.
DEFAULT_SELECTION = 100
MAX_SELECTION = 10_000
SEARCH_PAGE = 1000
#: ReembedInputs: inputs scanned per call (default, most), and listed ids per call at most.
REEMBED_PAGE = 500
MAX_REEMBED_PAGE = 1000


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


@dataclass(frozen=True)
class ReembedPage:
    """One ReembedInputs call's work: inputs looked at, those re-announced, where to go on."""

    scanned: int
    queued_ids: list[str]
    next_page_token: str  # "" when the selection is done
    total: int  # inputs the selection covers: the listed ids, or every input of the app
    unreadable_ids: list[str] = field(default_factory=list)  # rotated scan: header unreadable or blob gone


@dataclass(frozen=True)
class BulkResult:
    input_ids: list[str]
    scores: list[float]  # one per id for a search selection; empty for listed ids


def measure_quality(photo: Photo) -> tuple[dict[str, float], bytes]:
    """Quality metrics of a decoded upload, with the source's upright resolution (a JPEG's
    decode here is DCT-reduced; EXIF orientations 5-8 swap the sides), and the packed pixel
    signatures curation's duplicate checks compare (so its health check need not decode)."""
    size = (photo.height, photo.width) if photo.orientation >= 5 else (photo.width, photo.height)
    rgb = np.asarray(photo.image)
    return image_quality(rgb, size).to_dict(), pixel_signature.pack(rgb)


def checked_quality_range(q: QualityRange) -> QualityRange:
    """A listing's quality filter: a known metric (fullmatch), finite bounds, min <= max."""
    if not re.fullmatch(r"[a-z_]{1,32}", q.metric) or q.metric not in METRICS:
        raise InvalidArgument(f"unknown quality metric {q.metric[:64]!r}; one of: {', '.join(METRICS)}")
    for bound in (q.min, q.max):
        if bound is not None and not math.isfinite(bound):
            raise InvalidArgument(f"quality bounds must be finite numbers, got {bound}")
    if q.min is None and q.max is None:
        raise InvalidArgument(f"quality filter on {q.metric!r} has neither a minimum nor a maximum")
    if q.min is not None and q.max is not None and q.min > q.max:
        raise InvalidArgument(f"quality filter on {q.metric!r}: minimum {q.min} is above maximum {q.max}")
    return q


class Ingestion:
    def __init__(
        self,
        store: MetadataStorePort,
        blobs: BlobStorePort,
        limits: ImageLimits,
        *,
        search: SearchPeer | None = None,
        embedding: EmbeddingPeer | None = None,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = limits
        self.search = search
        self.embedding = embedding
        #: Called after a write committed events (wakes the outbox relay: no wait for its poll).
        self.on_events = on_events or (lambda: None)
        # Concurrent uploads share a memory budget for checking their images (issue 14: a burst
        # of 40 MP uploads held 1.6 GB and kept 860 MB after it).
        self.decode_budget = DecodeBudget(int(getattr(limits, "decode_budget_mb", 256)) << 20)
        self._decode_pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="decode")

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
    def _prepare(self, app_id: str, item: NewInput, label: str) -> tuple[InputRow, bytes, bytes | None, bytes]:
        input_id = validation.input_id(item.id) if item.id else uuid.uuid4().hex
        if item.split not in SPLITS:
            raise InvalidArgument(f"{label}: unknown split {item.split}")
        regions = validation.regions(item.regions, f"{label}: regions")
        # A region's concept is one of the input's concepts (concept filters and datasets see it).
        concepts = validation.concepts(list(dict.fromkeys([*item.concepts, *(g[0] for g in regions)])))
        meta = validation.metadata(dict(item.metadata))
        decoded, preview, thumb, (quality, signature) = self._check_image(item.image_bytes, label)
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
            quality=quality,
            pixel_signature=signature,
        )
        return row, item.image_bytes, preview, thumb

    def _check_image(self, data: bytes, label: str) -> tuple[ImageInfo, bytes | None, bytes, tuple[dict[str, float], bytes]]:
        """Validate an upload's image with one decode (of a JPEG at the reduced scale the backbone
        and the thumbnail need) within the decode memory budget, and cut the Portal's thumbnail
        from those pixels. A large JPEG's decoded pixels also come back as a preview for the
        embedding worker (decode once, firstlight.media.preview), and the image-quality metrics
        are measured on the same pixels (stored with the input for listing filters and curation)."""
        limits = self.limits
        px = int(getattr(limits, "thumbnail_px", 192))
        side = max(PREVIEW_SIDE, px)  # a reduced decode must still cover the thumbnail
        header = image_header(data) if data and len(data) <= limits.max_image_bytes else None
        weight = 1 << 20
        # A JPEG's draft or a HEIF/AVIF's box reduction: the embedding worker reads this decode
        # back (a preview) instead of decoding a large original again.
        reduced = header is not None and header[2] in REDUCED_FORMATS and min(header[0], header[1]) >= 2 * side
        if header is not None:
            w, h, fmt = header
            if w * h <= limits.max_image_pixels:  # over the limit: refused before decoding anyway
                r = jpeg_reduction(w, h, side) if fmt in ("JPEG", "MPO") else 1
                # the decoded pixels (<= 4 bytes each), their upright RGB copy, a .npy preview
                weight = max(decode_memory(w, h, fmt), -(-w // r) * -(-h // r) * 10 + (1 << 20))
        taken = self.decode_budget.acquire(weight, label)
        try:
            max_side: int = getattr(limits, "max_image_side", 0)
            photo = decode_photo(data, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels, min_side=side, label=label, max_side=max_side)
            info = ImageInfo(photo.width, photo.height, photo.format)
            preview = encode_preview(photo) if reduced and wants_preview(photo) else None
            return info, preview, encode_thumbnail(photo.image, px), measure_quality(photo)
        finally:
            self.decode_budget.release(taken)

    def post_inputs(self, app_id: str, items: Sequence[NewInput], *, idempotency_key: str | None = None) -> list[InputRow]:
        """Validate all, then store all (all-or-nothing)."""
        model = self.get_app(app_id).get("embedding_model", "")
        if not items:
            raise InvalidArgument("no inputs in the request")
        if len(items) > self.limits.max_batch_size:
            raise ResourceExhausted(f"{len(items)} inputs in one request, over the limit of {self.limits.max_batch_size}; split the batch or use StreamInputs")
        labels = [f"input {n}" + (f" ({item.id})" if item.id else "") for n, item in enumerate(items)]
        # Decoding dominates on photos and Pillow releases the GIL while it decodes: a request's
        # images are checked side by side, one per core; map() re-raises the first failing
        # item's error in order, as a sequential loop would.
        run = self._decode_pool.map if len(items) > 1 else map
        prepared = list(run(lambda pair: self._prepare(app_id, *pair), zip(items, labels)))
        ids = [p[0].id for p in prepared]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InvalidArgument(f"input id {dup!r} appears twice in the request")
        taken = self.store.existing_input_ids(app_id, ids)
        if taken:
            raise AlreadyExists(f"input id(s) already exist in app {app_id!r}: {', '.join(sorted(taken)[:5])}")
        previews: dict[str, str] = {}
        for row, data, preview, thumb in prepared:
            row.blob_uri = self.blobs.put(app_id, row.id, data)
            # Derived from the original, so not fsynced: a reader that finds one empty after a
            # power loss rebuilds it (the gateway's thumbnail, the embedding worker's preview).
            row.thumbnail_uri = self.blobs.put(app_id, thumbnail_name(row.id), thumb, durable=False)
            if preview is not None:
                previews[row.id] = self.blobs.put(app_id, preview_name(row.id), preview, durable=False)
        rows = [p[0] for p in prepared]
        self.store.insert_inputs(rows, [InputIngested(r, model, idempotency_key, previews.get(r.id, "")) for r in rows])
        self.on_events()
        return rows

    def set_embedding_model(self, app_id: str, model: str) -> tuple[dict, bool, int]:
        """Switch the app's image-embedding model: one ``app.embedding_model.changed`` event
        listing every input, and every input re-announced on ``inputs.ingested`` with the new
        model, all in the transaction that changes the app. Returns (app, changed, inputs).
        Whether Triton serves ``model`` is checked by the caller (the servicer asks the
        EmbeddingService) before this runs."""
        previous = self.get_app(app_id).get("embedding_model", "")
        model = validation.embedding_model(model)

        def events(rows: list[InputRow]) -> list[Event]:
            out: list[Event] = [EmbeddingModelChanged(app_id, model, previous, tuple(r.id for r in rows))]
            # New idempotency keys: these are new logical events (same input, another model).
            return out + [InputIngested(r, model) for r in rows]

        changed, n = self.store.set_embedding_model(app_id, model, events)
        if changed:
            self.on_events()
        return self.get_app(app_id), changed, n

    async def switch_embedding_model(self, app_id: str, requested: str) -> tuple[dict, bool, int]:
        """SetEmbeddingModel: ``requested`` is one of the app's own models by model id (or the
        backbone), never a Triton name. The EmbeddingService is asked first whether it can embed
        with it (a model that cannot would leave every new input unsearchable); an unknown app
        is NOT_FOUND before anyone asks."""
        model = validation.app_embedding_model(app_id, requested)
        app = await asyncio.to_thread(self.get_app, app_id)
        if model and model != app.get("embedding_model", ""):
            if self.embedding is None:
                raise FailedPrecondition("switching embedding models needs the embedding service (FIRSTLIGHT_EMBEDDING_ADDR)")
            await self.embedding.check_model(app_id, validation.public_embedding_model(app_id, model))
        return await asyncio.to_thread(self.set_embedding_model, app_id, model)

    def reannouncements(self, pairs: Sequence[tuple[str, str]], tag: str = "") -> tuple[list[Event], list[tuple[str, str]]]:
        """Fresh ``inputs.ingested`` events for (app, input) pairs from what the store holds now
        (current labels and the app's current embedding model), and the pairs that no longer
        exist (deleted inputs or apps). Used to announce again what a broker lost."""
        events: list[Event] = []
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
                    events.append(InputIngested(row, model, f"{app_id}/{input_id}:again{tag}"))
        return events, gone

    def reembed_inputs(
        self,
        app_id: str,
        *,
        input_ids: Sequence[str] = (),
        only_rotated: bool = False,
        all_inputs: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> ReembedPage:
        """ReembedInputs: re-announce chosen inputs on ``inputs.ingested`` (fresh events from the
        store's current state, as the relay's :meth:`reannouncements`), so the embedding worker
        embeds them again and search upserts their points (same point ids: repeating is harmless).

        Selection, exactly one of: listed ids (all must exist, at most MAX_REEMBED_PAGE per call);
        ``only_rotated``: inputs whose stored image carries an EXIF orientation other than 1
        (read from the blob's header, no decode: versions before the decode change embedded them
        sideways or mirrored); ``all_inputs``. A scan does one page of the app's inputs per call
        (oldest first) and returns the next page's token: each call's events are committed to the
        outbox in one short transaction before it answers (an answered page is never lost; the
        relay watches each input until search confirms it indexed), and no call holds more than
        a page, whatever the app's size."""
        self.get_app(app_id)
        chosen = bool(input_ids) + bool(only_rotated) + bool(all_inputs)
        if chosen != 1:
            raise InvalidArgument(
                "select inputs with exactly one of input_ids, only_rotated, all_inputs"
                + (" (none given)" if not chosen else f" ({chosen} given)")
            )  # fmt: skip
        size = validation.page_size(page_size, default=REEMBED_PAGE, maximum=MAX_REEMBED_PAGE)
        # A new logical event per call (its own idempotency key): a consumer that screens each key
        # once must see the re-announcement.
        tag = f":reembed-{uuid.uuid4().hex[:16]}"
        if input_ids:
            if page_token:
                raise InvalidArgument("page_token continues an only_rotated or all_inputs scan; listed input_ids take none")
            if len(input_ids) > MAX_REEMBED_PAGE:
                raise InvalidArgument(f"{len(input_ids)} input ids in one call, over {MAX_REEMBED_PAGE}: split the list")
            ids = list(dict.fromkeys(validation.input_id(i) for i in input_ids))
            missing = set(ids) - self.store.existing_input_ids(app_id, ids)
            if missing:
                raise NotFound(f"input(s) not found in app {app_id!r}: {', '.join(sorted(missing)[:5])}")
            return ReembedPage(len(ids), self._reannounce(app_id, ids, tag), "", len(ids))
        kind = "rr" if only_rotated else "ra"  # a token continues only the scan that made it
        rows, next_seq, total = self.store.list_inputs(
            app_id, after_seq=validation.decode_page_token(kind, page_token, app_id), limit=size, concepts_any=(), split=0, labeled=None
        )
        unreadable: list[str] = []
        picked = [r.id for r in rows]
        if only_rotated:
            picked = []
            for row in rows:
                orientation = self._stored_orientation(row)
                if orientation is None:
                    unreadable.append(row.id)
                elif is_rotated(orientation):
                    picked.append(row.id)
        token = validation.encode_page_token(kind, next_seq, app_id) if next_seq else ""
        return ReembedPage(len(rows), self._reannounce(app_id, picked, tag), token, total, unreadable)

    def indexing_backlog(self, app_id: str) -> tuple[int, int]:
        """GetIndexingBacklog: (announcements of the app's inputs not yet relayed to the broker,
        inputs relayed whose indexing search has not confirmed): how a caller of ReembedInputs
        (or of an upload) sees the work in flight drain to zero."""
        self.get_app(app_id)
        return self.store.indexing_backlog(app_id)

    def _stored_orientation(self, row: InputRow) -> int | None:
        """The EXIF orientation of an input's stored original, from its header; None if the blob
        is gone or its header unreadable."""
        try:
            head = self.blobs.head(row.blob_uri, HEADER_BYTES, app_id=row.app_id)
            orientation = header_orientation(head)
            if needs_whole_blob(head, orientation):  # a header longer than the read (large ICC profiles)
                orientation = header_orientation(self.blobs.get(row.blob_uri, app_id=row.app_id))
        except NotFound:
            return None
        return orientation

    def _reannounce(self, app_id: str, ids: list[str], tag: str) -> list[str]:
        """Commit fresh ``inputs.ingested`` events for ``ids`` to the outbox; returns the ids
        announced (an input deleted meanwhile is not)."""
        if not ids:
            return []
        events, _gone = self.reannouncements([(app_id, i) for i in ids], tag)
        if not events:
            return []
        self.store.enqueue(events)
        self.on_events()
        return [e.row.id for e in events if isinstance(e, InputIngested)]

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
        input_ids: Sequence[str] = (),
        quality_range: QualityRange | None = None,
    ) -> tuple[list[InputRow], str, int]:
        self.get_app(app_id)
        if quality_range is not None:
            quality_range = checked_quality_range(quality_range)
        size = validation.page_size(page_size, default=100, maximum=1000)
        if split not in SPLITS:
            raise InvalidArgument(f"unknown split {split}")
        if len(input_ids) > size:
            raise InvalidArgument(f"{len(input_ids)} input ids for a page of {size}: ask for at most the page size")
        ids = [validation.input_id(i) for i in input_ids]
        rows, next_seq, total = self.store.list_inputs(
            app_id,
            after_seq=validation.decode_page_token("s", page_token, app_id),
            limit=size,
            concepts_any=[validation.concept(c) for c in concepts_any],
            split=split,
            labeled=labeled,
            input_ids=ids,
            quality_range=quality_range,
        )
        return rows, validation.encode_page_token("s", next_seq, app_id) if next_seq else "", total

    def quality_histogram(self, app_id: str, metric: str, bins: int = 0) -> tuple[list[float], list[int], int]:
        """(bucket edges, inputs per bucket, inputs without metrics) of one stored metric."""
        self.get_app(app_id)
        checked_quality_range(QualityRange(metric, min=0.0))  # the metric's name
        bins = bins or 20
        if not 1 <= bins <= 100:
            raise InvalidArgument(f"bins must be between 1 and 100 (got {bins})")
        values, unmeasured = self.store.quality_values(app_id, metric)
        edges, counts = histogram(values, bins)
        return edges, counts, unmeasured

    def delete_inputs(self, app_id: str, input_ids: Sequence[str]) -> int:
        self.get_app(app_id)
        if not input_ids:
            raise InvalidArgument("no input ids given")
        ids = list(dict.fromkeys(validation.input_id(i) for i in input_ids))
        rows = self.store.get_inputs(app_id, ids)
        missing = set(ids) - set(rows)
        if missing:
            raise NotFound(f"input(s) not found in app {app_id!r}: {', '.join(sorted(missing)[:5])}")
        generations = tuple(generation_of(rows[i].created_at) for i in ids)
        uris = self.store.delete_inputs(app_id, ids, [InputsDeleted(app_id, tuple(ids), generations)])
        self.on_events()
        for uri in uris:
            self.blobs.delete(uri)
            self.blobs.delete(preview_uri_of(uri))  # a large JPEG's decoded preview, if any
            self.blobs.delete(thumbnail_uri_of(uri))  # none for inputs stored before thumbnails
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

        def events(rows: list[InputRow]) -> list[Event]:
            return [AnnotationsChanged(r) for r in rows]

        rows = self.store.apply_annotations(app_id, clean, events, labeled_by=labeled_by)
        self.on_events()
        return rows

    async def bulk_annotate(
        self, app_id: str, selection: Selection, add: Sequence[str], remove: Sequence[str], *, dry_run: bool = False, labeled_by: str = ""
    ) -> BulkResult:
        """Add and/or remove concepts on the inputs of a selection: listed ids, or the hits of
        one search (by text, image or an input's vector) down to ``min_score``. ``dry_run``
        only says which inputs it would change."""
        sel = selection
        queries = sum(bool(x) for x in (sel.query.text, sel.query.image, sel.query.input_id))
        if bool(sel.input_ids) + queries != 1:
            raise InvalidArgument("select inputs with exactly one of input_ids, search_text, search_image, search_input_id")
        if not add and not remove:
            raise InvalidArgument("give concepts to add and/or remove")
        await asyncio.to_thread(self.get_app, app_id)
        scores: list[float] = []
        if sel.input_ids:
            ids = list(dict.fromkeys(sel.input_ids))
        else:
            ids, scores = await self._search_selection(app_id, sel)
        if ids and not dry_run:
            changes = [(i, list(add), list(remove), 0) for i in ids]
            await asyncio.to_thread(self.annotate, app_id, changes, labeled_by)
        return BulkResult(ids, scores)

    async def _search_selection(self, app_id: str, sel: Selection) -> tuple[list[str], list[float]]:
        """The search's hits, best first, until ``max_results`` or a score under ``min_score``."""
        limit = sel.max_results or DEFAULT_SELECTION
        if not 0 < limit <= MAX_SELECTION:
            raise InvalidArgument(f"max_results must be between 1 and {MAX_SELECTION} (got {sel.max_results})")
        if self.search is None:
            raise FailedPrecondition("bulk labeling by search needs the search service (FIRSTLIGHT_SEARCH_ADDR)")
        ids: list[str] = []
        scores: list[float] = []
        token = ""
        while len(ids) < limit:
            hits, token = await self.search.search_page(app_id, sel.query, sel.filter, min(SEARCH_PAGE, limit - len(ids)), token)
            for input_id, score in hits:
                if score < sel.min_score:
                    return ids, scores
                ids.append(input_id)
                scores.append(score)
            if not token:
                break
        return ids[:limit], scores[:limit]

    def list_concepts(self, app_id: str) -> list[tuple[str, int]]:
        self.get_app(app_id)
        return self.store.list_concepts(app_id)

    # -- events from outside ----------------------------------------------------------
    def submit(self, event: Submission) -> InputRow | None:
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
