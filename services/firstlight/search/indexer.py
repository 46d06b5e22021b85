"""Event handlers that keep the vector index in step with the event stream.

* ``embeddings.computed`` → upsert one point per input (id = uuid5(app/input): a redelivered
  event overwrites the same point, so indexing is exactly-once in effect) → ``inputs.indexed``.
* ``annotations.changed`` → update the point's labels if the event is newer than what the point
  has. If the point does not exist yet (labels changed before the embedding arrived), the labels
  are parked in a small ``pending_labels`` collection and applied when the embedding lands.
* ``inputs.deleted`` → delete the points.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from firstlight.messaging import topics, wire
from firstlight.messaging.bus import EventProducer, ParsedRecord, PoisonMessage, RetryableError, new_header
from firstlight.models.backbone import EMBEDDING_DIM
from firstlight.search.vector_store import Point, VectorStore, VectorStoreUnavailable, point_id
from firstlight.v1 import events_pb2

log = logging.getLogger(__name__)

COLLECTION = "inputs"
PENDING = "pending_labels"


def payload_for(app_id: str, input_id: str, concepts: Sequence[str], split: int, revision: int, model: str) -> dict:
    return {
        "app_id": app_id,
        "input_id": input_id,
        "concepts": list(concepts),
        "labeled": bool(concepts),
        "split": int(split),
        "label_revision": int(revision),
        "model": model,
    }


_VECTOR_FIELD = events_pb2.EmbeddingComputed.DESCRIPTOR.fields_by_name["vector"].number


def _vector_of(record: ParsedRecord[events_pb2.EmbeddingComputed]) -> np.ndarray:
    """The event's vector as float32, read from the raw bytes when we have them (a numpy view,
    instead of 1,280 Python floats from the parsed field: the indexer's largest cost)."""
    if record.value:
        try:
            found = wire.packed_floats(record.value, _VECTOR_FIELD)
        except ValueError:  # cannot happen for bytes the parser accepted; the parsed field decides
            found = None
        if found is not None:
            return found
    return np.asarray(record.message.vector, dtype=np.float32)


class Indexer:
    def __init__(self, store: VectorStore, producer: EventProducer | None, dim: int = EMBEDDING_DIM) -> None:
        self.store = store
        self.producer = producer
        self.dim = dim
        store.ensure_collection(COLLECTION, dim)
        store.ensure_collection(PENDING, 1)

    def on_embeddings(self, records: list[ParsedRecord[events_pb2.EmbeddingComputed]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = [None] * len(records)
        points: dict[str, Point] = {}  # later events of the same input in a batch win
        indexed: list[events_pb2.EmbeddingComputed] = []
        try:
            pids = [point_id(r.message.app_id, r.message.input_id) if r.message.app_id else "" for r in records]
            pending = {r.id: r.payload for r in self.store.retrieve(PENDING, [p for p in pids if p], with_vectors=False)}
            for n, record in enumerate(records):
                ev = record.message
                if not ev.app_id or not ev.input_id:
                    outcomes[n] = PoisonMessage("EmbeddingComputed lacks app_id or input_id")
                    continue
                vector = _vector_of(record)
                if len(vector) != self.dim:
                    outcomes[n] = PoisonMessage(f"vector has {len(vector)} dimensions, the index has {self.dim}")
                    continue
                pid = pids[n]
                concepts, split, revision = list(ev.concepts), ev.split, ev.label_revision
                parked = pending.get(pid)
                if parked and parked["label_revision"] > revision:
                    concepts, split, revision = parked["concepts"], parked["split"], parked["label_revision"]
                points[pid] = Point(pid, vector, payload_for(ev.app_id, ev.input_id, concepts, split, revision, ev.model))
                indexed.append(ev)
            if points:
                self.store.upsert(COLLECTION, list(points.values()))
            if pending:
                self.store.delete(PENDING, list(pending))
        except VectorStoreUnavailable as exc:
            raise RetryableError(f"vector store unavailable: {exc}") from exc
        self._announce(indexed)
        return outcomes

    def _announce(self, indexed: list[events_pb2.EmbeddingComputed]) -> None:
        if not self.producer or not indexed:
            return
        futures = [
            self.producer.send(
                topics.INPUTS_INDEXED,
                topics.event_key(ev.app_id, ev.input_id),
                events_pb2.InputIndexed(
                    header=new_header("search", f"{ev.header.idempotency_key}:indexed"),
                    app_id=ev.app_id,
                    input_id=ev.input_id,
                    model=ev.model,
                ),
            )
            for ev in indexed
        ]
        self.producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)

    def on_annotations(self, records: list[ParsedRecord[events_pb2.AnnotationsChanged]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = [None] * len(records)
        try:
            for n, record in enumerate(records):
                ev = record.message
                if not ev.app_id or not ev.input_id:
                    outcomes[n] = PoisonMessage("AnnotationsChanged lacks app_id or input_id")
                    continue
                pid = point_id(ev.app_id, ev.input_id)
                found = self.store.retrieve(COLLECTION, [pid], with_vectors=False)
                labels = {
                    "concepts": list(ev.concepts),
                    "labeled": bool(ev.concepts),
                    "split": int(ev.split),
                    "label_revision": int(ev.label_revision),
                }
                if found:
                    if found[0].payload.get("label_revision", 0) < ev.label_revision:
                        self.store.set_payload(COLLECTION, pid, labels)
                else:
                    parked = self.store.retrieve(PENDING, [pid], with_vectors=False)
                    if not parked or parked[0].payload["label_revision"] < ev.label_revision:
                        self.store.upsert(PENDING, [Point(pid, [1.0], {"app_id": ev.app_id, **labels})])
        except VectorStoreUnavailable as exc:
            raise RetryableError(f"vector store unavailable: {exc}") from exc
        return outcomes

    def on_deleted(self, records: list[ParsedRecord[events_pb2.InputsDeleted]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = [None] * len(records)
        try:
            for n, record in enumerate(records):
                ev = record.message
                if not ev.app_id:
                    outcomes[n] = PoisonMessage("InputsDeleted lacks app_id")
                    continue
                ids = [point_id(ev.app_id, i) for i in ev.input_ids]
                self.store.delete(COLLECTION, ids)
                self.store.delete(PENDING, ids)
        except VectorStoreUnavailable as exc:
            raise RetryableError(f"vector store unavailable: {exc}") from exc
        return outcomes
