"""Triton Python-backend model for a deep template's version (visual_classifier, _detector,
_embedder): runs the TorchScript module ``model.pt`` that training exported beside this file.

The module takes the uint8 IMAGE batch N×S×S×3 (normalisation is inside it) and returns the
outputs listed in ``meta.json`` in order. Requests queued by dynamic batching are concatenated
into one forward pass. It runs on the instance's GPU when Triton gives it one (instance kind GPU)
and on CPU otherwise, so the same folder serves in the embedded Triton and on GPU nodes."""

import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(folder, "meta.json")) as fh:
            self.meta = json.load(fh)
        self.outputs = [o["name"] for o in self.meta["outputs"]]
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{int(args.get('model_instance_device_id', 0))}")
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(max(1, int(os.environ.get("FIRSTLIGHT_TORCH_THREADS", "1"))))
        self.module = torch.jit.load(os.path.join(folder, "model.pt"), map_location=self.device).eval()

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy() for r in requests]
        sizes = [a.shape[0] for a in arrays]
        batch = torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays))).to(self.device)
        with torch.inference_mode():
            out = self.module(batch)
        if not isinstance(out, (tuple, list)):
            out = (out,)
        out = [o.float().cpu().numpy() for o in out]
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(o[start : start + n])) for name, o in zip(self.outputs, out)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
