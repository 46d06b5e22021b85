"""Keeping the vector index in step with the inputs (no Kafka, no generated code here: the
event handlers of ``indexer.py`` turn records into these values and call :class:`Index`).

* an embedding → upsert one point per input (id = uuid5(app/input): a redelivered event
  overwrites the same point, so indexing is exactly-once in effect);
* labels → update the point's labels if they are newer than what the point has. If the point
  does not exist yet (labels changed before the embedding arrived), the labels are parked in a
  small ``pending_labels`` collection and applied when the embedding lands;
* a deletion → delete the points of the deleted generation (or older) and keep a tombstone;
* every per-input record is stamped (generation, label revision): one older than the point it
  would change, or of a deleted generation, is refused with the reason (a replayed record of a
  deleted or relabeled input changes nothing: :mod:`firstlight.domain.generations`);
* an embedding-model change → start filling the new model's index (see
  :mod:`firstlight.search.models`); every embedding of that model counts towards it, and when the
  app's listed inputs are all there the app's searches flip to it and its points in the old index
  are deleted. Vectors are always indexed into their own model's collection, even before the
  change arrives (the topics are not ordered with each other).

Every method raises ``VectorStoreUnavailable`` when the store is down (the caller retries)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from firstlight.domain.generations import Stamp, stale_delete, stale_update
from firstlight.search.models import APP_MODELS, COLLECTION, AppModels, ModelRegistry, SwitchIds, collection_for, model_key
from firstlight.search.vector_store import Point, VectorStore, point_id

log = logging.getLogger(__name__)

PENDING = "pending_labels"
#: One point per deleted input (id = the input's point id): the newest generation deleted, so a
#: replayed embedding or label record of a deleted input cannot bring it back.
TOMBSTONES = "deleted_inputs"


def payload_for(app_id: str, input_id: str, concepts: Sequence[str], split: int, revision: int, model: str, generation: int = 0) -> dict:
    return {
        "generation": int(generation),
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
    generation: int = 0


@dataclass(frozen=True)
class Labels:
    """An input's full label state (``annotations.changed``)."""

    app_id: str
    input_id: str
    concepts: Sequence[str]
    split: int
    label_revision: int
    generation: int = 0

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.generation, self.label_revision)


@dataclass(frozen=True)
class _Stored:
    generation: int
    payload: dict


def _stamp(payload: dict) -> Stamp:
    return Stamp(int(payload.get("generation", 0)), int(payload.get("label_revision", 0)))


class Index:
    def __init__(self, store: VectorStore, dim: int, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.dim = dim
        self.clock = clock  # stamps deletion markers (their age decides when they are pruned)
        store.ensure_collection(COLLECTION, dim)
        store.ensure_collection(PENDING, 1)
        store.ensure_collection(TOMBSTONES, 1)
        self.models = ModelRegistry(store, dim)

    def add(self, items: Sequence[Embedded | None]) -> list[str | None]:
        """Index a batch (later items of the same input win). Per item: None once it is indexed,
        else why it never can be; a None item is skipped (its caller refused it already)."""
        refused: list[str | None] = [None] * len(items)
        # collection -> point id -> point
        batches: dict[str, dict[str, Point]] = {}
        indexed: list[Embedded] = []
        pids = [point_id(e.app_id, e.input_id) if e is not None and e.app_id else "" for e in items]
        live = [p for p in pids if p]
        pending = {r.id: r.payload for r in self.store.retrieve(PENDING, live, with_vectors=False)}
        deleted = {r.id: int(r.payload.get("generation", 0)) for r in self.store.retrieve(TOMBSTONES, live, with_vectors=False)}
        collections: list[str | None] = [None] * len(items)
        for n, e in enumerate(items):
            if e is None:
                continue
            if not e.app_id or not e.input_id:
                refused[n] = "EmbeddingComputed lacks app_id or input_id"
                continue
            try:
                collections[n] = self.models.ensure(model_key(e.model), len(e.vector))
            except ValueError as exc:
                refused[n] = f"vector has {len(e.vector)} dimensions: {exc}"
        stored = self._stored([(c, pids[n]) for n, c in enumerate(collections) if c is not None])
        for n, e in enumerate(items):
            collection = collections[n]
            if e is None or collection is None:
                continue
            pid = pids[n]
            current = stored.get((collection, pid))
            # An embedding is compared by generation only: its labels may be older than the
            # point's (labels changed after ingestion), and then the point's labels are kept.
            why = stale_update(Stamp(e.generation), Stamp(current.generation) if current else None, deleted.get(pid))
            if why:
                refused[n] = f"stale record: {why}"
                continue
            concepts, split, revision = list(e.concepts), e.split, e.label_revision
            for newer in (pending.get(pid), current and current.payload):
                # Newer labels of the same incarnation (0: stored before generations) win.
                if newer and _stamp(newer).generation in (e.generation, 0) and _stamp(newer).revision > revision:
                    concepts, split, revision = newer["concepts"], newer["split"], newer["label_revision"]
            payload = payload_for(e.app_id, e.input_id, concepts, split, revision, model_key(e.model), e.generation)
            batches.setdefault(collection, {})[pid] = Point(pid, e.vector, payload)
            indexed.append(e)
        for collection, points in batches.items():
            self.store.upsert(collection, list(points.values()))
        self._settle_parked({e.app_id for e in items if e is not None and e.app_id}, pending)
        self._advance_switches(indexed)
        return refused

    def _stored(self, where: Sequence[tuple[str, str]]) -> dict[tuple[str, str], _Stored]:
        """The stored stamp and payload of each (collection, point id) that exists."""
        by_collection: dict[str, list[str]] = {}
        for collection, pid in where:
            by_collection.setdefault(collection, []).append(pid)
        out: dict[tuple[str, str], _Stored] = {}
        for collection, ids in by_collection.items():
            for r in self.store.retrieve(collection, list(dict.fromkeys(ids)), with_vectors=False):
                out[(collection, r.id)] = _Stored(_stamp(r.payload).generation, r.payload)
        return out

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

    def set_labels(self, labels: Labels) -> str | None:
        """Apply an input's label state where it is newer than the stored one; why it is stale
        (older than the stored state or of a deleted generation: nothing changed), else None."""
        pid = point_id(labels.app_id, labels.input_id)
        payload = {
            "concepts": list(labels.concepts),
            "labeled": bool(labels.concepts),
            "split": int(labels.split),
            "label_revision": int(labels.label_revision),
            "generation": int(labels.generation),
        }
        tomb = self.store.retrieve(TOMBSTONES, [pid], with_vectors=False)
        deleted = int(tomb[0].payload.get("generation", 0)) if tomb else None
        missing = False
        stale: str | None = None
        for collection in self.models.live_collections(self.models.get(labels.app_id)):
            found = self.store.retrieve(collection, [pid], with_vectors=False)
            current = _stamp(found[0].payload) if found else None
            why = stale_update(labels.stamp, current, deleted)
            if why:
                stale = stale or why
            elif current is None:
                missing = True
            elif current < labels.stamp:
                self.store.set_payload(collection, pid, payload)
        if missing:  # park them until the embedding lands
            parked = self.store.retrieve(PENDING, [pid], with_vectors=False)
            if not parked or _stamp(parked[0].payload) < labels.stamp:
                self.store.upsert(PENDING, [Point(pid, [1.0], {"app_id": labels.app_id, **payload})])
        return None if missing else stale

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

    def prune_tombstones(self, older_than_s: float, page: int = 1000) -> int:
        """Drop the deletion markers older than ``older_than_s`` (they only grow otherwise); returns
        how many. A marker bars replayed records of a deleted generation; once every record that
        could name it is past the signature window (dead-lettered as too old), it bars nothing.
        Markers from before ``deleted_at`` get it now, so they go ``older_than_s`` later."""
        now = self.clock()
        doomed: list[str] = []
        dated: list[Point] = []
        offset: str | None = None
        while True:
            records, offset = self.store.scroll(TOMBSTONES, filter=None, limit=page, offset=offset)
            for r in records:
                at = r.payload.get("deleted_at")
                if at is None:
                    dated.append(Point(r.id, [1.0], {**r.payload, "deleted_at": now}))
                elif now - float(at) > older_than_s:
                    doomed.append(r.id)
            if offset is None:
                break
        if dated:
            self.store.upsert(TOMBSTONES, dated)
        if doomed:
            self.store.delete(TOMBSTONES, doomed)
        return len(doomed)

    def delete(self, app_id: str, input_ids: Sequence[str], generations: Sequence[int] = ()) -> list[str]:
        """Delete the inputs' points of the given generations (or older) and leave tombstones;
        ``generations`` empty (a record from before them): whatever is stored. Returns why each
        input that was not deleted is stale (a newer generation was stored since)."""
        if generations and len(generations) != len(input_ids):
            raise ValueError(f"{len(generations)} generations for {len(input_ids)} input ids")
        wanted: dict[str, tuple[str, int | None]] = {}
        for n, input_id in enumerate(input_ids):
            gen = int(generations[n]) if generations else None
            pid = point_id(app_id, input_id)
            prev = wanted.get(pid)
            wanted[pid] = (input_id, gen if prev is None or prev[1] is None or gen is None else max(gen, prev[1]))
        state = self.models.get(app_id)
        stored: dict[str, list[tuple[str, int]]] = {}
        for (collection, pid), s in self._stored([(c, pid) for c in [*self.models.live_collections(state), PENDING] for pid in wanted]).items():
            stored.setdefault(pid, []).append((collection, s.generation))
        tombs = {r.id: int(r.payload.get("generation", 0)) for r in self.store.retrieve(TOMBSTONES, list(wanted), with_vectors=False)}
        stale: list[str] = []
        gone: set[str] = set()
        doomed: dict[str, list[str]] = {}
        tombstones: list[Point] = []
        for pid, (input_id, gen) in wanted.items():
            found = stored.get(pid, [])
            newer = [why for _, g in found if (why := stale_delete(gen, Stamp(g)))]
            for collection, g in found:
                if stale_delete(gen, Stamp(g)) is None:
                    doomed.setdefault(collection, []).append(pid)
            if newer and len(newer) == len(found):
                stale.append(f"{input_id}: {newer[0]}")
            else:
                gone.add(input_id)
            # The deleted generation is a fact whatever is stored: it bars that generation's
            # replayed records from bringing the input back.
            through = gen if gen is not None else max((g for _, g in found), default=0)
            if pid not in tombs or tombs[pid] < through:
                tombstones.append(Point(pid, [1.0], {"app_id": app_id, "input_id": input_id, "generation": through, "deleted_at": self.clock()}))
        for collection, pids in doomed.items():
            self.store.delete(collection, pids)
        if tombstones:
            self.store.upsert(TOMBSTONES, tombstones)
        if state.target and gone:  # a deleted input no longer holds the switch back
            switch = self.models.get_ids(state.app_id)
            self._progress(state, SwitchIds(switch.remaining, [i for i in switch.listed if i not in gone]), [i for i in switch.remaining if i not in gone])
        return stale
