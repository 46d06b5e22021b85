"""Synchronous client for the Triton models the services use: "backbone" and "general".

One gRPC channel per TritonModels, shared by all threads (tritonclient's gRPC client is
thread-safe for unary calls). Errors are mapped to two types so callers can decide on retries.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from firstlight.models.backbone import EMBEDDING_DIM, IMAGE_SIZE, NUM_CLASSES

BACKBONE_MODEL = "backbone"
GENERAL_MODEL = "general"
INPUT_NAME = "IMAGE"
EMBEDDING_OUTPUT = "EMBEDDING"
PROBS_OUTPUT = "PROBS"
HEAD_INPUT = "EMBEDDING"
DEFAULT_MAX_BATCH_SIZE = 32  # matches deploy/triton/model_repository/*/config.pbtxt

# gRPC statuses that mean "server not reachable / overloaded / too slow": worth retrying.
_RETRYABLE = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.CANCELLED",
}


class TritonError(Exception):
    """Triton answered with an error (bad input, model failure): retrying won't help."""


class TritonUnavailable(Exception):
    """Triton couldn't be reached, didn't answer in time, or the model isn't loaded: retryable."""


def _translate(exc: InferenceServerException, what: str) -> TritonError | TritonUnavailable:
    status = str(exc.status() or "")
    msg = f"{what}: {exc.message() or exc}"
    # A model that isn't loaded (yet) is also a transient condition during rollouts/restarts:
    # a restarting Triton answers "unknown model ... has no available versions" until it has
    # loaded its models (seen in tests/integration/test_faults.py). Callers only name models
    # they know exist (app versions come from the registry), so "unknown" means "not loaded".
    if status in _RETRYABLE or any(s in msg for s in ("is not ready", "Deadline Exceeded", "has no available versions", "unknown model")):
        return TritonUnavailable(msg)
    return TritonError(msg)


def _unloaded(exc: InferenceServerException) -> bool:
    """Triton does not have the model loaded (unknown to it, or unloaded)."""
    msg = str(exc.message() or exc).lower()
    return "unknown model" in msg or "is not ready" in msg or "not found" in msg


class TritonModels:
    """`embed()` / `classify()` over Triton gRPC, splitting batches above the model's max batch size."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url=url)
        self._max_batch: dict[str, int] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- health -----------------------------------------------------------------------------------

    def is_ready(self, models: tuple[str, ...] = (BACKBONE_MODEL, GENERAL_MODEL)) -> bool:
        """Server and `models` ready; False (never raises) when unreachable."""
        try:
            t = min(self.timeout_s, 5.0)
            return bool(self._client.is_server_ready(client_timeout=t)) and all(
                self._client.is_model_ready(m, client_timeout=t) for m in models
            )
        except (InferenceServerException, grpc.RpcError):
            return False

    def wait_ready(self, timeout: float = 120.0, models: tuple[str, ...] = (BACKBONE_MODEL, GENERAL_MODEL)) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_ready(models):
            if time.monotonic() > deadline:
                raise TritonUnavailable(f"Triton at {self.url} not ready after {timeout:.0f}s (models {models})")
            time.sleep(0.25)

    # -- inference --------------------------------------------------------------------------------

    def embed(self, batch_uint8: np.ndarray) -> np.ndarray:
        """uint8 [N,224,224,3] -> L2-normalised float32 [N,1280]."""
        return self._infer(BACKBONE_MODEL, EMBEDDING_OUTPUT, batch_uint8, EMBEDDING_DIM)

    def classify(self, batch_uint8: np.ndarray) -> np.ndarray:
        """uint8 [N,224,224,3] -> ImageNet softmax probabilities float32 [N,1000]."""
        return self._infer(GENERAL_MODEL, PROBS_OUTPUT, batch_uint8, NUM_CLASSES)

    def max_batch_size(self, model: str) -> int:
        with self._lock:
            cached = self._max_batch.get(model)
        if cached is not None:
            return cached
        try:
            cfg = self._client.get_model_config(model, as_json=True, client_timeout=min(self.timeout_s, 5.0))
            value = int(cfg["config"].get("max_batch_size", 0)) or DEFAULT_MAX_BATCH_SIZE
        except InferenceServerException as exc:
            raise _translate(exc, f"config of {model}") from exc
        with self._lock:
            self._max_batch[model] = value
        return value

    def _infer(self, model: str, output: str, batch: np.ndarray, dim: int) -> np.ndarray:
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"expected uint8 [N,{IMAGE_SIZE},{IMAGE_SIZE},3], got {batch.dtype} {batch.shape}")
        n = batch.shape[0]
        out = np.empty((n, dim), dtype=np.float32)
        if n == 0:
            return out
        step = self.max_batch_size(model)
        for start in range(0, n, step):
            chunk = np.ascontiguousarray(batch[start : start + step])
            inp = grpcclient.InferInput(INPUT_NAME, list(chunk.shape), "UINT8")
            inp.set_data_from_numpy(chunk)
            try:
                result = self._client.infer(
                    model,
                    inputs=[inp],
                    outputs=[grpcclient.InferRequestedOutput(output)],
                    client_timeout=self.timeout_s,
                )
            except InferenceServerException as exc:
                raise _translate(exc, f"infer {model}") from exc
            arr = result.as_numpy(output)
            if arr is None or arr.shape != (chunk.shape[0], dim):
                raise TritonError(f"{model}: unexpected {output} shape {None if arr is None else arr.shape}")
            out[start : start + chunk.shape[0]] = arr
        return out

    # -- app models (heads on embeddings, see firstlight.training.export) ------------------------

    def load_model(self, name: str) -> None:
        """Load or reload ``name`` from the repository (explicit model control): new version
        folders become servable without restarting Triton."""
        try:
            self._client.load_model(name, client_timeout=max(self.timeout_s, 60.0))
        except InferenceServerException as exc:
            raise _translate(exc, f"load {name}") from exc
        with self._lock:
            self._max_batch.pop(name, None)

    def infer_head(self, model: str, version: str, embeddings: np.ndarray) -> np.ndarray:
        """float32 [N,1280] embeddings -> [N,K] probabilities from an app model version."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        outputs = []
        step = self.max_batch_size(model)
        for start in range(0, emb.shape[0], step):
            chunk = emb[start : start + step]
            inp = grpcclient.InferInput(HEAD_INPUT, list(chunk.shape), "FP32")
            inp.set_data_from_numpy(chunk)
            request = dict(
                inputs=[inp], model_version=version, outputs=[grpcclient.InferRequestedOutput(PROBS_OUTPUT)], client_timeout=self.timeout_s
            )
            try:
                result = self._client.infer(model, **request)
            except InferenceServerException as exc:
                if not _unloaded(exc):
                    raise _translate(exc, f"infer {model} v{version}") from exc
                # Triton restarted and lost the app models loaded after its start: load, retry once.
                self.load_model(model)
                try:
                    result = self._client.infer(model, **request)
                except InferenceServerException as again:
                    raise _translate(again, f"infer {model} v{version}") from again
            outputs.append(result.as_numpy(PROBS_OUTPUT))
        return np.concatenate(outputs) if outputs else np.empty((0, 0), np.float32)
