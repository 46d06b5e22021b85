"""``VectorStore`` over ``qdrant_client.QdrantClient`` (1.20 API: ``query_points``).

Used against a real Qdrant server (``url=``) and, in tests, in the client's local mode
(``":memory:"`` or ``path=``). Local mode is a pure-Python brute-force engine: it ignores payload
indexes and search params (and warns about them), so we skip both there; it is also not
thread-safe, so local mode calls are serialised by a lock. Remote calls are not locked: the HTTP
client is thread-safe and the server orders concurrent writes itself.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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

T = TypeVar("T")

#: How long a remote collection's point count is trusted when choosing exact vs. HNSW search;
#: staleness only matters near the threshold, and saves an extra round trip per search.
_SIZE_TTL_S = 30.0

_LOCAL_MISSING = re.compile(r"Collection .+ not found")  # fullmatch only
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _ClientErrors:
    """Maps client exceptions onto the VectorStore contract. ``__exit__ -> None``: never swallows."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            return
        if isinstance(exc, (ResponseHandlingException, ResourceExhaustedResponse)):
            # Connection refused, timeouts, malformed responses, rate limiting.
            raise VectorStoreUnavailable(f"qdrant: {exc}") from exc
        if isinstance(exc, UnexpectedResponse):
            status = exc.status_code
            if status == 404 and b"ollection" in exc.content:
                raise CollectionNotFound(str(exc)) from exc
            if status is None or status in _RETRYABLE_STATUS:
                raise VectorStoreUnavailable(f"qdrant: {exc}") from exc
            if 400 <= status < 500:
                raise ValueError(str(exc)) from exc
        if isinstance(exc, ValueError) and _LOCAL_MISSING.fullmatch(str(exc)):
            raise CollectionNotFound(str(exc)) from exc


_client_errors = _ClientErrors()


def _index_schemas() -> dict[str, models.PayloadSchemaType | models.KeywordIndexParams]:
    schemas: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {key: models.PayloadSchemaType(kind) for key, kind in INDEXED_FIELDS.items()}
    # Tenant index: the server co-locates each app's points, which is how every search filters.
    schemas["app_id"] = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
    return schemas


def _client_filter(f: SearchFilter | None) -> models.Filter | None:
    if f is None:
        return None
    must: list[models.Condition] = [models.FieldCondition(key="app_id", match=models.MatchValue(value=f.app_id))]
    if f.concepts_any:
        must.append(models.FieldCondition(key="concepts", match=models.MatchAny(any=list(f.concepts_any))))
    if f.split is not None:
        must.append(models.FieldCondition(key="split", match=models.MatchValue(value=int(f.split))))
    if f.labeled is not None:
        must.append(models.FieldCondition(key="labeled", match=models.MatchValue(value=bool(f.labeled))))
    return models.Filter(must=must)


class QdrantClientStore:
    def __init__(
        self,
        location: str | None = None,
        *,
        url: str | None = None,
        path: str | None = None,
        api_key: str | None = None,
        timeout: int | None = None,
    ) -> None:
        if sum(x is not None for x in (location, url, path)) > 1:
            raise ValueError("give one of location, url or path")
        if location is None and url is None and path is None:
            location = ":memory:"
        self._local = path is not None or location == ":memory:"
        if self._local:
            # We serialise access ourselves, so the sqlite same-thread check (path mode) only gets
            # in the way of calls from gRPC handler threads.
            self._client = QdrantClient(location=location, path=path, force_disable_check_same_thread=True)
        else:
            self._client = QdrantClient(location=location, url=url, api_key=api_key, timeout=timeout)
        self._lock: AbstractContextManager[Any] = threading.RLock() if self._local else nullcontext()
        self._closed = False
        self._sizes: dict[str, tuple[float, int]] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def ensure_collection(self, name: str, dim: int) -> None:
        check_collection_name(name)
        check_dim(dim)

        def ensure() -> None:
            if not self._client.collection_exists(name):
                try:
                    self._client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
                except (UnexpectedResponse, ValueError):
                    # Another replica may have created it between our check and create.
                    if not self._client.collection_exists(name):
                        raise
            info = self._client.get_collection(name)
            params = info.config.params.vectors
            if not isinstance(params, models.VectorParams) or params.size != dim or params.distance != models.Distance.COSINE:
                raise ValueError(f"collection {name!r} exists with another vector config: {params}")
            if not self._local:
                for key, schema in _index_schemas().items():
                    if key not in info.payload_schema:
                        self._client.create_payload_index(name, key, field_schema=schema, wait=True)

        self._call(ensure)

    def optimize(self, name: str) -> None:
        """No-op: a server builds its HNSW index in the background; local mode has none. Still
        reports a missing collection, like the edge twin."""
        self._call(lambda: self._client.get_collection(name))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._client.close()

    # -- writes --------------------------------------------------------------------------------

    def upsert(self, name: str, points: list[Point]) -> None:
        batch = [models.PointStruct(id=canonical_id(p.id), vector=as_vector(p.vector), payload=dict(p.payload)) for p in points]
        if batch:
            self._call(lambda: self._client.upsert(name, points=batch, wait=True))

    def set_payload(self, name: str, id: str, payload: dict[str, Any]) -> bool:
        pid = canonical_id(id)

        def apply() -> bool:
            # set_payload on a missing id errors (server 404, local KeyError); check first so the
            # answer is a plain False. A concurrent delete on a server can still race us: the 404.
            if not self._client.retrieve(name, [pid], with_payload=False, with_vectors=False):
                return False
            if payload:
                try:
                    self._client.set_payload(name, payload=dict(payload), points=[pid], wait=True)
                except UnexpectedResponse as e:
                    if e.status_code == 404 and b"ollection" not in e.content:
                        return False
                    raise
            return True

        return self._call(apply)

    def delete(self, name: str, ids: list[str]) -> None:
        pids = list(dict.fromkeys(canonical_id(i) for i in ids))
        selector = models.PointIdsList(points=list(pids))
        if pids:
            self._call(lambda: self._client.delete(name, points_selector=selector, wait=True))

    # -- reads ---------------------------------------------------------------------------------

    def search(self, name: str, vector: Sequence[float] | np.ndarray, *, filter: SearchFilter | None, limit: int, offset: int = 0) -> list[Hit]:
        check_page(limit, offset)
        query = as_vector(vector)
        flt = _client_filter(filter)

        def run() -> list[models.ScoredPoint]:
            # Local mode always scans and warns about search params, so only a server gets them.
            params = None if self._local else models.SearchParams(exact=self._points(name) < EXACT_SEARCH_MAX_POINTS)
            return self._client.query_points(
                name,
                query=query,
                query_filter=flt,
                search_params=params,
                limit=limit,
                offset=offset,
                with_payload=True,
                with_vectors=False,
            ).points

        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in self._call(run)]

    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[Record]:
        pids = list(dict.fromkeys(canonical_id(i) for i in ids))

        def fetch() -> list[models.Record]:
            if not pids:
                self._client.get_collection(name)  # still report a missing collection
                return []
            return self._client.retrieve(name, pids, with_payload=True, with_vectors=with_vectors)

        found = self._call(fetch)
        records = [
            Record(
                str(r.id),
                [float(x) for x in r.vector] if with_vectors and isinstance(r.vector, list) else None,
                dict(r.payload or {}),
            )
            for r in found
        ]
        return order_like(pids, records)

    def scroll(self, name: str, *, filter: SearchFilter | None, limit: int, offset: str | None = None) -> tuple[list[Record], str | None]:
        check_page(limit, 0)
        flt = _client_filter(filter)
        start = canonical_id(offset) if offset else None
        found, after = self._call(lambda: self._client.scroll(name, scroll_filter=flt, limit=limit, offset=start, with_payload=True, with_vectors=False))
        return [Record(str(r.id), None, dict(r.payload or {})) for r in found], (str(after) if after is not None else None)

    def count(self, name: str, filter: SearchFilter | None = None) -> int:
        flt = _client_filter(filter)
        return self._call(lambda: self._client.count(name, count_filter=flt, exact=True).count)

    # -- internals -----------------------------------------------------------------------------

    def _points(self, name: str) -> int:
        now = time.monotonic()
        cached = self._sizes.get(name)
        if cached is None or now - cached[0] > _SIZE_TTL_S:
            cached = (now, self._client.get_collection(name).points_count or 0)
            self._sizes[name] = cached
        return cached[1]

    def _call(self, fn: Callable[[], T]) -> T:
        with self._lock, _client_errors:
            if self._closed:
                raise RuntimeError("QdrantClientStore is closed")
            return fn()
