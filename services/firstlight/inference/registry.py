"""Which app model versions are servable, rebuilt from ``model.version.ready`` events.

Every inference replica replays the (single-partition) topic from the start under a fresh
consumer group, so a new or restarted replica knows every version without a database."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from firstlight.v1 import events_pb2


@dataclass(frozen=True)
class ServableVersion:
    version: str
    triton_model: str
    concepts: list[str]
    activation: str
    kind: str = ""  # "" (a head on backbone embeddings) or a deep template's kind, e.g. "classifier"
    image_size: int = 0  # side of the uint8 images a deep model takes
    embedding_model: str = ""  # a head's input embeddings: "" the backbone, else an embedder's Triton ref


@dataclass
class AppModel:
    app_id: str
    model_id: str
    versions: dict[str, ServableVersion] = field(default_factory=dict)
    serving: str = ""


class Registry:
    def __init__(self) -> None:
        self._models: dict[tuple[str, str], AppModel] = {}
        self._serving_since: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def apply(self, event: events_pb2.ModelVersionReady, signed_ms: int = 0) -> bool:
        """Learn a version; False when the event was ignored. ``signed_ms``: when the event was
        signed (messaging.signing): a serving change signed before the one applied last is a
        replay and changes nothing (a captured old record cannot roll a model back)."""
        key = (event.app_id, event.model_id)
        with self._lock:
            if event.serving and signed_ms and signed_ms < self._serving_since.get(key, 0):
                return False
            model = self._models.setdefault(key, AppModel(event.app_id, event.model_id))
            model.versions[event.version] = ServableVersion(
                event.version, event.triton_model, list(event.concepts), event.activation, event.kind, event.image_size,
                event.embedding_model,
            )  # fmt: skip
            if event.serving or not model.serving:
                model.serving = event.version
                if signed_ms:
                    self._serving_since[key] = max(signed_ms, self._serving_since.get(key, 0))
            return True

    def get(self, app_id: str, model_id: str) -> AppModel | None:
        with self._lock:
            return self._models.get((app_id, model_id))

    def for_app(self, app_id: str) -> list[AppModel]:
        with self._lock:
            return [m for (a, _), m in self._models.items() if a == app_id]
