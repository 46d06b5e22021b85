"""Which embedding model's index each app searches, and the switch to a new one in progress.

Every embedding model has its own collection (the base backbone keeps the historical ``inputs``;
a trained embedder ``m`` gets ``emb-<m>-<hash>``), shared by apps and filtered by ``app_id`` like
the base one. Per app, a small state point says which model is *active* (searched) and which one a
switch is filling (*target*); a second point keeps the switch's input-id lists (large, so searches
never read them). Both live in the vector store itself: only the search service touches it, and
the state survives restarts with the vectors it describes. The flip is one upsert of the state
point, so a search sees the old index or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field

from firstlight.models.backbone import BACKBONE_VERSION
from firstlight.search.vector_store import POINT_ID_NAMESPACE, CollectionNotFound, Point, VectorStore

BASE_MODEL = BACKBONE_VERSION
COLLECTION = "inputs"  # the base backbone's index (name kept from before apps could switch)
APP_MODELS = "app_models"


def model_key(embedding_model: str) -> str:
    """App.embedding_model ("" = base) -> the name EmbeddingComputed.model and payloads use."""
    return embedding_model or BASE_MODEL


def model_ref(key: str) -> str:
    """Inverse of :func:`model_key`: what the EmbeddingService is asked to embed with."""
    return "" if key == BASE_MODEL else key


def collection_for(model: str) -> str:
    if model == BASE_MODEL:
        return COLLECTION
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", model)[:80]
    return f"emb-{slug}-{hashlib.sha1(model.encode()).hexdigest()[:10]}"


def _point(kind: str, name: str) -> str:
    # "~" is in no app id or collection name, so these never collide with an input's point id.
    return str(uuid.uuid5(POINT_ID_NAMESPACE, f"~{kind}/{name}"))


@dataclass
class AppModels:
    app_id: str
    active: str = BASE_MODEL
    target: str = ""  # the model a switch is indexing; "" when none runs
    remaining: int = 0  # inputs the switch still has to index
    total: int = 0


@dataclass
class SwitchIds:
    remaining: list[str] = field(default_factory=list)  # ids not yet indexed with the target model
    listed: list[str] = field(default_factory=list)  # every input when the switch began (old index's points to drop)


class ModelRegistry:
    def __init__(self, store: VectorStore, base_dim: int) -> None:
        self.store = store
        self.base_dim = base_dim
        self._dims: dict[str, int] = {COLLECTION: base_dim}
        store.ensure_collection(APP_MODELS, 1)

    # -- per-app state ------------------------------------------------------------------
    def get(self, app_id: str) -> AppModels:
        found = self.store.retrieve(APP_MODELS, [_point("app", app_id)], with_vectors=False)
        if not found:
            return AppModels(app_id)
        p = found[0].payload
        return AppModels(app_id, p["active"], p.get("target", ""), int(p.get("remaining", 0)), int(p.get("total", 0)))

    def put(self, state: AppModels) -> None:
        payload = {"app_id": state.app_id, "active": state.active, "target": state.target, "remaining": state.remaining, "total": state.total}
        self.store.upsert(APP_MODELS, [Point(_point("app", state.app_id), [1.0], payload)])

    def get_ids(self, app_id: str) -> SwitchIds:
        found = self.store.retrieve(APP_MODELS, [_point("switch", app_id)], with_vectors=False)
        if not found:
            return SwitchIds()
        return SwitchIds(list(found[0].payload.get("remaining", [])), list(found[0].payload.get("listed", [])))

    def put_ids(self, app_id: str, ids: SwitchIds) -> None:
        payload = {"app_id": f"~switch-{app_id}", "remaining": ids.remaining, "listed": ids.listed}
        self.store.upsert(APP_MODELS, [Point(_point("switch", app_id), [1.0], payload)])

    def live_collections(self, state: AppModels) -> list[str]:
        """Collections that must follow label changes and deletions: the searched one and the
        one a switch fills."""
        out = [collection_for(state.active)]
        if state.target:
            out.append(collection_for(state.target))
        return out

    # -- collections ----------------------------------------------------------------------
    def ensure(self, model: str, dim: int) -> str:
        """The model's collection, created for vectors of ``dim`` on first use; ValueError if it
        holds vectors of another dimension."""
        name = collection_for(model)
        known = self.dim_of_collection(name)
        if known is None:
            self.store.ensure_collection(name, dim)
            self.store.upsert(APP_MODELS, [Point(_point("collection", name), [1.0], {"app_id": "~collections", "dim": dim})])
            self._dims[name] = dim
        elif known != dim:
            raise ValueError(f"model {model!r} gave a {dim}-d vector; its index holds {known}-d vectors")
        return name

    def dim_of_collection(self, name: str) -> int | None:
        if name in self._dims:
            return self._dims[name]
        try:
            found = self.store.retrieve(APP_MODELS, [_point("collection", name)], with_vectors=False)
        except CollectionNotFound:
            return None
        if not found:
            return None
        self._dims[name] = int(found[0].payload["dim"])
        return self._dims[name]
