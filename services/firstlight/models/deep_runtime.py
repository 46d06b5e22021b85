"""Run one exported deep-template version (visual_classifier, _detector, _embedder) on the uint8
N×S×S×3 pixels Triton receives; deploy/triton/templates/deep/model.py serves a version with it.

A version folder (firstlight.training.deep.triton_export) holds ``model.pt`` (TorchScript, the
whole contract) and, since issue 17, ``model.onnx`` described by ``meta.json["onnx"]``: the same
contract, or for the detector its maps only, followed by a TorchScript ``postprocess`` (decode and
NMS, data-dependent loops that stay in torch). ONNX Runtime runs it on CPU instances; TorchScript
runs GPU instances (no CUDA provider in the onnxruntime wheel), versions exported before ONNX
(no ``model.onnx``: they keep working unchanged) and ``runtime="torch"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

TORCHSCRIPT_FILE = "model.pt"
INPUT = "IMAGE"
RUNTIMES = ("auto", "onnxruntime", "torch")


class DeepRunner:
    """A version's outputs (float32 numpy, in ``meta["outputs"]`` order) for a uint8 batch.

    ``runtime``: ``auto`` (ONNX Runtime when the folder has the graph and ``device`` is the CPU,
    else TorchScript), ``onnxruntime`` (the graph is required) or ``torch``. ``max_chunk`` bounds
    one ONNX Runtime call's batch: its arena grows to the largest batch it saw, and per image
    small batches are no slower on CPU (firstlight.triton.tuning)."""

    def __init__(self, folder: Path, *, device: str = "cpu", threads: int = 1, runtime: str = "auto", spin: bool = False, max_chunk: int | None = 8) -> None:
        import torch

        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
        self.max_chunk = max_chunk
        onnx = self.meta.get("onnx") or {}
        graph = folder / str(onnx.get("file", "")) if onnx else None
        use_ort = runtime != "torch" and device == "cpu" and graph is not None and graph.is_file()
        if runtime == "onnxruntime" and not use_ort:
            raise FileNotFoundError(f"{folder}: no ONNX graph for ONNX Runtime on {device} (exported before ONNX, or a GPU device)")
        if use_ort:
            from firstlight.models.ort import cpu_session

            assert graph is not None
            self.session: Any = cpu_session(graph, threads, spin)
            self.onnx_outputs: list[str] = list(onnx["outputs"])
            post = onnx.get("postprocess")
            self.postprocess: Any = torch.jit.load(str(folder / post), map_location="cpu").eval() if post else None
            self.runtime = "onnxruntime"
            self.threads = max(1, threads)
        else:
            self.device = torch.device(device)
            self.module: Any = torch.jit.load(str(folder / TORCHSCRIPT_FILE), map_location=self.device).eval()
            self.runtime = "torch"
            self.threads = torch.get_num_threads()

    def run(self, pixels: np.ndarray) -> list[np.ndarray]:
        size = int(self.meta["image_size"])
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            # The graph's image axes are fixed at the version's size (the services resize to it).
            raise ValueError(f"expected uint8 [N,{size},{size},3], got {pixels.dtype} {list(pixels.shape)}")
        if self.runtime == "torch":
            return self._torch(pixels)
        n, step = len(pixels), self.max_chunk or len(pixels) or 1
        parts = [self._ort(pixels[s : s + step]) for s in range(0, n, step)]
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))] if parts else []

    def _torch(self, pixels: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in out]

    def _ort(self, pixels: np.ndarray) -> list[np.ndarray]:
        outs = self.session.run(self.onnx_outputs, {INPUT: np.ascontiguousarray(pixels)})
        if self.postprocess is None:
            return [o.astype(np.float32, copy=False) for o in outs]
        import torch

        with torch.inference_mode():
            y = self.postprocess(*(torch.from_numpy(o) for o in outs))
        y = y if isinstance(y, (tuple, list)) else (y,)
        return [t.float().numpy() for t in y]
