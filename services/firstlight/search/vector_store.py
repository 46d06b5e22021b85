"""The vector-store interface used by the SearchService, plus the pure helpers both twins share.

Two twins implement it: ``QdrantEdgeStore`` (Qdrant's engine in-process, the embedded default) and
``QdrantClientStore`` (``qdrant_client``: a real server, or its in-memory local mode in tests). One
congruence suite (tests/integration/test_vector_store_congruence.py) holds them to the same results.

Conventions both twins keep:
- distance is cosine; scores are cosine similarities, higher is better, results best first;
- stored vectors are L2-normalised by the engine, so ``retrieve`` returns the *normalised* vector
  (float32 precision), not the one given to ``upsert``;
- ids are canonical lowercase UUID strings (see ``point_id``);
- a collection that was never ``ensure_collection``-ed raises ``CollectionNotFound``;
- retryable engine failures raise ``VectorStoreUnavailable``; bad input raises ``ValueError``.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from firstlight.errors import Unavailable

#: Below this many points a search scans every vector: exact, hence deterministic, and still fast.
EXACT_SEARCH_MAX_POINTS = 20_000

#: Fixed forever: changing it would re-key every stored point.
POINT_ID_NAMESPACE = uuid.UUID("3f6c1d2e-8a47-5b1e-9c0d-6e2f4a7b9c10")

#: Payload fields the filters use, with the index type each gets where the engine supports indexes.
INDEXED_FIELDS: dict[str, str] = {"app_id": "keyword", "concepts": "keyword", "split": "integer", "labeled": "bool"}

# Collection names become directory names in the edge twin, so keep them path-safe everywhere.
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", re.ASCII)  # fullmatch only


class VectorStoreUnavailable(Unavailable):
    """The engine failed in a way worth retrying (server down, timeout, I/O error, store locked)."""


class CollectionNotFound(LookupError):
    """The collection was never created (e.g. nothing has been indexed yet)."""


@dataclass(frozen=True)
class Point:
    id: str
    vector: list[float] | np.ndarray
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Record:
    id: str
    #: The L2-normalised stored vector, or None when not requested.
    vector: list[float] | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilter:
    """Conditions are ANDed; ``concepts_any`` matches points carrying at least one of the concepts."""

    app_id: str
    concepts_any: tuple[str, ...] = ()
    split: int | None = None
    labeled: bool | None = None

    def __post_init__(self) -> None:
        if not self.app_id:
            raise ValueError("SearchFilter.app_id is required")
        # Accept any iterable of concepts but keep the dataclass hashable and immutable.
        object.__setattr__(self, "concepts_any", tuple(self.concepts_any))


@runtime_checkable
class VectorStore(Protocol):
    def ensure_collection(self, name: str, dim: int) -> None:
        """Create the collection (cosine, payload indexes) if missing; ValueError if it exists with another dim."""

    def upsert(self, name: str, points: list[Point]) -> None: ...

    def search(self, name: str, vector: Sequence[float] | np.ndarray, *, filter: SearchFilter | None, limit: int, offset: int = 0) -> list[Hit]:
        """Best first. Exact scan below EXACT_SEARCH_MAX_POINTS points, else the engine's index."""

    def retrieve(self, name: str, ids: list[str], with_vectors: bool = True) -> list[Record]:
        """Records in the order of ``ids`` (deduplicated); missing ids are simply absent."""

    def set_payload(self, name: str, id: str, payload: dict[str, Any]) -> bool:
        """Merge keys into the point's payload; False (and nothing created) if the point doesn't exist."""

    def delete(self, name: str, ids: list[str]) -> None:
        """Idempotent: unknown ids are ignored."""

    def count(self, name: str, filter: SearchFilter | None = None) -> int:
        """Exact count."""

    def scroll(self, name: str, *, filter: SearchFilter | None, limit: int, offset: str | None = None) -> tuple[list[Record], str | None]:
        """One page of points (payloads, no vectors) in id order, from ``offset`` (None: the
        first); returns it and the next page's offset (None after the last page)."""

    def optimize(self, name: str) -> None:
        """Build the ANN index now (blocking). A no-op where the engine indexes by itself."""

    def close(self) -> None:
        """Release the engine; idempotent. Any later call raises RuntimeError."""


def point_id(app_id: str, input_id: str) -> str:
    """Deterministic point id, so a redelivered event upserts the same point instead of a twin."""
    return str(uuid.uuid5(POINT_ID_NAMESPACE, f"{app_id}/{input_id}"))


def canonical_id(id: str) -> str:
    """The lowercase hyphenated form of a UUID string; ValueError for anything else."""
    try:
        return str(uuid.UUID(str(id)))
    except ValueError:
        raise ValueError(f"point id must be a UUID string, got {id!r}") from None


def check_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.fullmatch(name):
        raise ValueError(f"invalid collection name {name!r}: use letters, digits, '_' or '-' (max 128)")
    return name


def check_dim(dim: int) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= 65_536:
        raise ValueError(f"vector dim must be an int in [1, 65536], got {dim!r}")
    return dim


def as_vector(vector: Sequence[float] | np.ndarray) -> list[float]:
    """A plain float list for the engine. Rejects what cosine can't score: both engines would
    silently store NaNs or a zero vector, which then poison or vanish from every ranking."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"vector must be 1-D and non-empty, got shape {arr.shape}")
    norm = float(np.linalg.norm(arr))
    if not math.isfinite(norm) or not np.isfinite(arr).all():
        raise ValueError("vector contains NaN or infinite values")
    if norm == 0.0:
        raise ValueError("zero vector has no cosine direction")
    return arr.tolist()


def check_page(limit: int, offset: int) -> None:
    if limit < 1 or offset < 0:
        raise ValueError(f"need limit >= 1 and offset >= 0, got limit={limit} offset={offset}")


def order_like(ids: list[str], records: Sequence[Record]) -> list[Record]:
    """Engines return retrieved points in their own order; callers get the order they asked for."""
    by_id = {r.id: r for r in records}
    seen: set[str] = set()
    out: list[Record] = []
    for i in ids:
        if i in by_id and i not in seen:
            seen.add(i)
            out.append(by_id[i])
    return out
