"""Search domain logic over the vector store (no grpc): filters, pagination, query vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firstlight import validation
from firstlight.errors import InvalidArgument, NotFound, Unavailable
from firstlight.search.indexer import COLLECTION
from firstlight.search.vector_store import SearchFilter, VectorStore, VectorStoreUnavailable, point_id

MAX_PAGE = 1000
MAX_OFFSET = 10_000
MAX_VECTORS = 10_000  # deep pagination is a scan; past this, narrow the filter instead


@dataclass(frozen=True)
class Hit:
    input_id: str
    score: float
    concepts: list[str]
    split: int


def check_page(page_size: int, page_token: str) -> tuple[int, int]:
    """(page size, offset) or InvalidArgument."""
    size = validation.page_size(page_size, default=10, maximum=MAX_PAGE)
    offset = validation.decode_page_token("o", page_token)
    if offset + size > MAX_OFFSET:
        raise InvalidArgument(f"cannot page past {MAX_OFFSET} results; narrow the filter instead")
    return size, offset


def make_filter(app_id: str, concepts: Sequence[str] = (), split: int = 0, labeled: bool | None = None) -> SearchFilter:
    validation.app_id(app_id)
    if split not in (0, 1, 2, 3):
        raise InvalidArgument(f"unknown split {split}")
    return SearchFilter(
        app_id=app_id,
        concepts_any=tuple(validation.concept(c) for c in concepts),
        split=split or None,
        labeled=labeled,
    )


class Searcher:
    def __init__(self, store: VectorStore, dim: int) -> None:
        self.store = store
        self.dim = dim

    def search(self, vector: np.ndarray | Sequence[float], flt: SearchFilter, page_size: int, page_token: str) -> tuple[list[Hit], str]:
        size, offset = check_page(page_size, page_token)
        vec = np.asarray(vector, dtype=np.float32)
        if vec.shape != (self.dim,):
            raise InvalidArgument(f"query vector has shape {vec.shape}, the index expects ({self.dim},)")
        try:
            raw = self.store.search(COLLECTION, vec, filter=flt, limit=size + 1, offset=offset)
        except VectorStoreUnavailable as exc:
            raise Unavailable(f"vector store unavailable: {exc}") from exc
        hits = [
            Hit(h.payload["input_id"], float(h.score), list(h.payload.get("concepts", [])), int(h.payload.get("split", 0)))
            for h in raw[:size]
        ]
        token = validation.encode_page_token("o", offset + size) if len(raw) > size else ""
        return hits, token

    def vector_of(self, app_id: str, input_id: str) -> np.ndarray:
        validation.input_id(input_id)
        try:
            found = self.store.retrieve(COLLECTION, [point_id(app_id, input_id)], with_vectors=True)
        except VectorStoreUnavailable as exc:
            raise Unavailable(f"vector store unavailable: {exc}") from exc
        if not found or found[0].vector is None:
            raise NotFound(f"input {input_id!r} is not indexed in app {app_id!r} (unknown, or not embedded yet)")
        return np.asarray(found[0].vector, dtype=np.float32)

    def vectors_of(self, app_id: str, input_ids: Sequence[str]) -> list[tuple[str, np.ndarray]]:
        """Stored vectors of indexed inputs, request order; unknown ids are skipped."""
        validation.app_id(app_id)
        if len(input_ids) > MAX_VECTORS:
            raise InvalidArgument(f"{len(input_ids)} ids, over the limit of {MAX_VECTORS} per call")
        ids = [validation.input_id(i) for i in input_ids]
        try:
            found = self.store.retrieve(COLLECTION, [point_id(app_id, i) for i in ids], with_vectors=True)
        except VectorStoreUnavailable as exc:
            raise Unavailable(f"vector store unavailable: {exc}") from exc
        by_input = {r.payload["input_id"]: r.vector for r in found if r.payload.get("app_id") == app_id}
        return [(i, np.asarray(by_input[i], dtype=np.float32)) for i in ids if i in by_input]

    def concept_prototype(self, app_id: str, text: str, probe: np.ndarray, limit: int = 256) -> tuple[str, np.ndarray, int] | None:
        """If the app has inputs labeled with a concept named like ``text``, the normalised mean
        of their vectors (up to ``limit``, the ones nearest ``probe``) and how many there were."""
        wanted = text.strip()
        for name in dict.fromkeys([wanted, wanted.lower(), wanted.capitalize()]):
            try:
                flt = make_filter(app_id, [name])
            except InvalidArgument:
                return None
            hits = self.store.search(COLLECTION, probe, filter=flt, limit=limit)
            if hits:
                records = self.store.retrieve(COLLECTION, [h.id for h in hits], with_vectors=True)
                mean = np.mean([np.asarray(r.vector, dtype=np.float32) for r in records], axis=0)
                return name, mean / (np.linalg.norm(mean) + 1e-12), len(records)
        return None

    def count(self, app_id: str) -> int:
        try:
            return self.store.count(COLLECTION, make_filter(app_id))
        except VectorStoreUnavailable as exc:
            raise Unavailable(f"vector store unavailable: {exc}") from exc
