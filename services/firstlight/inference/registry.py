"""Which app model versions are servable, rebuilt from ``model.version.ready`` events (any
``ports.VersionReady``: the process's consumer hands it the decoded events).

Every inference replica replays the (single-partition) topic from the start under a fresh
consumer group, so a new or restarted replica knows every version. A broker with memory storage
(the local stack's) forgets the topic when it restarts, so the registry is also kept as a small
snapshot file in the replica's data directory (written after every change, read at start-up):
an inference restart after a broker restart still serves every app's models. Replaying events
on top of the snapshot is harmless (applying an event twice gives the same state). The snapshot
also keeps each model's replay protection (when its last applied serving change was signed), so a
restarted replica refuses a captured older serving change just as the running one did."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from firstlight.domain import validation
from firstlight.inference.ports import VersionReady

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1


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


def refusal(event: VersionReady) -> str | None:
    """Why an announcement cannot be served (a dead letter's reason), or None. An app model is
    exported under its app's own Triton name (training.export): an event pointing an app's
    model at another app's Triton model (or embedder) is refused."""
    if not (event.app_id and event.model_id and event.version and event.triton_model and event.concepts):
        return "ModelVersionReady lacks app, model, version, Triton model or concepts"
    expected = f"{validation.APP_MODEL_PREFIX}{event.app_id}.{event.model_id}"
    if event.triton_model != expected or not validation.owns_embedding_model(event.app_id, event.embedding_model):
        return (
            f"ModelVersionReady for {event.app_id}/{event.model_id} names models of another app ({event.triton_model[:80]!r}, {event.embedding_model[:80]!r})"
        )
    return None


class Registry:
    def __init__(self, snapshot: Path | None = None) -> None:
        self._models: dict[tuple[str, str], AppModel] = {}
        self._serving_since: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.snapshot = snapshot
        if snapshot is not None:
            self._load(snapshot)

    def stale(self, event: VersionReady, signed_ms: int = 0) -> bool:
        """True for a serving change signed before the one applied last for its (app, model):
        a replayed record (apply ignores it; the caller should not act on it either)."""
        with self._lock:
            return bool(event.serving and signed_ms and signed_ms < self._serving_since.get((event.app_id, event.model_id), 0))

    def apply(self, event: VersionReady, signed_ms: int = 0) -> bool:
        """Learn a version; False when the event was ignored. ``signed_ms``: when the event was
        signed (messaging.signing): a serving change signed before the one applied last is a
        replay and changes nothing (a captured old record cannot roll a model back)."""
        key = (event.app_id, event.model_id)
        with self._lock:
            if event.serving and signed_ms and signed_ms < self._serving_since.get(key, 0):
                return False
            model = self._models.setdefault(key, AppModel(event.app_id, event.model_id))
            version = ServableVersion(
                event.version, event.triton_model, list(event.concepts), event.activation, event.kind, event.image_size,
                event.embedding_model,
            )  # fmt: skip
            serving = event.version if (event.serving or not model.serving) else model.serving
            since = self._serving_since.get(key, 0)
            if event.serving and signed_ms:
                self._serving_since[key] = max(signed_ms, since)
            if model.versions.get(event.version) == version and model.serving == serving:
                if self._serving_since.get(key, 0) != since:
                    self._save()  # the replay protection moved on: it must survive a restart too
                return True  # a replayed event: nothing else changes
            model.versions[event.version] = version
            model.serving = serving
            self._save()
            return True

    def get(self, app_id: str, model_id: str) -> AppModel | None:
        with self._lock:
            return self._models.get((app_id, model_id))

    def for_app(self, app_id: str) -> list[AppModel]:
        with self._lock:
            return [m for (a, _), m in self._models.items() if a == app_id]

    def all(self) -> list[AppModel]:
        with self._lock:
            return list(self._models.values())

    # -- snapshot ---------------------------------------------------------------------
    def _save(self) -> None:
        """Write the snapshot atomically (caller holds the lock). A failure is logged, not
        raised: the snapshot only matters when the broker lost the topic."""
        if self.snapshot is None:
            return
        data = {
            "version": SNAPSHOT_VERSION,
            "models": [
                {
                    "app_id": m.app_id,
                    "model_id": m.model_id,
                    "serving": m.serving,
                    # When the serving change applied last was signed: a restarted replica still
                    # refuses an older captured serving change replayed after the broker lost the topic.
                    "serving_since_ms": self._serving_since.get(key, 0),
                    "versions": [asdict(v) for v in m.versions.values()],
                }
                for key, m in self._models.items()
            ],
        }
        tmp = self.snapshot.with_name(self.snapshot.name + ".tmp")
        try:
            self.snapshot.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as fh:
                json.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self.snapshot)
        except OSError as exc:
            log.warning("model registry snapshot not written to %s: %s", self.snapshot, exc)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("model registry snapshot %s unreadable (%s): rebuilding from events only", path, exc)
            return
        if data.get("version") != SNAPSHOT_VERSION:
            log.warning("model registry snapshot %s has version %r: ignored", path, data.get("version"))
            return
        for m in data.get("models", []):
            model = AppModel(m["app_id"], m["model_id"], serving=m.get("serving", ""))
            for v in m.get("versions", []):
                sv = ServableVersion(**{**v, "concepts": list(v.get("concepts", []))})
                model.versions[sv.version] = sv
            self._models[(model.app_id, model.model_id)] = model
            if int(m.get("serving_since_ms", 0)) > 0:  # absent in snapshots written before it was kept
                self._serving_since[(model.app_id, model.model_id)] = int(m["serving_since_ms"])
        log.info("model registry: %d model(s) restored from %s", len(self._models), path)
