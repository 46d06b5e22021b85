"""Search domain logic over the vector store (no grpc): filters, pagination, query vectors, the
text-query blend with an app's labeled examples, and searching through an index switch. It
talks to the outside through ``ports.py`` (the vector store, the query embedder)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firstlight.domain import validation
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from firstlight.search.models import BASE_MODEL, AppModels, ModelRegistry, collection_for, model_ref
from firstlight.search.ports import QueryEmbedder
from firstlight.search.vector_store import CollectionNotFound, Record, SearchFilter, VectorStore, VectorStoreUnavailable, point_id

MAX_PAGE = 1000
MAX_OFFSET = 10_000
MAX_VECTORS = 10_000  # deep pagination is a scan; past this, narrow the filter instead


@dataclass(frozen=True)
class Hit:
    input_id: str
    score: float
    concepts: list[str]
    split: int


def check_page(page_size: int, page_token: str, app_id: str = "") -> tuple[int, int]:
    """(page size, offset) or InvalidArgument (page tokens are scoped to the app)."""
    size = validation.page_size(page_size, default=10, maximum=MAX_PAGE)
    offset = validation.decode_page_token("o", page_token, app_id)
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
    """Searches an app's *active* embedding model's index (see :mod:`firstlight.search.models`);
    ``dim`` is the base backbone's dimension."""

    def __init__(self, store: VectorStore, dim: int) -> None:
        self.store = store
        self.dim = dim
        self.models = ModelRegistry(store, dim)

    def app_models(self, app_id: str) -> AppModels:
        validation.app_id(app_id)
        try:
            return self.models.get(app_id)
        except VectorStoreUnavailable as exc:
            raise Unavailable(f"vector store unavailable: {exc}") from exc

    def _collection(self, app_id: str, model: str | None) -> tuple[str, int]:
        """(collection, dim) of ``model``, or of the app's active model when None."""
        key = self.app_models(app_id).active if model is None else model
        name = collection_for(key)
        return name, self.models.dim_of_collection(name) or self.dim

    def search(
        self, vector: np.ndarray | Sequence[float], flt: SearchFilter, page_size: int, page_token: str, model: str | None = None
    ) -> tuple[list[Hit], str]:
        """``model``: the index of this embedding model (the one ``vector`` was computed with);
        default the app's active one."""
        size, offset = check_page(page_size, page_token, flt.app_id)
        collection, dim = self._collection(flt.app_id, model)
        vec = np.asarray(vector, dtype=np.float32)
        if vec.shape != (dim,):
            raise InvalidArgument(f"query vector has shape {vec.shape}, the index expects ({dim},)")
        try:
            raw = self.store.search(collection, vec, filter=flt, limit=size + 1, offset=offset)
        except CollectionNotFound:
            raw = []
        except VectorStoreUnavailable as exc:
            raise Unavailable(f"vector store unavailable: {exc}") from exc
        hits = [Hit(h.payload["input_id"], float(h.score), list(h.payload.get("concepts", [])), int(h.payload.get("split", 0))) for h in raw[:size]]
        token = validation.encode_page_token("o", offset + size, flt.app_id) if len(raw) > size else ""
        return hits, token

    def _retrieve(self, collection: str, ids: list[str]) -> list[Record]:
        try:
            return self.store.retrieve(collection, ids, with_vectors=True)
        except CollectionNotFound:
            return []
        except VectorStoreUnavailable as exc:
            raise Unavailable(f"vector store unavailable: {exc}") from exc

    def vector_of(self, app_id: str, input_id: str) -> tuple[np.ndarray, str]:
        """The input's stored vector in the app's active index, and that index's model."""
        validation.input_id(input_id)
        model = self.app_models(app_id).active
        found = self._retrieve(collection_for(model), [point_id(app_id, input_id)])
        if not found:  # a switch may have flipped (and dropped the old points) in between
            now = self.app_models(app_id).active
            if now != model:
                model, found = now, self._retrieve(collection_for(now), [point_id(app_id, input_id)])
        if not found or found[0].vector is None:
            raise NotFound(f"input {input_id!r} is not indexed in app {app_id!r} (unknown, or not embedded yet)")
        return np.asarray(found[0].vector, dtype=np.float32), model

    def vectors_of(self, app_id: str, input_ids: Sequence[str]) -> tuple[list[tuple[str, np.ndarray]], str]:
        """Stored vectors of indexed inputs in the app's active index, request order (unknown ids
        are skipped), and that index's model."""
        validation.app_id(app_id)
        if len(input_ids) > MAX_VECTORS:
            raise InvalidArgument(f"{len(input_ids)} ids, over the limit of {MAX_VECTORS} per call")
        ids = [validation.input_id(i) for i in input_ids]
        model = self.app_models(app_id).active
        found = self._retrieve(collection_for(model), [point_id(app_id, i) for i in ids])
        by_input = {r.payload["input_id"]: r.vector for r in found if r.payload.get("app_id") == app_id}
        return [(i, np.asarray(by_input[i], dtype=np.float32)) for i in ids if i in by_input], model

    def concept_prototype(
        self, app_id: str, text: str, probe: np.ndarray | None, limit: int = 256, model: str | None = None
    ) -> tuple[str, np.ndarray, int] | None:
        """If the app has inputs labeled with a concept named like ``text``, the normalised mean
        of their vectors (up to ``limit``, the ones nearest ``probe``; any of them when ``probe``
        is None) and how many there were."""
        collection, dim = self._collection(app_id, model)
        if probe is None:  # any direction will do: the filter picks the examples
            probe = np.zeros(dim, dtype=np.float32)
            probe[0] = 1.0
        wanted = text.strip()
        for name in dict.fromkeys([wanted, wanted.lower(), wanted.capitalize()]):
            try:
                flt = make_filter(app_id, [name])
            except InvalidArgument:
                return None
            try:
                hits = self.store.search(collection, probe, filter=flt, limit=limit)
            except CollectionNotFound:
                return None
            if hits:
                records = self._retrieve(collection, [h.id for h in hits])
                mean = np.mean([np.asarray(r.vector, dtype=np.float32) for r in records], axis=0)
                return name, mean / (np.linalg.norm(mean) + 1e-12), len(records)
        return None

    def count(self, app_id: str, model: str | None = None) -> int:
        collection, _ = self._collection(app_id, model)
        try:
            return self.store.count(collection, make_filter(app_id))
        except CollectionNotFound:
            return 0
        except VectorStoreUnavailable as exc:
            raise Unavailable(f"vector store unavailable: {exc}") from exc


@dataclass(frozen=True)
class TextResult:
    hits: list[Hit]
    next_page_token: str
    interpreted_as: list[tuple[str, float]]  # (concept, weight) the text was read as


#: A search that lands on an index a switch just emptied is tried again on the new one, at
#: most this many times (each retry needs another flip in between).
MAX_SWITCH_RETRIES = 3
PROTOTYPE_EXAMPLES = 256


def prototype_weight(n: int) -> float:
    """How much a text query trusts the app's prototype of ``n`` labeled examples over the
    ImageNet-name bridge: n / (n + 2), so 2 examples count as much as the bridge."""
    return n / (n + 2.0)


def blend(bridge: np.ndarray, concepts: list[tuple[str, float]], name: str, centre: np.ndarray, n: int) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """The bridge's query vector blended with the app's prototype (unit length), and the
    interpretation with the prototype first and the bridge's concepts scaled down."""
    weight = prototype_weight(n)
    vector = weight * centre + (1 - weight) * bridge
    vector = vector / (np.linalg.norm(vector) + 1e-12)
    return vector, [(f"{name} (app prototype, {n} labeled)", weight)] + [(c, s * (1 - weight)) for c, s in concepts]


class Search:
    """The SearchService's queries: embeds them (``QueryEmbedder``) and searches the app's index
    with :class:`Searcher` (blocking calls run in threads)."""

    def __init__(self, searcher: Searcher, embedder: QueryEmbedder) -> None:
        self.searcher = searcher
        self.embedder = embedder

    async def _active(self, app_id: str) -> str:
        return (await asyncio.to_thread(self.searcher.app_models, app_id)).active

    async def by_image(self, flt: SearchFilter, page_size: int, page_token: str, *, image: bytes | None = None, input_id: str = "") -> tuple[list[Hit], str]:
        """Inputs nearest an image (embedded here; None: not given, while empty bytes are a bad
        image the embedder names) or an indexed input's stored vector."""
        app_id = flt.app_id
        check_page(page_size, page_token, app_id)  # fail fast, before embedding the query
        if image is None and not input_id:
            raise InvalidArgument("give either image_bytes or input_id")
        for _ in range(MAX_SWITCH_RETRIES + 1):
            if image is not None:
                # Embedded with the model of the index it searches; the search then names that
                # index, so a switch flipping meanwhile cannot pair a vector with the wrong index.
                model = await self._active(app_id)
                vector = await self.embedder.embed_image(image, app_id, model_ref(model))
            else:
                vector, model = await asyncio.to_thread(self.searcher.vector_of, app_id, input_id)
            hits, token = await asyncio.to_thread(self.searcher.search, vector, flt, page_size, page_token, model)
            # The app flipped to a new index between embedding and searching (the old index's
            # points are gone): search the new one the same way.
            if hits or page_token or await self._active(app_id) == model:
                break
        return hits, token

    async def by_text(self, flt: SearchFilter, text: str, page_size: int, page_token: str) -> TextResult:
        app_id = flt.app_id
        check_page(page_size, page_token, app_id)
        if not text.strip():
            raise InvalidArgument("text is empty")
        model = await self._active(app_id)
        if model != BASE_MODEL:
            return await self._by_prototype(flt, text, page_size, page_token, model)
        vector, concepts = await self.embedder.text_query(text)
        # Once the app has labeled examples of a concept named like the query, its prototype
        # (mean labeled embedding) is a far better query than the ImageNet-name bridge; blend
        # them, trusting the prototype more as its examples grow.
        proto = await asyncio.to_thread(self.searcher.concept_prototype, app_id, text, vector, PROTOTYPE_EXAMPLES, model)
        if proto is not None:
            vector, concepts = blend(vector, concepts, *proto)
        hits, token = await asyncio.to_thread(self.searcher.search, vector, flt, page_size, page_token, model)
        return TextResult(hits, token, concepts)

    async def _by_prototype(self, flt: SearchFilter, text: str, page_size: int, page_token: str, model: str) -> TextResult:
        """A trained embedder's space has no text bridge (that maps names onto the base
        backbone's ImageNet head): a text query is the prototype of the app's inputs labeled with
        a concept of that name."""
        proto = await asyncio.to_thread(self.searcher.concept_prototype, flt.app_id, text, None, PROTOTYPE_EXAMPLES, model)
        if proto is None:
            raise FailedPrecondition(
                f"app {flt.app_id!r} searches with embedding model {model!r}: text search there needs inputs labeled with a concept named {text.strip()!r}"
            )
        name, vector, n = proto
        hits, token = await asyncio.to_thread(self.searcher.search, vector, flt, page_size, page_token, model)
        return TextResult(hits, token, [(f"{name} (app prototype, {n} labeled)", 1.0)])

    async def index_stats(self, app_id: str) -> tuple[AppModels, int]:
        """The app's index state and its count, read under the same state: a switch may flip
        (and empty the old index) between the two reads, so count again until it did not."""
        for _ in range(5):
            state = await asyncio.to_thread(self.searcher.app_models, app_id)
            n = await asyncio.to_thread(self.searcher.count, app_id, state.active)
            if await asyncio.to_thread(self.searcher.app_models, app_id) == state:
                break
        return state, n
