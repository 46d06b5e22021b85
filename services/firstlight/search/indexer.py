"""Event handlers that keep the vector index in step with the event stream: each record becomes
a value of :mod:`firstlight.search.indexing` (where the rules live), its refusals become
dead letters, a store outage a retry, and every indexed input is confirmed on ``inputs.indexed``
(``events.py``).

* ``embeddings.computed`` → ``Index.add`` → ``inputs.indexed``;
* ``annotations.changed`` → ``Index.set_labels`` (a stale record is dead-lettered with why);
* ``inputs.deleted`` → ``Index.delete`` (one that deletes nothing newer-stamped: dead-lettered);
* ``app.embedding_model.changed`` → ``Index.change_model``.
"""

from __future__ import annotations

import logging

import numpy as np

from firstlight.messaging import wire
from firstlight.messaging.bus import EventProducer, ParsedRecord, PoisonMessage, RetryableError
from firstlight.models.backbone import EMBEDDING_DIM
from firstlight.search.events import SearchEvents
from firstlight.search.indexing import PENDING, Embedded, Index, Labels, payload_for
from firstlight.search.models import COLLECTION
from firstlight.search.vector_store import VectorStore, VectorStoreUnavailable
from firstlight.v1 import events_pb2

log = logging.getLogger(__name__)

__all__ = ["COLLECTION", "PENDING", "Indexer", "payload_for"]


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
        self.events = SearchEvents(producer) if producer is not None else None
        self.dim = dim
        self.index = Index(store, dim)
        self.models = self.index.models

    def on_embeddings(self, records: list[ParsedRecord[events_pb2.EmbeddingComputed]]) -> list[PoisonMessage | None]:
        items = [
            Embedded(
                r.message.app_id, r.message.input_id, r.message.model, _vector_of(r),
                list(r.message.concepts), r.message.split, r.message.label_revision, r.message.generation,
            ) if r.message.app_id and r.message.input_id else None
            for r in records
        ]  # fmt: skip
        try:
            refused = self.index.add(items)
        except VectorStoreUnavailable as exc:
            raise RetryableError(f"vector store unavailable: {exc}") from exc
        outcomes: list[PoisonMessage | None] = [
            PoisonMessage("EmbeddingComputed lacks app_id or input_id") if item is None else (PoisonMessage(why) if why else None)
            for item, why in zip(items, refused)
        ]
        self._announce([r.message for r, out in zip(records, outcomes) if out is None])
        return outcomes

    def _announce(self, indexed: list[events_pb2.EmbeddingComputed]) -> None:
        if self.events is not None and indexed:
            self.events.indexed(indexed)

    def on_model_changed(self, records: list[ParsedRecord[events_pb2.EmbeddingModelChanged]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = [None] * len(records)
        try:
            for n, record in enumerate(records):
                ev = record.message
                if not ev.app_id:
                    outcomes[n] = PoisonMessage("EmbeddingModelChanged lacks app_id")
                    continue
                self.index.change_model(ev.app_id, ev.embedding_model, list(ev.input_ids))
        except VectorStoreUnavailable as exc:
            raise RetryableError(f"vector store unavailable: {exc}") from exc
        return outcomes

    def on_annotations(self, records: list[ParsedRecord[events_pb2.AnnotationsChanged]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = [None] * len(records)
        try:
            for n, record in enumerate(records):
                ev = record.message
                if not ev.app_id or not ev.input_id:
                    outcomes[n] = PoisonMessage("AnnotationsChanged lacks app_id or input_id")
                    continue
                stale = self.index.set_labels(Labels(ev.app_id, ev.input_id, list(ev.concepts), int(ev.split), int(ev.label_revision), int(ev.generation)))
                if stale:  # a replayed or outdated record: nothing changed, say why
                    outcomes[n] = PoisonMessage(f"stale record: {stale}")
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
                if ev.generations and len(ev.generations) != len(ev.input_ids):
                    outcomes[n] = PoisonMessage(f"InputsDeleted has {len(ev.generations)} generations for {len(ev.input_ids)} input ids")
                    continue
                stale = self.index.delete(ev.app_id, list(ev.input_ids), list(ev.generations))
                if stale and len(stale) == len(set(ev.input_ids)):  # nothing deleted: a replay, say why
                    outcomes[n] = PoisonMessage(f"stale record: {'; '.join(stale[:5])}")
                elif stale:
                    log.warning("inputs.deleted of app %s: kept %d newer input(s): %s", ev.app_id, len(stale), "; ".join(stale[:5]))
        except VectorStoreUnavailable as exc:
            raise RetryableError(f"vector store unavailable: {exc}") from exc
        return outcomes
