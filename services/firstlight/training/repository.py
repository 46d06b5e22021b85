"""The Triton model repository, as the training core's :class:`~firstlight.training.ports.ModelRepository`:
versions are written as ``<root>/<triton model>/<version>/`` folders (heads: weights and the
Python backend; deep templates: TorchScript), atomically, and read back for evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firstlight.domain.heads.linear import load_head
from firstlight.training import export
from firstlight.training.deep.triton_export import export_deep, load_exported


class TritonRepository:
    def __init__(self, root: Path) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        return self._root

    def export_head(self, app_id: str, model_id: str, version: int, head: Any, concepts: list[str]) -> str:
        return export.export_head(self._root, app_id, model_id, version, head.W, head.b, head.activation, concepts, head.normalize)

    def load_head(self, triton_model: str, version: int | str, concepts: list[str]) -> Any:
        return load_head(self._root / triton_model / str(version) / "weights.npz", concepts)

    def export_deep(self, app_id: str, model_id: str, version: int, result: Any, concepts: list[str]) -> str:
        return export_deep(self._root, app_id, model_id, version, result, concepts)

    def load_deep(self, triton_model: str, version: int | str) -> tuple[Any, dict[str, Any]]:
        return load_exported(self._root, triton_model, version)
