"""Triton Python-backend model "backbone": EfficientNet-Lite0 embeddings + ImageNet probabilities.

The network code is firstlight.models.backbone, so Triton and in-process callers run the same
implementation. The stub's interpreter uses the project venv (firstlight.triton.server puts its
bin/ first on PATH), where firstlight is installed; a checkout without that install falls back to
the repo's services/ dir next to this model repository.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

try:
    import firstlight.models.backbone  # noqa: F401
except ModuleNotFoundError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[5] / "services"))

from firstlight.models.backbone import CPU_FORWARD_CHUNK, configure_torch_threads, embed_and_classify, load_efficientnet

_OUTPUTS = ("EMBEDDING", "PROBS")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        threads = os.environ.get("FIRSTLIGHT_TORCH_THREADS") or params.get("FIRSTLIGHT_TORCH_THREADS") or "2"
        configure_torch_threads(int(threads))

        # KIND_GPU instances get a device id; on CPU-only hosts this stays on CPU.
        use_cuda = torch.cuda.is_available() and args.get("model_instance_kind") != "CPU"
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if use_cuda else "cpu"
        self._model = load_efficientnet(device)
        # CPU: whatever batch the dynamic batcher forms, forward passes stay small, which keeps
        # the stub's heap flat (see CPU_FORWARD_CHUNK). CUDA memory has torch's caching allocator.
        self._chunk = None if use_cuda else CPU_FORWARD_CHUNK
        # Warm-up so the first real request doesn't pay for lazy kernel/allocator setup.
        embed_and_classify(self._model, np.zeros((1, 224, 224, 3), dtype=np.uint8))
        self._logger = pb_utils.Logger
        self._logger.log_info(f"backbone ready on {device} with {torch.get_num_threads()} torch threads")

    def execute(self, requests: list) -> list:
        # The dynamic batcher hands over several requests: run them as one forward pass.
        try:
            images = [pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy() for r in requests]
            batch = images[0] if len(images) == 1 else np.concatenate(images)
            emb, probs = embed_and_classify(self._model, batch, max_chunk=self._chunk)
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
        self._model = None
