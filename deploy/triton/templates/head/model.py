"""Triton Python-backend model for an app's classifier head (transfer or one-shot).

One folder per version holds ``weights.npz`` (W [K,D], b [K], activation): probabilities are
softmax(E·Wᵀ + b) or sigmoid(E·Wᵀ + b) of the input embeddings. Numpy only, so it loads in
about a second and runs in any Triton image with the Python backend."""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        weights = np.load(os.path.join(folder, "weights.npz"))
        self.W = weights["W"].astype(np.float32)
        self.b = weights["b"].astype(np.float32)
        self.activation = str(weights["activation"])
        self.normalize = bool(weights["normalize"]) if "normalize" in weights else False
        with open(os.path.join(folder, "concepts.json")) as fh:
            self.concepts = json.load(fh)

    def execute(self, requests):
        responses = []
        for request in requests:
            emb = pb_utils.get_input_tensor_by_name(request, "EMBEDDING").as_numpy().astype(np.float32)
            if self.normalize:  # prototype heads score cosine similarity
                emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            logits = emb @ self.W.T + self.b
            if self.activation == "softmax":
                logits = logits - logits.max(axis=1, keepdims=True)
                probs = np.exp(logits)
                probs /= probs.sum(axis=1, keepdims=True)
            else:
                probs = 1.0 / (1.0 + np.exp(-logits))
            out = pb_utils.Tensor("PROBS", probs.astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
