"""Synchronous client for the Triton models the services use: "backbone" and "general".

One gRPC channel per TritonModels, shared by all threads (tritonclient's gRPC client is
thread-safe for unary calls). A batch above the model's max batch size goes as concurrent
chunks, so several model instances work on it at once. Errors are mapped to two types so callers can decide on retries.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from firstlight.models.backbone import EMBEDDING_DIM, IMAGE_SIZE, NUM_CLASSES
from firstlight.triton.residency import Residency

BACKBONE_MODEL = "backbone"
GENERAL_MODEL = "general"
INPUT_NAME = "IMAGE"
EMBEDDING_OUTPUT = "EMBEDDING"
PROBS_OUTPUT = "PROBS"
HEAD_INPUT = "EMBEDDING"
#: Versions of one trained embedder kept loaded (the app's current one and the one before it,
#: which a switch or a head trained on it may still use), and embedders loaded across all apps.
EMBEDDER_KEEP_VERSIONS = 2
MAX_EMBEDDERS = 8
#: Embedder descriptions (names, sizes) cached per ref.
MAX_EMBEDDER_INFOS = 256
DEFAULT_MAX_BATCH_SIZE = 4  # when a config states none (firstlight.triton.tuning sets it by device)
#: Key of the services' Triton access token (FIRSTLIGHT_TRITON_TOKEN). Triton refuses every
#: protocol but health without it when started with --grpc-restricted-protocol /
#: --http-restricted-api (firstlight.triton.server.restricted_args; docs/security.md). Over HTTP
#: the header is the key itself; over gRPC Triton expects it prefixed "triton-grpc-protocol-".
TOKEN_KEY = "firstlight-triton-token"
TOKEN_HEADER = f"triton-grpc-protocol-{TOKEN_KEY}"

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


class TritonModelNotFound(TritonError):
    """Triton has no such model (not loaded, and loading it from the repository failed)."""


class NotAnEmbedder(TritonError):
    """The model exists but does not take one uint8 S×S×3 image and return one vector."""


@dataclass(frozen=True)
class EmbedderInfo:
    """How to call an image-embedding model (a trained visual_embedder) served by Triton."""

    name: str
    version: str  # "" = Triton's latest
    input_name: str
    output_name: str
    image_size: int
    dim: int


def split_model_ref(ref: str) -> tuple[str, str]:
    """ "name@3" -> ("name", "3"); "name" -> ("name", "")."""
    name, _, version = ref.partition("@")
    return name, version


# Output names of an embedding: the visual_embedder's export, and the backbone's.
_EMBEDDING_OUTPUTS = ("embeddings", "EMBEDDING", "embedding", "EMBEDDINGS")


def _translate(exc: InferenceServerException, what: str) -> TritonError | TritonUnavailable:
    status = str(exc.status() or "")
    msg = f"{what}: {exc.message() or exc}"
    # A model that isn't loaded (yet) is also a transient condition during rollouts/restarts:
    # a restarting Triton answers "unknown model ... has no available versions" until it has
    # loaded its models (seen in tests/integration/test_faults.py). Callers only name models
    # they know exist (app versions come from the registry), so "unknown" means "not loaded".
    if "protocol is restricted" in msg:  # no or wrong FIRSTLIGHT_TRITON_TOKEN: retrying cannot help
        return TritonError(f"{msg} (FIRSTLIGHT_TRITON_TOKEN is missing or not Triton's)")
    if status in _RETRYABLE or any(s in msg for s in ("is not ready", "Deadline Exceeded", "has no available versions", "unknown model")):
        return TritonUnavailable(msg)
    return TritonError(msg)


def _unloaded(exc: InferenceServerException) -> bool:
    """Triton does not have the model loaded (unknown to it, or unloaded)."""
    msg = str(exc.message() or exc).lower()
    return "unknown model" in msg or "is not ready" in msg or "not found" in msg


class TritonModels:
    """`embed()` / `classify()` over Triton gRPC, splitting batches above the model's max batch size."""

    def __init__(self, url: str, timeout_s: float = 30.0, model_repository: Path | None = None, access_token: str = "") -> None:
        #: Bounds which app model versions stay loaded (firstlight.triton.residency); None: load all.
        self.residency = None
        #: The same bound for trained image embedders (fl-app embedding models), which this
        #: process loads on first use: the most recently used versions of each, a cap across apps.
        self.embedder_residency: Residency | None = Residency(self.load_versions, self.unload_model, EMBEDDER_KEEP_VERSIONS, MAX_EMBEDDERS)
        self.url = url
        # Sent on every call: a Triton with restricted protocols refuses requests without it.
        self._headers = {TOKEN_HEADER: access_token} if access_token else None
        self.timeout_s = timeout_s
        # Where exported deep models keep meta.json (image size, output dims): their Triton
        # configs leave those variable so versions of different sizes share one model.
        self.model_repository = model_repository
        self._client = grpcclient.InferenceServerClient(url=url)
        self._max_batch: dict[str, int] = {}
        self._embedders: OrderedDict[str, EmbedderInfo] = OrderedDict()  # LRU, at most MAX_EMBEDDER_INFOS
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
            return bool(self._client.is_server_ready(headers=self._headers, client_timeout=t)) and all(
                self._client.is_model_ready(m, headers=self._headers, client_timeout=t) for m in models
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
            cfg = self._client.get_model_config(model, headers=self._headers, as_json=True, client_timeout=min(self.timeout_s, 5.0))
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
                    headers=self._headers,
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

    # -- image-embedding models (trained visual_embedders) -----------------------------------------

    def describe_embedder(self, ref: str) -> EmbedderInfo:
        """Input/output names, image size and dimension of embedding model ``ref`` ("name" or
        "name@version"), from Triton's model metadata; loads the model from the repository when
        Triton does not have it yet (explicit model control). Cached per ref."""
        with self._lock:
            cached = self._embedders.get(ref)
            if cached is not None:
                self._embedders.move_to_end(ref)
        if cached is not None:
            return cached
        name, version = split_model_ref(ref)
        try:
            self._resident_embedder(name, version)
            meta = self._metadata(name, version)
        except (TritonError, TritonUnavailable):
            # Not loaded (explicit model control; Triton restarted; another process's residency
            # left it out), or its version not ready yet (inference may be loading it right now):
            # load it from the repository — blocks until it is loaded.
            if not self._server_live():
                raise TritonUnavailable(f"Triton at {self.url} is not live") from None
            try:
                self._reload_embedder(name, version)
            except TritonError as exc:
                raise TritonModelNotFound(f"model {ref!r} is not served by Triton: {exc}") from None
            try:
                meta = self._metadata(name, version)
            except (TritonError, TritonUnavailable) as exc:
                if not self._server_live():
                    raise
                raise TritonModelNotFound(f"model {ref!r} is not served by Triton: {exc}") from None
        info = _embedder_info(ref, name, version, meta, self.model_repository)
        with self._lock:
            self._embedders[ref] = info
            while len(self._embedders) > MAX_EMBEDDER_INFOS:
                self._embedders.popitem(last=False)
        return info

    def _embedder_version(self, name: str, version: str) -> str:
        """``version``, or for an unversioned ref the repository's newest version ("" when there
        is no local repository to look in: Triton then picks)."""
        if version or self.model_repository is None or not (self.model_repository / name).is_dir():
            return version
        numeric = [int(p.name) for p in (self.model_repository / name).iterdir() if p.is_dir() and p.name.isdigit()]
        return str(max(numeric)) if numeric else ""

    def _resident_embedder(self, name: str, version: str) -> None:
        """Before using an embedder: have its version loaded under the bound (cheap when it is)."""
        wanted = self._embedder_version(name, version)
        if self.embedder_residency is not None and wanted:
            self.embedder_residency.ensure(name, wanted)

    def _reload_embedder(self, name: str, version: str) -> None:
        """Triton does not have it although this process loaded it (a Triton restart, or another
        process loaded the model with other versions): load this process's kept versions again."""
        wanted = self._embedder_version(name, version)
        if self.embedder_residency is None or not wanted:
            self.load_model(name)
            return
        if wanted in self.embedder_residency.loaded().get(name, []):
            self.embedder_residency.reload(name)  # Triton lost what this process had loaded
        else:
            self.embedder_residency.ensure(name, wanted)

    def _server_live(self) -> bool:
        try:
            # live, not ready: Triton reports not-ready while any model is (re)loading
            return bool(self._client.is_server_live(headers=self._headers, client_timeout=min(self.timeout_s, 5.0)))
        except (InferenceServerException, grpc.RpcError):
            return False

    def _metadata(self, name: str, version: str) -> dict:
        try:
            return self._client.get_model_metadata(name, model_version=version, headers=self._headers, as_json=True, client_timeout=min(self.timeout_s, 5.0))
        except InferenceServerException as exc:
            raise _translate(exc, f"metadata of {name}") from exc

    def embed_with(self, ref: str, batch_uint8: np.ndarray) -> np.ndarray:
        """uint8 [N,S,S,3] (S = the model's image size) -> float32 [N,D] from embedding model ``ref``."""
        info = self.describe_embedder(ref)
        self._resident_embedder(info.name, info.version)  # keeps it the most recently used
        size = info.image_size
        if batch_uint8.dtype != np.uint8 or batch_uint8.ndim != 4 or batch_uint8.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 [N,{size},{size},3], got {batch_uint8.dtype} {batch_uint8.shape}")
        n = batch_uint8.shape[0]
        out = np.empty((n, info.dim), dtype=np.float32)
        step = self.max_batch_size(info.name)
        for start in range(0, n, step):
            chunk = np.ascontiguousarray(batch_uint8[start : start + step])
            inp = grpcclient.InferInput(info.input_name, list(chunk.shape), "UINT8")
            inp.set_data_from_numpy(chunk)
            request = dict(
                inputs=[inp],
                model_version=info.version,
                outputs=[grpcclient.InferRequestedOutput(info.output_name)],
                headers=self._headers,
                client_timeout=self.timeout_s,
            )
            try:
                result = self._client.infer(info.name, **request)
            except InferenceServerException as exc:
                if not _unloaded(exc):
                    raise _translate(exc, f"infer {ref}") from exc
                # Triton restarted, or another process's residency unloaded it: load, retry once.
                self._reload_embedder(info.name, info.version)
                try:
                    result = self._client.infer(info.name, **request)
                except InferenceServerException as again:
                    raise _translate(again, f"infer {ref}") from again
            arr = result.as_numpy(info.output_name)
            if arr is None or arr.shape != (chunk.shape[0], info.dim):
                raise TritonError(f"{ref}: unexpected {info.output_name} shape {None if arr is None else arr.shape}")
            out[start : start + chunk.shape[0]] = arr
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
            self._client.load_model(name, headers=self._headers, client_timeout=max(self.timeout_s, 60.0))
        except InferenceServerException as exc:
            raise _translate(exc, f"load {name}") from exc
        with self._lock:
            self._max_batch.pop(name, None)

    def load_versions(self, name: str, versions: list[str]) -> None:
        """Load ``name`` with only ``versions`` (the repository's config.pbtxt with a ``specific``
        version policy, as a config override): other versions are unloaded. Without a local
        repository to read the config from, the whole model is loaded."""
        config_path = self.model_repository / name / "config.pbtxt" if self.model_repository else None
        if config_path is None or not config_path.is_file():
            self.load_model(name)
            return
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2

        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        config.version_policy.Clear()
        config.version_policy.specific.versions.extend(int(v) for v in versions)
        try:
            self._client.load_model(name, config=json_format.MessageToJson(config), headers=self._headers, client_timeout=max(self.timeout_s, 60.0))
        except InferenceServerException as exc:
            raise _translate(exc, f"load {name} {versions}") from exc
        with self._lock:
            self._max_batch.pop(name, None)

    def unload_model(self, name: str) -> None:
        try:
            self._client.unload_model(name, headers=self._headers, client_timeout=max(self.timeout_s, 60.0))
        except InferenceServerException as exc:
            raise _translate(exc, f"unload {name}") from exc
        with self._lock:
            self._max_batch.pop(name, None)

    def _resident(self, model: str, version: str) -> None:
        residency = getattr(self, "residency", None)
        if residency is not None:
            residency.ensure(model, version)

    def _reload(self, model: str) -> None:
        residency = getattr(self, "residency", None)
        if residency is not None:
            residency.reload(model)
        else:
            self.load_model(model)

    def infer_images(self, model: str, version: str, pixels: np.ndarray, output: str = PROBS_OUTPUT) -> np.ndarray:
        """uint8 [N,S,S,3] pixels -> ``output`` [N,...] of a deep app model version (its own S)."""
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"expected uint8 [N,S,S,3], got {pixels.dtype} {pixels.shape}")
        self._resident(model, version)
        outputs = []
        step = self.max_batch_size(model)
        for start in range(0, pixels.shape[0], step):
            chunk = np.ascontiguousarray(pixels[start : start + step])
            inp = grpcclient.InferInput(INPUT_NAME, list(chunk.shape), "UINT8")
            inp.set_data_from_numpy(chunk)
            try:
                result = self._client.infer(
                    model,
                    inputs=[inp],
                    model_version=version,
                    outputs=[grpcclient.InferRequestedOutput(output)],
                    headers=self._headers,
                    client_timeout=self.timeout_s,
                )
            except InferenceServerException as exc:
                raise _translate(exc, f"infer {model} v{version}") from exc
            outputs.append(result.as_numpy(output))
        return np.concatenate(outputs) if outputs else np.empty((0, 0), np.float32)

    def infer_head(self, model: str, version: str, embeddings: np.ndarray) -> np.ndarray:
        """float32 [N,1280] embeddings -> [N,K] probabilities from an app model version."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        self._resident(model, version)
        step = self.max_batch_size(model)
        outputs: dict[int, np.ndarray] = {}

        def one(start: int) -> None:
            chunk = emb[start : start + step]
            inp = grpcclient.InferInput(HEAD_INPUT, list(chunk.shape), "FP32")
            inp.set_data_from_numpy(chunk)
            request = dict(
                inputs=[inp],
                model_version=version,
                outputs=[grpcclient.InferRequestedOutput(PROBS_OUTPUT)],
                headers=self._headers,
                client_timeout=self.timeout_s,
            )
            try:
                result = self._client.infer(model, **request)
            except InferenceServerException as exc:
                if not _unloaded(exc):
                    raise _translate(exc, f"infer {model} v{version}") from exc
                # Triton restarted and lost the app models loaded after its start: load, retry once.
                self._reload(model)
                try:
                    result = self._client.infer(model, **request)
                except InferenceServerException as again:
                    raise _translate(again, f"infer {model} v{version}") from again
            outputs[start] = result.as_numpy(PROBS_OUTPUT)

        if emb.shape[0]:
            self._each(one, range(0, emb.shape[0], step))
        return np.concatenate([outputs[k] for k in sorted(outputs)]) if outputs else np.empty((0, 0), np.float32)


def _exported_meta(repository: Path | None, name: str, version: str) -> dict | None:
    """meta.json of an exported deep version (training.deep.triton_export); the highest version
    when ``version`` is "" (what Triton serves then)."""
    if repository is None or not (repository / name).is_dir():
        return None
    if not version:
        numeric = [int(p.name) for p in (repository / name).iterdir() if p.is_dir() and p.name.isdigit()]
        if not numeric:
            return None
        version = str(max(numeric))
    path = repository / name / version / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _embedder_info(ref: str, name: str, version: str, meta: dict, repository: Path | None = None) -> EmbedderInfo:
    inputs, outputs = meta.get("inputs", []), meta.get("outputs", [])
    if len(inputs) != 1:
        raise NotAnEmbedder(f"model {ref!r} takes {len(inputs)} inputs; an embedder takes one image batch")
    shape = [int(d) for d in inputs[0].get("shape", [])]
    if inputs[0].get("datatype") != "UINT8" or len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
        raise NotAnEmbedder(f"model {ref!r} input is {inputs[0].get('datatype')} {shape}; an embedder takes UINT8 [-1,S,S,3]")
    # By name, not by shape: a classifier's PROBS is also FP32 [-1,K] but is no embedding.
    chosen = next((o for o in outputs if o.get("name") in _EMBEDDING_OUTPUTS), None)
    if chosen is None:
        raise NotAnEmbedder(f"model {ref!r} has outputs {[o.get('name') for o in outputs]} and none is an embedding")
    out_shape = [int(d) for d in chosen.get("shape", [])]
    if chosen.get("datatype") != "FP32" or len(out_shape) != 2:
        raise NotAnEmbedder(f"model {ref!r} output {chosen.get('name')} is {chosen.get('datatype')} {out_shape}, not FP32 [-1,D]")
    size, dim = shape[1], out_shape[1]
    if size <= 0 or dim <= 0:  # variable in the config: the exported version's meta.json says
        exported = _exported_meta(repository, name, version)
        if exported is None:
            raise NotAnEmbedder(f"model {ref!r} has variable image size or dimension and no meta.json in the model repository")
        if exported.get("kind") != "embedder":
            raise NotAnEmbedder(f"model {ref!r} is a {exported.get('kind') or 'head'} model, not an embedder")
        size = int(exported["image_size"])
        dims = next((o["dims"] for o in exported["outputs"] if o["name"] == chosen["name"]), None)
        if not dims or int(dims[-1]) <= 0:
            raise NotAnEmbedder(f"model {ref!r}: meta.json gives no dimension for output {chosen['name']}")
        dim = int(dims[-1])
    return EmbedderInfo(name, version, inputs[0]["name"], chosen["name"], size, dim)
