"""EfficientNet-Lite0 in ONNX Runtime: the same embeddings and probabilities as
firstlight.models.backbone (torch eager), 3-4.5x faster on CPU (docs/results/photos.md).

The graph is exported from the packaged weights (never downloaded) with torch's legacy
TorchScript exporter (which needs the ``onnx`` package), opset 17, and cached as a file whose
name this module builds from the backbone version, the torch version and the opset: a new
weights revision or exporter gets a new file, a stale one is never loaded. Concurrent
exporters (Triton starts several instances at once) serialise on a lock file and the file
appears atomically.

Input is the uint8 NHWC batch the services send to Triton; normalisation, pooling, the
classifier, L2 normalisation and softmax are inside the graph, so the session's outputs are
exactly ``backbone.embed_and_classify``'s.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from firstlight.models import backbone
from firstlight.models.ort import INPUT, OPSET, cpu_session, export_image_graph

OUTPUTS = ("EMBEDDING", "PROBS")


def onnx_file_name() -> str:
    """Cache file name for this backbone version, torch version and opset (service-built)."""
    import torch

    raw = f"{backbone.BACKBONE_VERSION}.torch{torch.__version__}.opset{OPSET}.onnx"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


def _export_module():  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F

    net = backbone.load_efficientnet("cpu").to(memory_format=torch.contiguous_format)

    class Embed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor):  # type: ignore[no-untyped-def]
            x = image.permute(0, 3, 1, 2).float().sub(backbone._MEAN).div(backbone._SCALE)
            feats = self.net.extract_features(x).mean(dim=(2, 3))
            logits = self.net._fc(feats)
            return F.normalize(feats, dim=1), torch.softmax(logits, dim=1)

    return Embed().eval()


def export_onnx(path: Path) -> Path:
    """Export the backbone to ``path`` (atomic: written beside it, then renamed)."""
    model = export_image_graph(_export_module(), backbone.IMAGE_SIZE, list(OUTPUTS))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def cached_onnx(cache_dir: Path) -> Path:
    """The exported graph under ``cache_dir``, exporting it first if absent (one exporter at a time)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / onnx_file_name()
    if path.is_file():
        return path
    with open(cache_dir / ".export.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():  # another process may have exported it while we waited
            export_onnx(path)
    return path


def ort_threads_from_env(default: int = 1) -> int:
    """Intra-op threads per session, from FIRSTLIGHT_ORT_THREADS (else FIRSTLIGHT_TORCH_THREADS)."""
    for key in ("FIRSTLIGHT_ORT_THREADS", "FIRSTLIGHT_TORCH_THREADS"):
        try:
            return max(1, int(os.environ[key]))
        except (KeyError, ValueError):
            continue
    return default


class OrtBackbone:
    """An ONNX Runtime session over the exported backbone (firstlight.models.ort.cpu_session:
    fp32, all graph optimisations, ``threads`` intra-op threads, no spinning unless ``spin``)."""

    def __init__(self, onnx_path: Path, threads: int = 1, spin: bool = False) -> None:
        self.threads = max(1, threads)
        self.session = cpu_session(onnx_path, self.threads, spin)

    @classmethod
    def from_cache(cls, cache_dir: Path, threads: int | None = None, spin: bool = False) -> OrtBackbone:
        return cls(cached_onnx(cache_dir), threads if threads is not None else ort_threads_from_env(), spin)

    def embed_and_classify(self, batch_uint8_nhwc: np.ndarray, max_chunk: int | None = backbone.CPU_FORWARD_CHUNK) -> tuple[np.ndarray, np.ndarray]:
        """Same contract as backbone.embed_and_classify: (L2-normalised [N,1280], softmax [N,1000])."""
        x = batch_uint8_nhwc
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 [N,H,W,3], got {x.dtype} {x.shape}")
        n = len(x)
        if max_chunk and n > max_chunk:
            # Bounded chunks keep ORT's arena at the size of one chunk's activations.
            parts = [self.embed_and_classify(x[s : s + max_chunk], None) for s in range(0, n, max_chunk)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        emb, probs = self.session.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(x)})
        return emb.astype(np.float32, copy=False), probs.astype(np.float32, copy=False)
