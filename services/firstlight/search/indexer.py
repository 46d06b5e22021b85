"""Event handlers that keep the vector index in step with the event stream.

* ``embeddings.computed`` → upsert one point per input (id = uuid5(app/input): a redelivered
  event overwrites the same point, so indexing is exactly-once in effect) → ``inputs.indexed``.
* ``annotations.changed`` → update the point's labels if the event is newer than what the point
  has. If the point does not exist yet (labels changed before the embedding arrived), the labels
  are parked in a small ``pending_labels`` collection and applied when the embedding lands.
* ``inputs.deleted`` → delete the points.
* ``app.embedding_model.changed`` → start filling the new model's index (see
  :mod:`firstlight.search.models`); every ``embeddings.computed`` of that model counts towards it,
  and when the app's listed inputs are all there the app's searches flip to it and its points in
  the old index are deleted. Vectors are always indexed into their own model's collection, even
  before the change event arrives (the topics are not ordered with each other).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from firstlight.messaging import wire
from firstlight.messaging.bus import EventProducer, ParsedRecord, PoisonMessage, RetryableError
from firstlight.models.backbone import EMBEDDING_DIM
from firstlight.search.models import COLLECTION, AppModels, ModelRegistry, SwitchIds, collection_for, model_key
from firstlight.search.events import SearchEvents
from firstlight.search.vector_store import Point, VectorStore, VectorStoreUnavailable, point_id
from firstlight.v1 import events_pb2

log = logging.getLogger(__name__)

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
        self.events = SearchEvents(producer) if producer is not None else None
        self.dim = dim
        store.ensure_collection(COLLECTION, dim)
        store.ensure_collection(PENDING, 1)
        self.models = ModelRegistry(store, dim)

    def on_embeddings(self, records: list[ParsedRecord[events_pb2.EmbeddingComputed]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = [None] * len(records)
        # collection -> point id -> point (later events of the same input in a batch win)
        batches: dict[str, dict[str, Point]] = {}
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
                model = model_key(ev.model)
                try:
                    collection = self.models.ensure(model, len(vector))
                except ValueError as exc:
                    outcomes[n] = PoisonMessage(f"vector has {len(vector)} dimensions: {exc}")
                    continue
                pid = pids[n]
                concepts, split, revision = list(ev.concepts), ev.split, ev.label_revision
                parked = pending.get(pid)
                if parked and parked["label_revision"] > revision:
                    concepts, split, revision = parked["concepts"], parked["split"], parked["label_revision"]
                batches.setdefault(collection, {})[pid] = Point(pid, vector, payload_for(ev.app_id, ev.input_id, concepts, split, revision, model))
                indexed.append(ev)
            for collection, points in batches.items():
                self.store.upsert(collection, list(points.values()))
            self._settle_parked(records, pending)
            self._advance_switches(indexed)
        except VectorStoreUnavailable as exc:
            raise RetryableError(f"vector store unavailable: {exc}") from exc
        self._announce(indexed)
        return outcomes

    def _settle_parked(self, records: list[ParsedRecord[events_pb2.EmbeddingComputed]], pending: dict[str, dict]) -> None:
        """Parked labels are dropped once every live index of the app has the input (during a
        switch, the other model's vector may arrive later and needs them too)."""
        if not pending:
            return
        apps = {r.message.app_id for r in records if r.message.app_id}
        states = {a: self.models.get(a) for a in apps}
        done = []
        for pid, payload in pending.items():
            state = states.get(payload.get("app_id", ""))
            if state is None:
                continue
            if all(self.store.retrieve(c, [pid], with_vectors=False) for c in self.models.live_collections(state)):
                done.append(pid)
        if done:
            self.store.delete(PENDING, done)

    def _advance_switches(self, indexed: list[events_pb2.EmbeddingComputed]) -> None:
        by_app: dict[tuple[str, str], set[str]] = {}
        for ev in indexed:
            by_app.setdefault((ev.app_id, model_key(ev.model)), set()).add(ev.input_id)
        for (app_id, model), input_ids in by_app.items():
            state = self.models.get(app_id)
            if state.target != model:
                continue
            ids = self.models.get_ids(app_id)
            left = [i for i in ids.remaining if i not in input_ids]
            if len(left) != len(ids.remaining):
                self._progress(state, ids, left)

    def _progress(self, state: AppModels, ids: SwitchIds, left: list[str]) -> None:
        """Record the switch's remaining inputs; flip the app to the new index when none are left."""
        if left:
            self.models.put_ids(state.app_id, SwitchIds(left, ids.listed))
            state.remaining = len(left)
            self.models.put(state)
            return
        old = state.active
        flipped = AppModels(state.app_id, active=state.target, total=state.total)
        self.models.put(flipped)  # the flip: searches use the new index from here on
        log.info("app %s now searches %s (was %s)", state.app_id, flipped.active, old)
        if old != flipped.active:
            self.store.delete(collection_for(old), [point_id(state.app_id, i) for i in ids.listed])
        self.models.put_ids(state.app_id, SwitchIds())

    def on_model_changed(self, records: list[ParsedRecord[events_pb2.EmbeddingModelChanged]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = [None] * len(records)
        try:
            for n, record in enumerate(records):
                ev = record.message
                if not ev.app_id:
                    outcomes[n] = PoisonMessage("EmbeddingModelChanged lacks app_id")
                    continue
                state = self.models.get(ev.app_id)
                new = model_key(ev.embedding_model)
                if new == state.active:  # switched back before the switch completed: cancel it
                    if state.target:
                        self.models.put(AppModels(ev.app_id, active=state.active))
                        self.models.put_ids(ev.app_id, SwitchIds())
                    continue
                listed = list(dict.fromkeys(ev.input_ids))
                target = collection_for(new)
                present: set[str] = set()
                if self.models.dim_of_collection(target) is not None:  # vectors may have come first
                    for start in range(0, len(listed), 1000):
                        chunk = listed[start : start + 1000]
                        found = self.store.retrieve(target, [point_id(ev.app_id, i) for i in chunk], with_vectors=False)
                        present |= {r.payload["input_id"] for r in found if r.payload.get("app_id") == ev.app_id}
                state = AppModels(ev.app_id, active=state.active, target=new, total=len(listed))
                self._progress(state, SwitchIds(listed, listed), [i for i in listed if i not in present])
        except VectorStoreUnavailable as exc:
            raise RetryableError(f"vector store unavailable: {exc}") from exc
        return outcomes

    def _announce(self, indexed: list[events_pb2.EmbeddingComputed]) -> None:
        if self.events is not None and indexed:
            self.events.indexed(indexed)

    def on_annotations(self, records: list[ParsedRecord[events_pb2.AnnotationsChanged]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = [None] * len(records)
        try:
            for n, record in enumerate(records):
                ev = record.message
                if not ev.app_id or not ev.input_id:
                    outcomes[n] = PoisonMessage("AnnotationsChanged lacks app_id or input_id")
                    continue
                pid = point_id(ev.app_id, ev.input_id)
                labels = {
                    "concepts": list(ev.concepts),
                    "labeled": bool(ev.concepts),
                    "split": int(ev.split),
                    "label_revision": int(ev.label_revision),
                }
                missing = False
                for collection in self.models.live_collections(self.models.get(ev.app_id)):
                    found = self.store.retrieve(collection, [pid], with_vectors=False)
                    if not found:
                        missing = True
                    elif found[0].payload.get("label_revision", 0) < ev.label_revision:
                        self.store.set_payload(collection, pid, labels)
                if missing:  # park them until the embedding lands
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
                state = self.models.get(ev.app_id)
                for collection in self.models.live_collections(state):
                    self.store.delete(collection, ids)
                self.store.delete(PENDING, ids)
                if state.target:  # a deleted input no longer holds the switch back
                    gone = set(ev.input_ids)
                    switch = self.models.get_ids(ev.app_id)
                    self._progress(state, SwitchIds(switch.remaining, [i for i in switch.listed if i not in gone]), [i for i in switch.remaining if i not in gone])
        except VectorStoreUnavailable as exc:
            raise RetryableError(f"vector store unavailable: {exc}") from exc
        return outcomes
