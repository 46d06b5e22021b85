"""Keeping the vector index in step with the inputs (no Kafka, no generated code here: the
event handlers of ``indexer.py`` turn records into these values and call :class:`Index`).

* an embedding → upsert one point per input (id = uuid5(app/input): a redelivered event
  overwrites the same point, so indexing is exactly-once in effect);
* labels → update the point's labels if they are newer than what the point has. If the point
  does not exist yet (labels changed before the embedding arrived), the labels are parked in a
  small ``pending_labels`` collection and applied when the embedding lands;
* a deletion → delete the points;
* an embedding-model change → start filling the new model's index (see
  :mod:`firstlight.search.models`); every embedding of that model counts towards it, and when the
  app's listed inputs are all there the app's searches flip to it and its points in the old index
  are deleted. Vectors are always indexed into their own model's collection, even before the
  change arrives (the topics are not ordered with each other).

Every method raises ``VectorStoreUnavailable`` when the store is down (the caller retries)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firstlight.search.models import APP_MODELS, COLLECTION, AppModels, ModelRegistry, SwitchIds, collection_for, model_key
from firstlight.search.vector_store import Point, VectorStore, point_id

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


@dataclass(frozen=True)
class Embedded:
    """An input's embedding (``embeddings.computed``) with the labels it was embedded under."""

    app_id: str
    input_id: str
    model: str  # as the embedding service names it ("" or the backbone: the base model)
    vector: np.ndarray
    concepts: Sequence[str] = ()
    split: int = 0
    label_revision: int = 0


@dataclass(frozen=True)
class Labels:
    """An input's full label state (``annotations.changed``)."""

    app_id: str
    input_id: str
    concepts: Sequence[str]
    split: int
    label_revision: int


class Index:
    def __init__(self, store: VectorStore, dim: int) -> None:
        self.store = store
        self.dim = dim
        store.ensure_collection(COLLECTION, dim)
        store.ensure_collection(PENDING, 1)
        self.models = ModelRegistry(store, dim)

    def add(self, items: Sequence[Embedded | None]) -> list[str | None]:
        """Index a batch (later items of the same input win). Per item: None once it is indexed,
        else why it never can be; a None item is skipped (its caller refused it already)."""
        refused: list[str | None] = [None] * len(items)
        # collection -> point id -> point
        batches: dict[str, dict[str, Point]] = {}
        indexed: list[Embedded] = []
        pids = [point_id(e.app_id, e.input_id) if e is not None and e.app_id else "" for e in items]
        pending = {r.id: r.payload for r in self.store.retrieve(PENDING, [p for p in pids if p], with_vectors=False)}
        for n, e in enumerate(items):
            if e is None:
                continue
            if not e.app_id or not e.input_id:
                refused[n] = "EmbeddingComputed lacks app_id or input_id"
                continue
            model = model_key(e.model)
            try:
                collection = self.models.ensure(model, len(e.vector))
            except ValueError as exc:
                refused[n] = f"vector has {len(e.vector)} dimensions: {exc}"
                continue
            pid = pids[n]
            concepts, split, revision = list(e.concepts), e.split, e.label_revision
            parked = pending.get(pid)
            if parked and parked["label_revision"] > revision:
                concepts, split, revision = parked["concepts"], parked["split"], parked["label_revision"]
            batches.setdefault(collection, {})[pid] = Point(pid, e.vector, payload_for(e.app_id, e.input_id, concepts, split, revision, model))
            indexed.append(e)
        for collection, points in batches.items():
            self.store.upsert(collection, list(points.values()))
        self._settle_parked({e.app_id for e in items if e is not None and e.app_id}, pending)
        self._advance_switches(indexed)
        return refused

    def _settle_parked(self, apps: set[str], pending: dict[str, dict]) -> None:
        """Parked labels are dropped once every live index of the app has the input (during a
        switch, the other model's vector may arrive later and needs them too)."""
        if not pending:
            return
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

    def _advance_switches(self, indexed: list[Embedded]) -> None:
        by_app: dict[tuple[str, str], set[str]] = {}
        for e in indexed:
            by_app.setdefault((e.app_id, model_key(e.model)), set()).add(e.input_id)
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

    def change_model(self, app_id: str, embedding_model: str, input_ids: Sequence[str]) -> None:
        """The app switched to ``embedding_model``: fill its index with the listed inputs."""
        state = self.models.get(app_id)
        new = model_key(embedding_model)
        if new == state.active:  # switched back before the switch completed: cancel it
            if state.target:
                self.models.put(AppModels(app_id, active=state.active))
                self.models.put_ids(app_id, SwitchIds())
            return
        listed = list(dict.fromkeys(input_ids))
        target = collection_for(new)
        present: set[str] = set()
        if self.models.dim_of_collection(target) is not None:  # vectors may have come first
            for start in range(0, len(listed), 1000):
                chunk = listed[start : start + 1000]
                found = self.store.retrieve(target, [point_id(app_id, i) for i in chunk], with_vectors=False)
                present |= {r.payload["input_id"] for r in found if r.payload.get("app_id") == app_id}
        state = AppModels(app_id, active=state.active, target=new, total=len(listed))
        self._progress(state, SwitchIds(listed, listed), [i for i in listed if i not in present])

    def set_labels(self, labels: Labels) -> None:
        pid = point_id(labels.app_id, labels.input_id)
        payload = {
            "concepts": list(labels.concepts),
            "labeled": bool(labels.concepts),
            "split": int(labels.split),
            "label_revision": int(labels.label_revision),
        }
        missing = False
        for collection in self.models.live_collections(self.models.get(labels.app_id)):
            found = self.store.retrieve(collection, [pid], with_vectors=False)
            if not found:
                missing = True
            elif found[0].payload.get("label_revision", 0) < labels.label_revision:
                self.store.set_payload(collection, pid, payload)
        if missing:  # park them until the embedding lands
            parked = self.store.retrieve(PENDING, [pid], with_vectors=False)
            if not parked or parked[0].payload["label_revision"] < labels.label_revision:
                self.store.upsert(PENDING, [Point(pid, [1.0], {"app_id": labels.app_id, **payload})])

    def label_revisions(self, page: int = 1000) -> dict[str, dict[str, int]]:
        """app -> input -> label revision of every indexed point, read from each app's live
        collections (during a switch, the lower of the two: the lagging one needs the labels)."""
        states: dict[str, AppModels] = {}
        collections = {COLLECTION}
        offset: str | None = None
        while True:  # apps that switched models may have no point in the base collection
            records, offset = self.store.scroll(APP_MODELS, filter=None, limit=page, offset=offset)
            for r in records:
                if "active" in r.payload:
                    state = self.models.get(r.payload["app_id"])
                    states[state.app_id] = state
                    collections.update(self.models.live_collections(state))
            if offset is None:
                break
        out: dict[str, dict[str, int]] = {}
        for collection in sorted(collections):
            offset = None
            while True:
                records, offset = self.store.scroll(collection, filter=None, limit=page, offset=offset)
                for r in records:
                    app_id, input_id = r.payload.get("app_id"), r.payload.get("input_id")
                    if not app_id or not input_id:
                        continue
                    state = states.setdefault(app_id, AppModels(app_id))
                    if collection not in self.models.live_collections(state):
                        continue  # an old model's leftovers: not searched, not kept in step
                    revision = int(r.payload.get("label_revision", 0))
                    known = out.setdefault(app_id, {})
                    known[input_id] = min(revision, known.get(input_id, revision))
                if offset is None:
                    break
        return out

    def delete(self, app_id: str, input_ids: Sequence[str]) -> None:
        ids = [point_id(app_id, i) for i in input_ids]
        state = self.models.get(app_id)
        for collection in self.models.live_collections(state):
            self.store.delete(collection, ids)
        self.store.delete(PENDING, ids)
        if state.target:  # a deleted input no longer holds the switch back
            gone = set(input_ids)
            switch = self.models.get_ids(app_id)
            self._progress(state, SwitchIds(switch.remaining, [i for i in switch.listed if i not in gone]), [i for i in switch.remaining if i not in gone])
