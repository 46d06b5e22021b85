"""Synchronous client for the Triton models the services use: "backbone" and "general".

One gRPC channel per TritonModels, shared by all threads (tritonclient's gRPC client is
thread-safe for unary calls). A batch above the model's max batch size goes as concurrent
chunks, so several model instances work on it at once. Errors are mapped to two types so callers can decide on retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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
DEFAULT_MAX_BATCH_SIZE = 8  # when a config states none (firstlight.triton.tuning sets it by device)

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
    # A model that isn't loaded (yet) is also a transient condition during rollouts/restarts.
    if status in _RETRYABLE or "is not ready" in msg or "Deadline Exceeded" in msg:
        return TritonUnavailable(msg)
    return TritonError(msg)


class TritonModels:
    """`embed()` / `classify()` over Triton gRPC, splitting batches above the model's max batch size."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url=url)
        self._max_batch: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
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

        def one(start: int) -> None:
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

        self._each(one, range(0, n, step))
        return out

    def _each(self, fn: Callable[[int], None], starts: range) -> None:
        """Run the chunks of one batch at the same time: with several model instances (CPU) they
        execute in parallel instead of one after the other. The first error is raised."""
        if len(starts) == 1:
            fn(starts[0])
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="triton-chunk")
            pool = self._pool
        for future in [pool.submit(fn, s) for s in starts]:
            future.result()

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
        step = self.max_batch_size(model)
        outputs: dict[int, np.ndarray] = {}

        def one(start: int) -> None:
            chunk = emb[start : start + step]
            inp = grpcclient.InferInput(HEAD_INPUT, list(chunk.shape), "FP32")
            inp.set_data_from_numpy(chunk)
            try:
                result = self._client.infer(
                    model,
                    inputs=[inp],
                    model_version=version,
                    outputs=[grpcclient.InferRequestedOutput(PROBS_OUTPUT)],
                    client_timeout=self.timeout_s,
                )
            except InferenceServerException as exc:
                raise _translate(exc, f"infer {model} v{version}") from exc
            outputs[start] = result.as_numpy(PROBS_OUTPUT)

        if emb.shape[0]:
            self._each(one, range(0, emb.shape[0], step))
        return np.concatenate([outputs[k] for k in sorted(outputs)]) if outputs else np.empty((0, 0), np.float32)
