"""Which app model versions Triton keeps loaded: bounded, whatever the number of versions and apps.

Trained versions are exported into the model repository with ``version_policy: all``; loading a
model that way loads every version folder (each a Python-backend stub, ~38 MB), so memory grew
with every training run. Instead the inference service loads each app model with an explicit
version list (a config override on Triton's load API): the serving version and the most recently
used or announced others, ``keep_versions`` in all. A request for another version loads it on
demand (and drops the least recently used one); at most ``max_models`` app models are loaded
across all apps, the least recently used is unloaded beyond that and loaded again when asked for.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger(__name__)


class Residency:
    def __init__(
        self,
        load: Callable[[str, list[str]], None],
        unload: Callable[[str], None],
        keep_versions: int = 3,
        max_models: int = 16,
    ) -> None:
        if keep_versions < 1 or max_models < 1:
            raise ValueError("keep_versions and max_models must be >= 1")
        self._load = load
        self._unload = unload
        self.keep_versions = keep_versions
        self.max_models = max_models
        self._serving: dict[str, str] = {}
        self._versions: dict[str, OrderedDict[str, None]] = {}  # loaded versions, least recent first
        self._models: OrderedDict[str, None] = OrderedDict()  # loaded models, least recent first
        self._lock = threading.RLock()
        self.loads = 0
        self.unloads = 0

    def announce(self, model: str, version: str, serving: bool) -> None:
        """A new version is in the repository (``model.version.ready``): load it with the kept set."""
        with self._lock:
            if serving or model not in self._serving:
                self._serving[model] = version
            self._want(model, version)

    def set_serving(self, model: str, version: str) -> None:
        with self._lock:
            self._serving[model] = version

    def ensure(self, model: str, version: str) -> None:
        """Before a request for ``model`` ``version``: load it if Triton does not have it (cheap
        when it is loaded already)."""
        with self._lock:
            loaded = self._versions.get(model)
            if loaded is not None and version in loaded:
                loaded.move_to_end(version)
                self._models.move_to_end(model)
                return
            self._want(model, version)

    def reload(self, model: str) -> None:
        """Triton lost ``model`` (it restarted): load the kept versions again."""
        with self._lock:
            versions = list(self._versions.get(model) or ())
            serving = self._serving.get(model)
            if serving and serving not in versions:
                versions.append(serving)
            if versions:
                self._load(model, sorted(versions, key=_order))
                self.loads += 1

    def loaded(self) -> dict[str, list[str]]:
        with self._lock:
            return {m: sorted(vs, key=_order) for m, vs in self._versions.items()}

    def _want(self, model: str, version: str) -> None:
        previous = self._versions.get(model, OrderedDict())
        wanted: OrderedDict[str, None] = OrderedDict(previous)
        wanted[version] = None
        wanted.move_to_end(version)
        serving = self._serving.get(model)
        others = [v for v in reversed(wanted) if v != serving]  # most recent first
        keep = others[: self.keep_versions - (1 if serving else 0)]
        kept: OrderedDict[str, None] = OrderedDict((v, None) for v in reversed(keep))
        if serving:
            kept[serving] = None
            kept.move_to_end(serving, last=False)  # never the least recent: it stays
        if version in kept:
            kept.move_to_end(version)
        self._load(model, sorted(kept, key=_order))  # raises: nothing recorded
        self.loads += 1
        dropped = [v for v in previous if v not in kept]
        if dropped:
            log.info("triton: %s now keeps versions %s (unloaded %s)", model, sorted(kept, key=_order), dropped)
        self._versions[model] = kept
        self._models[model] = None
        self._models.move_to_end(model)
        while len(self._models) > self.max_models:
            old, _ = self._models.popitem(last=False)
            self._versions.pop(old, None)
            try:
                self._unload(old)
                self.unloads += 1
                log.info("triton: unloaded %s (over %d loaded app models; loaded again on demand)", old, self.max_models)
            except Exception as exc:  # noqa: BLE001 - it stays loaded; we forget it and retry next time
                log.warning("triton: could not unload %s: %s", old, exc)


def _order(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (1 << 62, version)
