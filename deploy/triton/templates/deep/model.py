"""Triton Python-backend model for a deep template's version (visual_classifier, _detector,
_embedder), copied beside the files training exported (firstlight.training.deep.triton_export).

Each version takes the uint8 IMAGE batch N×S×S×3 (normalisation inside) and returns the outputs
listed in ``meta.json`` in order; requests queued by dynamic batching run as one batch.

- CPU instance and ``model.onnx`` present: ONNX Runtime (all graph optimisations, idle threads
  wait passively), the detector's decode/NMS in TorchScript after it (``decode.pt``).
- GPU instance (Triton gives one when the host has a GPU): TorchScript ``model.pt`` on CUDA; the
  onnxruntime wheel has no CUDA provider.
- No ``model.onnx`` (a graph that did not export cleanly), no firstlight/onnxruntime in this
  Triton image, or FIRSTLIGHT_DEEP_RUNTIME=torch: TorchScript on CPU.

Threads per instance (ONNX Runtime or torch) come from firstlight.triton.tuning, like the
backbone's: FIRSTLIGHT_TORCH_THREADS when set, else one per core up to 4.
Versions exported before ONNX carry their own older copy of this file and keep serving
``model.pt``; this one serves them too (no ``model.onnx``: TorchScript)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

# The firstlight tree of the process that started tritonserver (see the backbone's model.py).
_SERVICES = os.environ.get("FIRSTLIGHT_SERVICES_DIR", "")
if _SERVICES and Path(_SERVICES, "firstlight").is_dir() and _SERVICES not in sys.path:
    sys.path.insert(0, _SERVICES)


def _threads() -> int:
    try:
        from firstlight.config import TritonSettings
        from firstlight.triton.tuning import choose

        return choose(TritonSettings(), device="cpu").torch_threads
    except Exception:  # noqa: BLE001 - no firstlight in this image (or bad settings): the env, else the cores
        return max(1, int(os.environ.get("FIRSTLIGHT_TORCH_THREADS") or min(4, os.cpu_count() or 1)))


class _TorchScript:
    """The fallback when firstlight (or onnxruntime) is not importable in this Triton image."""

    def __init__(self, folder, device):
        self.device = torch.device(device)
        self.module = torch.jit.load(os.path.join(folder, "model.pt"), map_location=self.device).eval()
        self.runtime = "torch"

    def run(self, batch):
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in out]


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(folder, "meta.json")) as fh:
            self.meta = json.load(fh)
        self.outputs = [o["name"] for o in self.meta["outputs"]]
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            device = f"cuda:{int(args.get('model_instance_device_id', 0))}"
        else:
            device = "cpu"
        threads = _threads()
        torch.set_num_threads(threads)  # the torch path, and the detector's decode after ONNX Runtime
        runtime = os.environ.get("FIRSTLIGHT_DEEP_RUNTIME", "auto")
        try:
            from firstlight.models.deep_runtime import DeepRunner

            self.runner = DeepRunner(Path(folder), device=device, threads=threads, runtime="torch" if runtime == "torch" else "auto")
        except ImportError as exc:  # an image without firstlight or onnxruntime: TorchScript serves
            pb_utils.Logger.log_warn(f"deep model: {exc!r}; running TorchScript")
            self.runner = _TorchScript(folder, device)
        pb_utils.Logger.log_info(f"deep model {args['model_name']} v{args['model_version']}: {self.runner.runtime} on {device}, {threads} threads")

    def execute(self, requests):
        try:
            arrays = [pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy() for r in requests]
            out = self.runner.run(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))
        except Exception as exc:  # report to every caller instead of crashing the stub
            err = pb_utils.TritonError(f"deep model inference failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
        responses, start = [], 0
        for a in arrays:
            n = a.shape[0]
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(o[start : start + n])) for name, o in zip(self.outputs, out)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
