"""Failure injection for the vector store, for fault tests and game days: while the file named by
``FIRSTLIGHT_VECTOR_STORE_FAULT_FILE`` exists, every store call raises ``VectorStoreUnavailable``
(what a Qdrant outage looks like to the indexer and the servicer). Unset, nothing is wrapped."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from firstlight.search.vector_store import VectorStore, VectorStoreUnavailable

_CALLS = ("ensure_collection", "upsert", "search", "retrieve", "set_payload", "delete", "count", "scroll", "optimize")


class FaultInjectingStore:
    """Delegates to ``inner`` unless the fault file exists (checked on every call: a stat, ~µs)."""

    def __init__(self, inner: VectorStore, fault_file: Path) -> None:
        self.inner = inner
        self.fault_file = str(fault_file)
        self.injected = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in _CALLS:
            return attr

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if os.path.exists(self.fault_file):
                self.injected += 1
                raise VectorStoreUnavailable(f"injected fault ({self.fault_file} exists)")
            return attr(*args, **kwargs)

        return guarded

    def close(self) -> None:
        self.inner.close()
