"""The map of an app's embeddings: a 2-D projection (``domain.projection``: PCA, or t-SNE for
up to 20,000 inputs) computed by a background job from the stored vectors (search's GetVectors
through the platform port), cached per app and method, read in pages with each point's labels
now, its split (its own, or in a dataset version) and a model version's prediction.

The cache is a file per app and method under ``<data_dir>/maps`` (ids, float32 coordinates and
the key), kept in memory once read. Its key (``domain.projection.map_key``) covers the app's
inputs (id and generation), the index's count and embedding model: a job whose key matches the
cached map returns at once (``cached``); a changed input set, an embedding that arrived since,
or a new embedding model recomputes. Labels are not in the key: a page reads them fresh.

Jobs run one at a time on one worker thread (the machine has few cores) and live in memory: a
restart forgets them (GetEmbeddingMapJob: NOT_FOUND), never the maps. No grpc here."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from firstlight.curation.pool_scores import latest_scored_version, stored_predictions
from firstlight.curation.ports import Platform, Training
from firstlight.curation.store import CurationStore
from firstlight.domain import projection, validation
from firstlight.domain.lru import Lru
from firstlight.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

MAX_POINTS = 100_000  # an even sample of the app's inputs beyond (float16 vectors: 256 MB at 1280-d)
VECTORS_PER_READ = 5000
MAX_JOBS = 200  # finished jobs kept in memory (all apps)
MAX_PAGE = 5000
DATASET_CACHE = 8  # frozen dataset versions' splits kept (they never change)
MAPS_IN_MEMORY = 8  # maps kept in memory (a 100k map of 40-character ids: ~17 MB); the rest are read from disk


@dataclass(frozen=True)
class Map:
    app_id: str
    method: str
    key: str
    ids: np.ndarray  # [N] str, sorted
    coords: np.ndarray  # [N, 2] float32
    computed_at: datetime
    total_inputs: int


class MapFiles:
    """The cached maps on disk, one ``<app>.<method>.npz`` each (names built here from
    validated ids), and in memory once read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._mem: Lru[tuple[str, str], Map] = Lru(MAPS_IN_MEMORY)

    def _path(self, app_id: str, method: str) -> Path:
        return self.root / f"{validation.app_id(app_id)}.{projection.method_of(method)}.npz"

    def get(self, app_id: str, method: str) -> Map | None:
        kept = self._mem.get((app_id, method))
        if kept is not None:
            return kept
        path = self._path(app_id, method)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            m = Map(app_id, method, meta["key"], z["ids"], z["coords"], datetime.fromisoformat(meta["computed_at"]), int(meta["total_inputs"]))
        self._mem.put((app_id, method), m)
        return m

    def put(self, m: Map) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(m.app_id, m.method)
        tmp = path.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        meta = json.dumps({"key": m.key, "computed_at": m.computed_at.isoformat(), "total_inputs": m.total_inputs})
        with open(tmp, "wb") as f:
            np.savez(f, ids=m.ids, coords=m.coords, meta=np.array(meta))
        os.replace(tmp, path)  # readers see the old map or the new one, never half of one
        self._mem.put((m.app_id, m.method), m)


class EmbeddingMaps:
    def __init__(self, platform: Platform, training: Training, store: CurationStore, root: Path, clock: Callable[[], datetime] | None = None) -> None:
        self.platform = platform
        self.training = training
        self.store = store
        self.files = MapFiles(root)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding-map")
        self._jobs: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self._datasets: Lru[tuple[str, str, str], dict[str, int]] = Lru(DATASET_CACHE)  # a frozen version never changes

    # -- jobs ---------------------------------------------------------------------------
    def start(self, app_id: str, method: str, force: bool = False) -> dict:
        validation.app_id(app_id)
        method = _method(method)
        if method == "tsne":  # refused now rather than after reading every vector
            count, _ = self.platform.index_state(app_id)
            if count > projection.MAX_TSNE:
                raise InvalidArgument(f"t-SNE maps at most {projection.MAX_TSNE} inputs and app {app_id!r} has {count} indexed; use pca")
        job = {
            "id": f"map-{uuid.uuid4().hex[:16]}",
            "app_id": app_id,
            "method": method,
            "state": "running",
            "stage": "listing",
            "progress": 0.0,
            "points": 0,
            "total_inputs": 0,
            "cached": False,
            "map_key": "",
            "error": "",
            "started_at": self.clock(),
            "finished_at": None,
            "projection_seconds": 0.0,
        }
        with self._lock:  # one job per app and method at a time: a second start joins it
            for j in self._jobs.values():
                if j["app_id"] == app_id and j["method"] == method and j["state"] == "running":
                    return dict(j)
            self._jobs[job["id"]] = job
            finished = [k for k, j in self._jobs.items() if j["state"] != "running"]
            for k in finished[: max(0, len(self._jobs) - MAX_JOBS)]:
                del self._jobs[k]
        self.pool.submit(self._run, job["id"], force)
        return dict(job)

    def job(self, app_id: str, job_id: str) -> dict:
        validation.app_id(app_id)
        with self._lock:
            j = self._jobs.get(job_id)
            if j is None or j["app_id"] != app_id:  # another app's job is as unknown as a missing one
                raise NotFound(f"map job {job_id[:80]!r} does not exist in app {app_id!r} (jobs are forgotten when the curation service restarts)")
            return dict(j)

    def _set(self, job_id: str, **values: object) -> None:
        with self._lock:
            self._jobs[job_id].update(values)

    def _run(self, job_id: str, force: bool) -> None:
        with self._lock:
            job = dict(self._jobs[job_id])
        app_id, method = job["app_id"], job["method"]
        try:
            count, model = self.platform.index_state(app_id)
            states = self.platform.label_states(app_id)
            key = projection.map_key(method, model, count, ((s.input_id, s.generation) for s in states))
            cached = self.files.get(app_id, method)
            if cached is not None and cached.key == key and not force:
                self._set(job_id, **_done(self.clock(), cached, cached=True))
                return
            ids = sorted(s.input_id for s in states)
            self._set(job_id, stage="vectors", progress=0.05, total_inputs=len(ids), map_key=key)
            kept, X = self._vectors(job_id, app_id, ids)
            if method == "tsne" and len(kept) > projection.MAX_TSNE:
                raise InvalidArgument(f"t-SNE maps at most {projection.MAX_TSNE} inputs and app {app_id!r} has {len(kept)} embedded; use pca")
            self._set(job_id, stage="projecting", progress=0.6, points=len(kept))
            t0 = time.perf_counter()
            coords = projection.project_2d(X, method, normalized=True)
            seconds = time.perf_counter() - t0
            del X
            self._set(job_id, stage="saving", progress=0.95, projection_seconds=seconds)
            m = Map(app_id, method, key, np.asarray(kept, dtype=np.str_), coords, self.clock(), len(ids))
            self.files.put(m)
            self._set(job_id, projection_seconds=seconds, **_done(self.clock(), m, cached=False))
            log.info("map of %s (%s): %d points in %.1f s", app_id, method, len(kept), seconds)
        except Exception as exc:
            log.exception("the %s map of %s failed", method, app_id)
            self._set(job_id, state="failed", error=(str(exc) or type(exc).__name__)[:1024], finished_at=self.clock())

    def _vectors(self, job_id: str, app_id: str, ids: list[str]) -> tuple[list[str], np.ndarray]:
        """(ids with a stored vector, their unit vectors as float16), an even sample of
        MAX_POINTS of the app's inputs beyond that."""
        ids = [ids[int(i)] for i in projection.even_sample(len(ids), MAX_POINTS)]
        kept: list[str] = []
        parts: list[np.ndarray] = []
        for start in range(0, len(ids), VECTORS_PER_READ):
            chunk = ids[start : start + VECTORS_PER_READ]
            got = self.platform.vectors(app_id, chunk)
            have = [i for i in chunk if i in got]  # inputs not embedded yet are left out
            if have:
                kept += have
                parts.append(projection.normalize(np.stack([got[i] for i in have])).astype(np.float16))
            self._set(job_id, progress=0.05 + 0.55 * min(1.0, (start + len(chunk)) / max(len(ids), 1)), points=len(kept))
        if not parts:
            return [], np.zeros((0, 2), np.float16)
        return kept, np.concatenate(parts)

    # -- reading ------------------------------------------------------------------------
    def points(
        self,
        app_id: str,
        method: str,
        page_size: int,
        page_token: str,
        dataset_id: str = "",
        dataset_version: str = "",
        model_id: str = "",
        model_version: str = "",
    ) -> dict:
        validation.app_id(app_id)
        method = _method(method)
        size = validation.page_size(page_size, default=1000, maximum=MAX_PAGE)
        if dataset_version and not dataset_id:
            raise InvalidArgument("dataset_version needs dataset_id")
        if dataset_id:
            validation.input_id(dataset_id)
        if model_version and not model_id:
            raise InvalidArgument("model_version needs model_id")
        if model_id:
            validation.input_id(model_id)
        m = self.files.get(app_id, method)
        if m is None:
            raise NotFound(f"app {app_id!r} has no {method} map yet: start one (StartEmbeddingMap)")
        # The token is bound to this map's key: a page of an older map would mix two layouts.
        scope = json.dumps([app_id, method, m.key, dataset_id, dataset_version, model_id, model_version])
        start, end, nxt = projection.page_bounds(len(m.ids), validation.decode_page_token("map", page_token, scope), size)
        ids = [str(i) for i in m.ids[start:end]]
        labels = self.platform.current_labels(app_id, ids)
        out: dict = {
            "points": [],
            "next_page_token": validation.encode_page_token("map", nxt, scope) if nxt else "",
            "total_size": len(m.ids),
            "method": method,
            "map_key": m.key,
            "computed_at": m.computed_at,
            "model_version": "",
            "predictions_source": "",
            "dataset_version": "",
        }
        splits: dict[str, int] | None = None
        if dataset_id:
            out["dataset_version"], splits = self._dataset_splits(app_id, dataset_id, dataset_version)
        predictions: dict[str, tuple[str, float]] = {}
        if model_id:
            out["model_version"], out["predictions_source"], predictions = self._predictions(app_id, model_id, model_version, ids)
        for i, (x, y) in zip(ids, m.coords[start:end]):
            concepts, own_split = labels.get(i, ([], 0))
            predicted, score = predictions.get(i, ("", 0.0))
            out["points"].append(
                {
                    "input_id": i,
                    "x": float(x),
                    "y": float(y),
                    "concepts": concepts,
                    "split": own_split if splits is None else splits.get(i, 0),
                    "in_dataset": splits is not None and i in splits,
                    "predicted": predicted,
                    "score": score,
                }
            )
        return out

    def _dataset_splits(self, app_id: str, dataset_id: str, version: str) -> tuple[str, dict[str, int]]:
        version = version or self.training.latest_dataset_version(app_id, dataset_id) or ""
        if not version:
            raise NotFound(f"dataset {dataset_id!r} does not exist in app {app_id!r}")
        k = (app_id, dataset_id, version)
        kept = self._datasets.get(k)
        if kept is not None:
            return version, kept
        rows = self.training.dataset_rows(app_id, dataset_id, version)
        if not rows:
            raise NotFound(f"dataset {dataset_id!r} of app {app_id!r} has no version {version!r} (or it has no rows)")
        splits = {r.input_id: r.split for r in rows}
        self._datasets.put(k, splits)
        return version, splits

    def _predictions(self, app_id: str, model_id: str, version: str, ids: list[str]) -> tuple[str, str, dict[str, tuple[str, float]]]:
        """(version, "stored" or "scored", input id → (top concept, score)): the pool predictions
        ScorePool stored for the version if it scored the pool, else the page scored now."""
        with self.store.engine.connect() as conn:
            stored_version = version
            if not stored_version:
                try:
                    stored_version = latest_scored_version(conn, app_id, model_id)
                except NotFound:
                    stored_version = ""
            stored = stored_predictions(conn, app_id, model_id, stored_version, ids) if stored_version else None
        if stored is not None:
            return stored_version, "stored", stored
        got = self.training.scores(app_id, model_id, version, ids)  # NOT_FOUND for an unknown model
        out: dict[str, tuple[str, float]] = {}
        if got.input_ids:
            top = np.asarray(got.proba).argmax(axis=1)
            for i, k, p in zip(got.input_ids, top, np.asarray(got.proba)):
                out[i] = (got.concepts[int(k)], float(p[int(k)]))
        return got.version, "scored", out


def _method(value: str) -> str:
    try:
        return projection.method_of(value)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _done(now: datetime, m: Map, *, cached: bool) -> dict:
    return {
        "state": "succeeded",
        "stage": "done",
        "progress": 1.0,
        "points": len(m.ids),
        "total_inputs": m.total_inputs,
        "cached": cached,
        "map_key": m.key,
        "finished_at": now,
    }


__all__ = ["MAX_POINTS", "EmbeddingMaps", "Map", "MapFiles"]
