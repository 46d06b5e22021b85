"""Triton Python-backend model "backbone": EfficientNet-Lite0 embeddings + ImageNet probabilities.

The network code is firstlight.models.backbone, so Triton and in-process callers run the same
implementation. The stub's interpreter uses the project venv (firstlight.triton.server puts its
bin/ first on PATH), where firstlight is installed; a checkout without that install falls back to
the repo's services/ dir next to this model repository.

CPU instances run the network in ONNX Runtime (firstlight.models.onnx_backbone: 3-4.5x torch
eager, outputs within 1e-5), exported once from the packaged weights into a cache folder (see _onnx_cache_dir). GPU instances, and CPU ones with
FIRSTLIGHT_BACKBONE_RUNTIME=torch, run torch as before.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

# The firstlight tree of the process that started tritonserver (firstlight.triton.server sets it):
# the stub's isolated interpreter ignores PYTHONPATH and would otherwise import the venv's
# install, which may be another checkout than the one under test.
_SERVICES = os.environ.get("FIRSTLIGHT_SERVICES_DIR", "")
if _SERVICES and Path(_SERVICES, "firstlight").is_dir() and _SERVICES not in sys.path:
    sys.path.insert(0, _SERVICES)
try:
    import firstlight.models.backbone  # noqa: F401
except ModuleNotFoundError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "services"))

from firstlight.models.backbone import CPU_FORWARD_CHUNK, configure_torch_threads, embed_and_classify, load_efficientnet


def _onnx_cache_dir() -> Path:
    """FIRSTLIGHT_ONNX_CACHE_DIR (the local stack points it into its data dir), else a private
    folder of this user under the temp dir (an emptyDir in a pod): never the model repository,
    which is the source tree in tests and read-only in a cluster."""
    configured = os.environ.get("FIRSTLIGHT_ONNX_CACHE_DIR")
    if configured:
        return Path(configured)
    folder = Path(tempfile.gettempdir()) / f"firstlight-onnx-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid():  # someone else's folder: do not load a graph from it
        return Path(tempfile.mkdtemp(prefix="firstlight-onnx-"))
    return folder


_OUTPUTS = ("EMBEDDING", "PROBS")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        threads = os.environ.get("FIRSTLIGHT_TORCH_THREADS") or params.get("FIRSTLIGHT_TORCH_THREADS") or "2"
        configure_torch_threads(int(threads))
        runtime = os.environ.get("FIRSTLIGHT_BACKBONE_RUNTIME") or params.get("FIRSTLIGHT_BACKBONE_RUNTIME") or "onnxruntime"

        # KIND_GPU instances get a device id; on CPU-only hosts this stays on CPU.
        use_cuda = torch.cuda.is_available() and args.get("model_instance_kind") != "CPU"
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if use_cuda else "cpu"
        self._logger = pb_utils.Logger
        # CPU: whatever batch the dynamic batcher forms, forward passes stay small, which keeps
        # the stub's heap flat (see CPU_FORWARD_CHUNK). CUDA memory has torch's caching allocator.
        self._chunk = None if use_cuda else CPU_FORWARD_CHUNK
        self._run = None
        if not use_cuda and runtime == "onnxruntime":
            try:
                from firstlight.models.onnx_backbone import OrtBackbone

                session = OrtBackbone.from_cache(_onnx_cache_dir(), threads=int(threads))
                self._run = lambda batch: session.embed_and_classify(batch, max_chunk=self._chunk)
                device = f"cpu (ONNX Runtime, {session.threads} threads)"
            except Exception as exc:  # noqa: BLE001 - no onnxruntime in this image: torch still serves
                self._logger.log_warn(f"backbone: ONNX Runtime unavailable ({exc!r}); running torch eager")
        if self._run is None:
            model = load_efficientnet(device)
            self._run = lambda batch: embed_and_classify(model, batch, max_chunk=self._chunk)
            device = f"{device} (torch, {torch.get_num_threads()} threads)"
        # Warm-up so the first real request doesn't pay for lazy kernel/allocator setup.
        self._run(np.zeros((1, 224, 224, 3), dtype=np.uint8))
        self._logger.log_info(f"backbone ready on {device}")

    def execute(self, requests: list) -> list:
        # The dynamic batcher hands over several requests: run them as one forward pass.
        try:
            images = [pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy() for r in requests]
            batch = images[0] if len(images) == 1 else np.concatenate(images)
            emb, probs = self._run(batch)
        except Exception as exc:  # report to every caller instead of crashing the stub
            err = pb_utils.TritonError(f"backbone inference failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]

        results = {"EMBEDDING": emb, "PROBS": probs}
        responses = []
        start = 0
        for req, img in zip(requests, images):
            end = start + img.shape[0]
            # Ship only what was asked for (the "general" ensemble asks for PROBS only).
            wanted = set(req.requested_output_names()) or set(_OUTPUTS)
            tensors = [pb_utils.Tensor(name, results[name][start:end]) for name in _OUTPUTS if name in wanted]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses

    def finalize(self) -> None:
        self._run = None
