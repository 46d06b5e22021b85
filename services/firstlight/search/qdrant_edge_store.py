"""``VectorStore`` over qdrant-edge: Qdrant's engine in-process, persisted under ``path``.

Layout: one EdgeShard directory per collection, ``<path>/<collection>/`` (WAL + segments). The shard
holds an exclusive lock on its WAL, so a second process opening the same directory fails (reported
as ``VectorStoreUnavailable``); one store instance per path per process.

Quirks of qdrant-edge-py 0.9.0 this adapter hides:
- ``MatchValue(True)`` is converted to the integer 1 by the bindings, so a filter on a bool payload
  field never matches. ``labeled`` is therefore mirrored into a hidden integer field (0/1) that the
  filter and its payload index use; it is stripped from every payload handed back.
- The HNSW index is only built by the blocking ``EdgeShard.optimize()``; until then every search is
  a scan. It holds the GIL for the whole build (minutes at 100k points: every other thread of the
  process stops), so a serving process builds with ``build_index_in_background`` instead: a child
  process optimizes a copy, writes made meanwhile are replayed into it, and it is swapped in.
- Engine errors surface as bare ``Exception`` with Qdrant's message; see ``_engine_errors``.
- ``retrieve`` takes ``with_payload``/``with_vector`` positionally-required despite the stubs.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe

from firstlight.search.vector_store import (
    EXACT_SEARCH_MAX_POINTS,
    INDEXED_FIELDS,
    CollectionNotFound,
    Hit,
    Point,
    Record,
    SearchFilter,
    VectorStoreUnavailable,
    as_vector,
    canonical_id,
    check_collection_name,
    check_dim,
    check_page,
    order_like,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Bool payload fields -> the hidden integer field the edge twin filters on (see module docstring).
_BOOL_SHADOWS = {"labeled": "_fl_labeled_i"}
_SHADOW_KEYS = frozenset(_BOOL_SHADOWS.values())

_SCHEMAS = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "bool": qe.PayloadSchemaType.Bool,
}

# Qdrant's OperationError messages that mean "your request is wrong", not "try again later".
_INVALID_INPUT = (
    "Wrong input",
    "Vector dimension error",
    "Validation failed",
    "Bad request",
    "Bad input",
    "Not existing vector name",
    "Payload type does not match",
    "Wrong usage",
)


class _EngineErrors:
    """Engine errors arrive as bare ``Exception`` carrying Qdrant's message; other types (TypeError,
    ValueError from argument conversion, our own CollectionNotFound) pass through untouched.
    A class rather than @contextmanager: ``__exit__ -> None`` tells type checkers it never swallows."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None or type(exc) is not Exception:
            return
        msg = str(exc)
        if msg.startswith(_INVALID_INPUT) or "incompatible" in msg:
            raise ValueError(msg) from exc
        raise VectorStoreUnavailable(f"qdrant-edge: {msg}") from exc


_engine_errors = _EngineErrors()


def _index_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for key, kind in INDEXED_FIELDS.items():
        if key in _BOOL_SHADOWS:
            schemas[_BOOL_SHADOWS[key]] = qe.PayloadSchemaType.Integer
        elif key == "app_id":
            # Tenant index: the optimizer co-locates each app's points, which is how we query.
            schemas[key] = qe.KeywordIndexParams(is_tenant=True)
        else:
            schemas[key] = _SCHEMAS[kind]
    return schemas


def _to_engine_payload(payload: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in payload.items() if k not in _SHADOW_KEYS}
    for key, shadow in _BOOL_SHADOWS.items():
        if key in out:
            # A non-bool value (e.g. None) must stop matching either bool filter.
            out[shadow] = int(out[key]) if isinstance(out[key], bool) else None
    return out


def _from_engine_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (payload or {}).items() if k not in _SHADOW_KEYS}


def _edge_filter(f: SearchFilter | None) -> qe.Filter | None:
    if f is None:
        return None
    must: list[Any] = [qe.FieldCondition("app_id", match=qe.MatchValue(f.app_id))]
    if f.concepts_any:
        must.append(qe.FieldCondition("concepts", match=qe.MatchAny(list(f.concepts_any))))
    if f.split is not None:
        must.append(qe.FieldCondition("split", match=qe.MatchValue(int(f.split))))
    if f.labeled is not None:
        must.append(qe.FieldCondition(_BOOL_SHADOWS["labeled"], match=qe.MatchValue(int(f.labeled))))
    return qe.Filter(must=must)


@dataclass
class _Shard:
    engine: qe.EdgeShard
    #: None when opened lazily (without asserting a dim); ensure_collection then reopens with one.
    dim: int | None
    lock: threading.Lock
    closed: bool = False
    #: Ids written while a background index build runs (replayed into the built copy); else None.
    journal: set[str] | None = None
    #: time.monotonic() of the last write.
    last_write: float = 0.0


class QdrantEdgeStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._root = Path(path)
        self._root.mkdir(parents=True, exist_ok=True)
        for stale in self._root.glob(".build-*"):  # a build interrupted by a crash
            shutil.rmtree(stale, ignore_errors=True)
        # Guards the registry only; each shard has its own lock so a long optimize() or a big
        # upsert on one collection doesn't stall the others.
        self._lock = threading.Lock()
        self._shards: dict[str, _Shard] = {}
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    def ensure_collection(self, name: str, dim: int) -> None:
        check_collection_name(name)
        check_dim(dim)
        with self._lock:
            self._check_open()
            shard = self._shards.get(name)
            if shard is None:
                shard = _Shard(self._open_engine(name, dim), dim, threading.Lock())
                self._shards[name] = shard
        with shard.lock:
            if shard.closed:
                raise RuntimeError("QdrantEdgeStore is closed")
            if shard.dim is None:
                # Opened lazily by a read: reopen with the config so the engine checks the dim.
                shard.engine.close()
                try:
                    shard.engine = self._open_engine(name, dim)
                except ValueError:
                    shard.engine = self._open_engine(name, None)  # keep serving what's there
                    raise
                shard.dim = dim
            elif shard.dim != dim:
                raise ValueError(f"collection {name!r} exists with dim {shard.dim}, not {dim}")
            with _engine_errors:
                existing = shard.engine.info().payload_schema
                for key, schema in _index_schemas().items():
                    # Re-creating an index rebuilds it, which is slow on a big collection.
                    if key not in existing:
                        shard.engine.update(qe.UpdateOperation.create_field_index(key, schema))

    def optimize(self, name: str) -> None:
        """Build the HNSW index now; blocks searches on this collection while it runs."""
        self._run(name, lambda engine: engine.optimize())

    def index_status(self, name: str) -> tuple[int, int, float]:
        """(points, vectors in the HNSW index, seconds since the last write) of a collection."""
        shard = self._shard(name)
        info = self._run(name, lambda engine: engine.info())
        return int(info.points_count), int(info.indexed_vectors_count), time.monotonic() - shard.last_write

    def build_index_in_background(self, name: str, nice: int = 0, timeout_s: float = 3600.0) -> bool:
        """Build the HNSW index without stopping this process: copy the collection, optimize the
        copy in a child process (``firstlight.search.edge_build``), replay the writes made
        meanwhile into it and swap it in. Searches and writes continue during the build (the
        swap holds the collection's lock for about a second). Blocks the calling thread until
        done; False when another build of this collection is running or the store closed.
        Crash-safe: the live directory is only replaced by a complete copy (see _open_engine)."""
        shard = self._shard(name)
        live = self._root / name
        build = self._root / f".build-{name}-{secrets.token_hex(4)}"
        with shard.lock:
            if shard.closed or shard.journal is not None:
                return False
            with _engine_errors:
                shard.engine.flush()
            shutil.copytree(live, build)
            shard.journal = set()
        try:
            # ``nice`` > 0 makes the build yield the CPU to searches and indexing; on a host shared
            # with other busy processes it also starves the build (nice 10 got ~2% of the CPU
            # at load 12 here), so the default is 0.
            prefix = ["nice", "-n", str(nice)] if nice and shutil.which("nice") else []
            proc = subprocess.run(
                [*prefix, sys.executable, "-m", "firstlight.search.edge_build", str(build)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout_s,
            )
            if proc.returncode != 0:
                raise VectorStoreUnavailable(f"index build of {name!r} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
            with shard.lock:
                if shard.closed:
                    return False
                self._replay(shard, build)
                shard.engine.close()
                old = self._root / f"{name}.old"
                shutil.rmtree(old, ignore_errors=True)
                live.rename(old)
                build.rename(live)  # from here on, a restart opens the built copy
                shard.engine = self._open_engine(name, shard.dim)
                shutil.rmtree(old, ignore_errors=True)
            return True
        finally:
            with shard.lock:
                shard.journal = None
            shutil.rmtree(build, ignore_errors=True)

    @staticmethod
    def _replay(shard: _Shard, build: Path) -> None:
        """Bring the built copy up to date with the writes made since it was copied (lock held)."""
        ids = sorted(shard.journal or ())
        fresh = qe.EdgeShard.load(str(build), None)
        try:
            with _engine_errors:
                for s in range(0, len(ids), 1000):
                    part = ids[s : s + 1000]
                    found = shard.engine.retrieve(part, True, True)
                    if found:  # engine payloads as stored (hidden fields included)
                        fresh.update(qe.UpdateOperation.upsert_points([qe.Point(str(r.id), r.vector, r.payload) for r in found]))
                    present = {str(r.id) for r in found}
                    gone = [i for i in part if i not in present]
                    if gone:
                        fresh.update(qe.UpdateOperation.delete_points(gone))
                fresh.flush()
        finally:
            fresh.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            shards, self._shards = list(self._shards.items()), {}
        for name, shard in shards:
            with shard.lock:
                shard.closed = True
                try:
                    shard.engine.flush()
                    shard.engine.close()
                except Exception:
                    log.exception("closing edge collection %s failed", name)

    # -- writes --------------------------------------------------------------------------------

    def upsert(self, name: str, points: list[Point]) -> None:
        # Validate everything before touching the engine so a bad point doesn't half-apply a batch.
        ids = [canonical_id(p.id) for p in points]
        batch = [qe.Point(i, as_vector(p.vector), _to_engine_payload(p.payload)) for i, p in zip(ids, points)]
        if batch:
            self._run(name, lambda engine: engine.update(qe.UpdateOperation.upsert_points(batch)), ids)

    def set_payload(self, name: str, id: str, payload: dict[str, Any]) -> bool:
        pid = canonical_id(id)
        values = _to_engine_payload(payload)

        def apply(engine: qe.EdgeShard) -> bool:
            # The engine raises on a missing id; checking first (under the shard lock) keeps that
            # case a plain False instead of parsing an error message.
            if not engine.retrieve([pid], False, False):
                return False
            if values:
                engine.update(qe.UpdateOperation.set_payload([pid], values))
            return True

        return self._run(name, apply, [pid])

    def delete(self, name: str, ids: list[str]) -> None:
        pids = list(dict.fromkeys(canonical_id(i) for i in ids))
        if pids:
            self._run(name, lambda engine: engine.update(qe.UpdateOperation.delete_points(pids)), pids)

    # -- reads ---------------------------------------------------------------------------------

    def search(self, name: str, vector: Sequence[float] | np.ndarray, *, filter: SearchFilter | None, limit: int, offset: int = 0) -> list[Hit]:
        check_page(limit, offset)
        query = qe.Query.Nearest(as_vector(vector))
        flt = _edge_filter(filter)

        def run(engine: qe.EdgeShard) -> list[Any]:
            exact = engine.info().points_count < EXACT_SEARCH_MAX_POINTS  # microseconds: segment metadata
            request = qe.QueryRequest(
                limit=limit,
                offset=offset,
                query=query,
                filter=flt,
                with_payload=True,
                with_vector=False,
                params=qe.SearchParams(exact=True) if exact else None,
            )
            return engine.query(request)

        return [Hit(str(p.id), float(p.score), _from_engine_payload(p.payload)) for p in self._run(name, run)]

    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[Record]:
        pids = list(dict.fromkeys(canonical_id(i) for i in ids))
        if not pids:
            self._shard(name)  # still report a missing collection
            return []
        found = self._run(name, lambda engine: engine.retrieve(pids, True, with_vectors))
        records = [
            Record(
                str(r.id),
                [float(x) for x in r.vector] if with_vectors and r.vector is not None else None,  # type: ignore[union-attr]
                _from_engine_payload(r.payload),
            )
            for r in found
        ]
        return order_like(pids, records)

    def scroll(self, name: str, *, filter: SearchFilter | None, limit: int, offset: str | None = None) -> tuple[list[Record], str | None]:
        check_page(limit, 0)
        request = qe.ScrollRequest(
            offset=canonical_id(offset) if offset else None, limit=limit, filter=_edge_filter(filter), with_payload=True, with_vector=False
        )
        found, after = self._run(name, lambda engine: engine.scroll(request))
        return [Record(str(r.id), None, _from_engine_payload(r.payload)) for r in found], (str(after) if after is not None else None)

    def count(self, name: str, filter: SearchFilter | None = None) -> int:
        request = qe.CountRequest(exact=True, filter=_edge_filter(filter))
        return int(self._run(name, lambda engine: engine.count(request)))

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("QdrantEdgeStore is closed")

    def _open_engine(self, name: str, dim: int | None) -> qe.EdgeShard:
        """Create or load the shard; with ``dim`` the engine checks an existing shard against it."""
        directory = self._root / name
        old = self._root / f"{name}.old"
        if not (directory / "segments").is_dir() and (old / "segments").is_dir():
            # A crash between the two renames of an index swap: the old copy is complete.
            shutil.rmtree(directory, ignore_errors=True)
            old.rename(directory)
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)) if dim else None
        with _engine_errors:
            if (directory / "segments").is_dir():
                return qe.EdgeShard.load(str(directory), config)
            if config is None:
                raise CollectionNotFound(name)
            return qe.EdgeShard.create(str(directory), config)

    def _shard(self, name: str) -> _Shard:
        with self._lock:
            self._check_open()
            shard = self._shards.get(name)
            if shard is None:
                # After a restart, reads may come before ensure_collection: open what's on disk.
                check_collection_name(name)
                shard = _Shard(self._open_engine(name, None), None, threading.Lock())
                self._shards[name] = shard
            return shard

    def _run(self, name: str, fn: Callable[[qe.EdgeShard], T], writes: Sequence[str] | None = None) -> T:
        """``fn(engine)`` under the collection's lock; ``writes`` = the point ids it changes."""
        shard = self._shard(name)
        with shard.lock:
            if shard.closed:
                raise RuntimeError("QdrantEdgeStore is closed")
            if writes is not None:
                shard.last_write = time.monotonic()
                if shard.journal is not None:
                    shard.journal.update(writes)
            with _engine_errors:
                return fn(shard.engine)
