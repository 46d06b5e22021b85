"""Consumer of ``inputs.ingested``: embeds each input and produces ``embeddings.computed``.

Offsets are committed by the BatchConsumer only after this handler returned, i.e. after the
produced events were acknowledged; a crash in between redelivers the batch and the search
service's deterministic point ids make the second upsert a no-op."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from firstlight import validation
from firstlight.blobstore import BlobStore
from firstlight.embedding.core import Embedder
from firstlight.embedding.events import EmbeddingEvents
from firstlight.embedding.ports import EmbeddingsPublisher
from firstlight.errors import FirstlightError, Unavailable
from firstlight.images import decode_image
from firstlight.messaging.bus import EventProducer, ParsedRecord, PoisonMessage, RetryableError
from firstlight.models.preprocess import to_model_input
from firstlight.triton.client import BACKBONE_MODEL
from firstlight.v1 import events_pb2

log = logging.getLogger(__name__)


class EmbeddingWorker:
    def __init__(self, embedder: Embedder, blobs: BlobStore, producer: EventProducer, events: EmbeddingsPublisher | None = None) -> None:
        self.embedder = embedder
        self.blobs = blobs
        self.producer = producer
        self.events: EmbeddingsPublisher = events or EmbeddingEvents(producer)
        # Triton calls run here while the consumer thread decodes the next images.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="embed-triton")
        self._chunk_size = 0

    def _chunk(self) -> int:
        """Images per Triton call: the backbone's max batch size (small on CPU, large on GPU)."""
        if not self._chunk_size:
            try:
                self._chunk_size = max(1, int(self.embedder.triton.max_batch_size(BACKBONE_MODEL)))
            except Exception:  # noqa: BLE001 - Triton down: one call per batch; asked again next time
                return 1 << 30
        return self._chunk_size

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def handle(self, records: list[ParsedRecord[events_pb2.InputIngested]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = [None] * len(records)
        # Inputs of apps that switched their embedding model name another Triton model: one
        # forward pass per model in the batch.
        by_model: dict[str, list[int]] = {}
        for n, record in enumerate(records):
            event = record.message
            if not event.app_id or not event.input_id or not event.blob_uri:
                outcomes[n] = PoisonMessage("InputIngested lacks app_id, input_id or blob_uri")
                continue
            if not validation.owns_embedding_model(event.app_id, event.embedding_model):
                # An event may only name its own app's model (the backbone, or fl.<app>.*).
                outcomes[n] = PoisonMessage(f"embedding model {event.embedding_model[:80]!r} is not a model of app {event.app_id!r}")
                continue
            by_model.setdefault(event.embedding_model, []).append(n)
        futures = []
        for model, members in by_model.items():
            try:
                size = self.embedder.image_size(model)
            except Unavailable as exc:
                raise RetryableError(f"Triton unavailable: {exc}") from exc
            except FirstlightError as exc:  # Triton has no such embedder: re-trying cannot help
                for n in members:
                    outcomes[n] = PoisonMessage(f"input {records[n].message.app_id}/{records[n].message.input_id}: {exc}")
                continue
            futures += self._embed(records, members, model, size, outcomes)
        self.events.flush()
        for future in futures:
            future.get(timeout=30)  # raises (→ retry, no commit) if the broker did not take it
        return outcomes

    def _embed(
        self,
        records: list[ParsedRecord[events_pb2.InputIngested]],
        members: list[int],
        model: str,
        size: int,
        outcomes: list[PoisonMessage | None],
    ) -> list:  # type: ignore[type-arg]
        """Embed ``records[members]`` with ``model`` and send their ``embeddings.computed``."""
        limits = self.embedder.limits
        pixels: list[np.ndarray] = []
        ready: list[int] = []
        pending: list[Future[np.ndarray]] = []
        chunk = self._chunk()
        for n in members:
            event = records[n].message
            try:
                data = self.blobs.get(event.blob_uri, app_id=event.app_id)
                image = decode_image(
                    data, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels, label="stored image"
                ).image
            except FirstlightError as exc:  # deleted meanwhile, or not an image: cannot succeed later
                outcomes[n] = PoisonMessage(f"input {event.app_id}/{event.input_id}: {exc}")
                continue
            pixels.append(to_model_input(image, size))
            ready.append(n)
            if len(pixels) - chunk * len(pending) == chunk:
                # A full chunk goes to Triton now: decoding the rest overlaps its forward pass.
                pending.append(self._pool.submit(self.embedder.embed_pixels, np.stack(pixels[-chunk:]), model))
        if not ready:
            return []
        done = chunk * len(pending)
        if done < len(pixels):
            pending.append(self._pool.submit(self.embedder.embed_pixels, np.stack(pixels[done:]), model))
        try:
            vectors = np.concatenate([f.result() for f in pending])
        except Unavailable as exc:
            raise RetryableError(f"Triton unavailable: {exc}") from exc
        except FirstlightError as exc:  # the model rejects these inputs: same answer next time
            for n in ready:
                outcomes[n] = PoisonMessage(f"input {records[n].message.app_id}/{records[n].message.input_id}: {exc}")
            return []
        futures = []
        name = self.embedder.model_name(model)
        for n, vector in zip(ready, vectors):
            futures.append(self.events.computed(records[n].message, name, vector))
        return futures
