"""Python SDK: one client object over the services' gRPC APIs.

    from firstlight.sdk import Firstlight
    with Firstlight.from_stack() as fl:
        fl.create_app("pets", exist_ok=True)
        fl.upload_folder("pets", "photos/")          # class sub-folders become concepts
        fl.wait_indexed("pets", timeout=120)
        hits = fl.search_by_text("pets", "elephant")

Every call carries an API key (``authorization: Bearer <key>``): ``api_key=``, else the
FIRSTLIGHT_API_KEY environment variable, else (``from_stack``) the local stack's admin key.
``tls_root_cert=`` (PEM bytes or a file) makes the client use TLS.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from firstlight.clients.policy import IDEMPOTENT_RPCS
from firstlight.runtime.channels import client_channel
from firstlight.runtime.retry import CHANNEL_OPTIONS, DEFAULT_POLICY, RetryPolicy
from firstlight.stack import ADMIN_KEY_ENTRY, read_stack_file
from firstlight.validation import INPUT_ID
from firstlight.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    curation_pb2,
    curation_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = {"": 0, "train": 1, "validation": 2, "test": 3}
#: Side-effect-free RPCs retry on UNAVAILABLE; the list is the clients package's (one policy).
#: Uploads are retried separately (``upload``: every item gets a client-side id first, so a resend
#: cannot duplicate).


class _RetryingStub:
    """A generated stub whose side-effect-free unary methods retry by the client's policy."""

    def __init__(self, stub: object, policy: RetryPolicy) -> None:
        self._stub = stub
        self._policy = policy

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        method = getattr(self._stub, name)
        if "UnaryUnary" not in type(method).__name__:
            return method  # streams: a refused stream cannot be replayed from its iterator
        # Any unary call the server refused for the key's rate limit is retried after the wait
        # it names: the refusal comes before the RPC does anything, so even writes are safe.
        limited = lambda *args, **kw: honour_rate_limit(lambda: method(*args, **kw))  # noqa: E731
        if name not in IDEMPOTENT_RPCS:
            return limited
        return lambda *args, **kw: self._policy.call(lambda: limited(*args, **kw))


#: How often and how long in all the SDK waits out a key's rate limit before giving up.
RATE_LIMIT_ATTEMPTS = 6
RATE_LIMIT_MAX_WAIT_S = 30.0


def retry_after_s(exc: BaseException) -> float | None:
    """The wait a RESOURCE_EXHAUSTED refusal asks for (trailing metadata ``retry-after-ms``, set
    by the per-key rate limit); None for any other error (a size limit is not worth retrying)."""
    if not isinstance(exc, grpc.RpcError) or exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
        return None
    for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "retry-after-ms":
            try:
                return max(0.0, float(value)) / 1000.0
            except (TypeError, ValueError):
                return None
    return None


def honour_rate_limit(call: Callable[[], Any], attempts: int = RATE_LIMIT_ATTEMPTS, max_wait_s: float = RATE_LIMIT_MAX_WAIT_S) -> Any:
    """``call()``, retried after the server's ``retry-after-ms`` while the key is rate-limited
    (at most ``attempts`` tries and ``max_wait_s`` of waiting; then the refusal is raised)."""
    waited = 0.0
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except grpc.RpcError as exc:
            wait = retry_after_s(exc)
            if wait is None or attempt == attempts or waited + wait > max_wait_s:
                raise
            wait += random.uniform(0.0, 0.05)  # clients refused together do not return in lockstep
            time.sleep(wait)
            waited += wait
    raise AssertionError("unreachable")


class FirstlightError(Exception):
    """A failed call, with the service's status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DetectedRegion:
    """One object a detector model found: concept, score, box (x0, y0, x1, y1) in [0, 1] of the image."""

    concept: str
    score: float
    box: tuple[float, float, float, float]


def region_protos(regions: Iterable[Any]) -> list[common_pb2.Region]:
    """Box labels as common.Region. Each region is ``(concept, (x0, y0, x1, y1))``,
    ``(concept, x0, y0, x1, y1)``, ``{"concept": ..., "box": [x0, y0, x1, y1]}``, or an object with ``concept`` and either ``box`` (a
    :class:`DetectedRegion`, a common.Region) or ``x0..y1`` (the detector's ``Box``). Boxes are
    normalised to the image; the server validates them (INVALID_ARGUMENT naming the field)."""
    out = []
    for r in regions:
        if isinstance(r, common_pb2.Region):
            out.append(r)
            continue
        if isinstance(r, dict):  # JSON: {"concept": ..., "box": [x0, y0, x1, y1]}
            concept, box = r["concept"], r["box"]
        elif hasattr(r, "concept"):
            concept = r.concept
            box = getattr(r, "box", None)
            if box is None:
                box = (r.x0, r.y0, r.x1, r.y1)
            elif isinstance(box, common_pb2.BoundingBox):
                box = (box.x0, box.y0, box.x1, box.y1)
        else:
            concept, *rest = r
            box = rest[0] if len(rest) == 1 else rest
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append(common_pb2.Region(concept=concept, box=common_pb2.BoundingBox(x0=x0, y0=y0, x1=x1, y1=y1)))
    return out


@dataclass
class UploadItem:
    image_bytes: bytes
    concepts: list[str] = field(default_factory=list)
    id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    split: str = ""
    #: Box labels (see :func:`region_protos` for the accepted forms); their concepts are added.
    regions: list[Any] = field(default_factory=list)


@dataclass
class UploadReport:
    input_ids: list[str] = field(default_factory=list)
    failures: list[ingestion_pb2.InputFailure] = field(default_factory=list)
    seconds: float = 0.0


def id_for_path(rel: Path) -> str:
    """A stable input id from a file's path, so uploading a folder twice adds nothing twice."""
    candidate = re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(rel.parts))
    if INPUT_ID.fullmatch(candidate) and candidate == "_".join(rel.parts).replace(" ", "_"):
        return candidate
    return "f-" + hashlib.sha256(str(rel).encode()).hexdigest()[:24]


def folder_items(folder: Path) -> list[UploadItem]:
    """Images under ``folder``; a file in ``folder/<name>/`` is labeled with concept <name>.
    Input ids derive from the relative path (``cat/001.jpg`` → ``cat_001.jpg``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory")
    items = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            rel = path.relative_to(folder)
            concepts = [rel.parts[0]] if len(rel.parts) > 1 else []
            items.append(UploadItem(path.read_bytes(), concepts, id=id_for_path(rel), metadata={"filename": str(rel)}))
    return items


def _wrap_errors(fn: Callable) -> Callable:  # type: ignore[type-arg]
    def inner(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise FirstlightError(exc.code(), exc.details()) from None  # type: ignore[attr-defined]

    inner.__doc__ = fn.__doc__
    inner.__name__ = fn.__name__
    return inner


class Firstlight:
    """Client for a Firstlight deployment. Use as a context manager to close its channels."""

    def __init__(
        self, ingestion: str, search: str, inference: str, training: str = "", timeout_s: float = 60.0,
        *, api_key: str | None = None, tls_root_cert: str | Path | bytes | None = None,
        retry: RetryPolicy = DEFAULT_POLICY, embedding: str = "", curation: str = "",
    ) -> None:
        opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20), *CHANNEL_OPTIONS]
        addrs = [ingestion, search, inference] + ([training] if training else [])
        key = api_key if api_key is not None else os.environ.get("FIRSTLIGHT_API_KEY", "")
        self._channels = [client_channel(a, api_key=key, tls_root_cert=tls_root_cert, options=opts) for a in addrs]
        self.retry = retry
        # Every call carries a deadline (timeout_s); side-effect-free ones retry on UNAVAILABLE.
        self.ingestion = _RetryingStub(ingestion_pb2_grpc.IngestionServiceStub(self._channels[0]), retry)
        # API keys are served by the ingestion process (AuthService).
        self.auth = _RetryingStub(auth_pb2_grpc.AuthServiceStub(self._channels[0]), retry)
        self.search = _RetryingStub(search_pb2_grpc.SearchServiceStub(self._channels[1]), retry)
        self.inference = _RetryingStub(inference_pb2_grpc.InferenceServiceStub(self._channels[2]), retry)
        self.training = _RetryingStub(training_pb2_grpc.TrainingServiceStub(self._channels[3]), retry) if training else None
        # The curation service (its own process and port).
        self.curation = None
        if curation:
            self._channels.append(client_channel(curation, api_key=key, tls_root_cert=tls_root_cert, options=opts))
            self.curation = _RetryingStub(curation_pb2_grpc.CurationServiceStub(self._channels[-1]), retry)
        # The embedding service (the backbone every index and model is built on), for
        # :meth:`embed_images`; optional since deployments need not expose it.
        self.embedding = None
        if embedding:
            self._channels.append(client_channel(embedding, api_key=key, tls_root_cert=tls_root_cert, options=opts))
            self.embedding = _RetryingStub(embedding_pb2_grpc.EmbeddingServiceStub(self._channels[-1]), retry)
        self.timeout_s = timeout_s

    @classmethod
    def from_stack(cls, data_dir: str | Path = ".firstlight", **kw) -> "Firstlight":  # type: ignore[no-untyped-def]
        """Connect to the local stack started by ``firstlight up`` in ``data_dir``."""
        return cls.from_addresses(read_stack_file(Path(data_dir)), **kw)

    @classmethod
    def from_addresses(cls, addrs: dict[str, str], **kw) -> "Firstlight":  # type: ignore[no-untyped-def]
        """``addrs`` as in stack.json; its admin key is used unless ``api_key=`` or
        FIRSTLIGHT_API_KEY says otherwise."""
        kw.setdefault("api_key", os.environ.get("FIRSTLIGHT_API_KEY") or addrs.get(ADMIN_KEY_ENTRY, ""))
        kw.setdefault("embedding", addrs.get("embedding", ""))
        kw.setdefault("curation", addrs.get("curation", ""))
        return cls(addrs["ingestion"], addrs["search"], addrs["inference"], addrs.get("training", ""), **kw)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> "Firstlight":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- API keys (admin key) ---------------------------------------------------------
    @_wrap_errors
    def create_api_key(self, app_id: str, name: str = "") -> tuple[auth_pb2.ApiKey, str]:
        """A new key for ``app_id``: (its record, the full key). The key is shown only here."""
        resp = self.auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(app_id=app_id, name=name), timeout=self.timeout_s)
        return resp.key, resp.secret

    @_wrap_errors
    def list_api_keys(self, app_id: str, include_revoked: bool = False) -> list[auth_pb2.ApiKey]:
        req = auth_pb2.ListApiKeysRequest(app_id=app_id, include_revoked=include_revoked)
        return list(self.auth.ListApiKeys(req, timeout=self.timeout_s).keys)

    @_wrap_errors
    def revoke_api_key(self, app_id: str, key_id: str) -> auth_pb2.ApiKey:
        return self.auth.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(app_id=app_id, key_id=key_id), timeout=self.timeout_s)

    # -- apps & inputs ----------------------------------------------------------------
    @_wrap_errors
    def create_app(self, app_id: str, name: str = "", exist_ok: bool = False) -> common_pb2.App:
        """Create an app (admin key). With ``exist_ok``, an existing app is returned first, so
        an app's own key can call this for its app (creating needs the admin key)."""
        if exist_ok:
            try:
                return self.ingestion.GetApp(ingestion_pb2.GetAppRequest(id=app_id), timeout=self.timeout_s)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    raise
        try:
            return self.ingestion.CreateApp(ingestion_pb2.CreateAppRequest(id=app_id, name=name), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            if exist_ok and exc.code() == grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                return self.ingestion.GetApp(ingestion_pb2.GetAppRequest(id=app_id), timeout=self.timeout_s)
            raise

    @_wrap_errors
    def upload(
        self,
        app_id: str,
        items: Sequence[UploadItem],
        *,
        chunk: int = 256,
        on_progress: Callable[[int], None] | None = None,
    ) -> UploadReport:
        """Stream ``items`` (StreamInputs, ``chunk`` per call); bad images are reported, not fatal.

        Items without an id get one here (a uuid), so a chunk cut off by a restarting service
        is sent again without duplicating what the first attempt stored: on a resend, an id the
        interrupted attempt had already sent that comes back ALREADY_EXISTS counts as accepted."""
        report = UploadReport()
        start = time.perf_counter()
        ids = [item.id or uuid.uuid4().hex for item in items]
        for begin in range(0, len(items), chunk):
            part = items[begin : begin + chunk]
            sent: set[int] = set()  # offsets in `part` that any attempt has put on the wire

            def messages(part: Sequence[UploadItem] = part, begin: int = begin, sent: set[int] = sent) -> Iterator[ingestion_pb2.StreamInputsRequest]:
                for offset, item in enumerate(part):
                    first = offset not in sent
                    sent.add(offset)
                    yield ingestion_pb2.StreamInputsRequest(
                        app_id=app_id,
                        input=common_pb2.InputSpec(
                            id=ids[begin + offset],
                            image_bytes=item.image_bytes,
                            concepts=item.concepts,
                            metadata=item.metadata,
                            split=SPLITS[item.split],  # type: ignore[arg-type]
                            regions=region_protos(item.regions),
                        ),
                    )
                    if on_progress and first:
                        on_progress(1)

            attempt: dict = {"n": 0, "sent_before": set()}  # attempts so far; what was sent before the last

            def send(part: Sequence[UploadItem] = part, attempt: dict = attempt, sent: set[int] = sent) -> ingestion_pb2.StreamInputsResponse:
                attempt["n"] += 1
                attempt["sent_before"] = set(sent)
                return self.ingestion.StreamInputs(messages(), timeout=self.timeout_s * 10)

            resp = self.retry.call(send)
            accepted = list(resp.input_ids)
            for failure in resp.failures:
                if failure.code == "ALREADY_EXISTS" and attempt["n"] > 1 and failure.index in attempt["sent_before"]:
                    accepted.append(failure.id)  # stored by the interrupted attempt
                    continue
                failure.index += begin
                report.failures.append(failure)
            order = {input_id: n for n, input_id in enumerate(ids[begin : begin + chunk])}
            report.input_ids += sorted(accepted, key=lambda i: order.get(i, len(order)))
        report.seconds = time.perf_counter() - start
        return report

    def upload_folder(self, app_id: str, folder: str | Path, **kw) -> UploadReport:  # type: ignore[no-untyped-def]
        return self.upload(app_id, folder_items(Path(folder)), **kw)

    @_wrap_errors
    def get_input(self, app_id: str, input_id: str) -> common_pb2.Input:
        return self.ingestion.GetInput(ingestion_pb2.GetInputRequest(app_id=app_id, input_id=input_id), timeout=self.timeout_s)

    @_wrap_errors
    def list_inputs(self, app_id: str, *, concepts: Iterable[str] = (), page_size: int = 100) -> Iterator[common_pb2.Input]:
        token = ""
        while True:
            resp = self.ingestion.ListInputs(
                ingestion_pb2.ListInputsRequest(
                    app_id=app_id, page_size=page_size, page_token=token, filter=common_pb2.InputFilter(concepts=list(concepts))
                ),
                timeout=self.timeout_s,
            )
            yield from resp.inputs
            token = resp.next_page_token
            if not token:
                return

    @_wrap_errors
    def list_concepts(self, app_id: str) -> list[common_pb2.Concept]:
        return list(self.ingestion.ListConcepts(ingestion_pb2.ListConceptsRequest(app_id=app_id), timeout=self.timeout_s).concepts)

    # -- search -----------------------------------------------------------------------
    @_wrap_errors
    def indexed_count(self, app_id: str) -> int:
        return self.search.GetIndexStats(search_pb2.GetIndexStatsRequest(app_id=app_id), timeout=self.timeout_s).indexed_count

    def wait_indexed(
        self, app_id: str, count: int, timeout: float = 300.0, on_progress: Callable[[int], None] | None = None
    ) -> float:
        """Wait until ``count`` inputs of the app are searchable; returns the seconds waited."""
        start = time.perf_counter()
        while True:
            n = self.indexed_count(app_id)
            if on_progress:
                on_progress(n)
            if n >= count:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"only {n} of {count} inputs indexed after {timeout:.0f}s")
            time.sleep(0.25)

    def wait_labels_visible(self, app_id: str, labeled: dict[str, str], timeout: float = 120.0) -> None:
        """Label changes reach the search index asynchronously (``annotations.changed``): wait
        until the last labeled input of each concept is found under that concept, so the next
        search sees the labels. ``labeled`` maps input id → concept, in labeling order."""
        last = {concept: input_id for input_id, concept in labeled.items()}
        deadline = time.monotonic() + timeout
        for concept, input_id in last.items():
            while time.monotonic() < deadline:
                hits = self.search_by_image(app_id, input_id=input_id, top_k=1, concepts=[concept]).hits
                if hits and hits[0].input_id == input_id:
                    break
                time.sleep(0.2)

    @_wrap_errors
    def search_by_image(
        self, app_id: str, *, image: bytes | None = None, input_id: str = "", top_k: int = 10, concepts: Iterable[str] = ()
    ) -> search_pb2.SearchResponse:
        req = search_pb2.SearchByImageRequest(app_id=app_id, page_size=top_k, filter=common_pb2.InputFilter(concepts=list(concepts)))
        if image is not None:
            req.image_bytes = image
        else:
            req.input_id = input_id
        return self.search.SearchByImage(req, timeout=self.timeout_s)

    @_wrap_errors
    def search_by_text(self, app_id: str, text: str, *, top_k: int = 10) -> search_pb2.SearchResponse:
        return self.search.SearchByText(
            search_pb2.SearchByTextRequest(app_id=app_id, text=text, page_size=top_k), timeout=self.timeout_s
        )

    # -- embedding model -------------------------------------------------------------
    @_wrap_errors
    def embed_images(self, images: Sequence[bytes], *, model: str = "", app_id: str = "") -> list[list[float]]:
        """Embeddings of encoded images from the embedding service, one per image, in order.
        ``model`` empty (or "backbone"): the base backbone the live index and transfer models use;
        else one of ``app_id``'s own trained visual_embedder models by model id ("emb" or
        "emb@2"; an app key's own app when ``app_id`` is empty). Send batches of at most a few
        dozen images per call."""
        if self.embedding is None:
            raise ValueError("this client has no embedding service address")
        request = embedding_pb2.EmbedImagesRequest(images=list(images), model=model, app_id=app_id)
        resp = self.embedding.EmbedImages(request, timeout=self.timeout_s * 5)
        return [list(e.vector) for e in resp.embeddings]

    @_wrap_errors
    def set_embedding_model(self, app_id: str, model_id: str = "", version: str = "") -> ingestion_pb2.SetEmbeddingModelResponse:
        """Switch the app's image-embedding model to ``version`` (the latest when empty) of its
        own trained ``visual_embedder`` model ``model_id``; no model switches back to the base
        backbone. Inputs are re-embedded and re-indexed in the background; searches keep using
        the old index until the new one holds every input (see :meth:`wait_embedding_model`)."""
        ref = model_id + (f"@{version}" if model_id and version else "")
        return self.ingestion.SetEmbeddingModel(
            ingestion_pb2.SetEmbeddingModelRequest(app_id=app_id, embedding_model=ref), timeout=max(self.timeout_s, 180.0)
        )

    @_wrap_errors
    def index_stats(self, app_id: str) -> search_pb2.IndexStats:
        """Searchable inputs, the embedding model searches use, and a running switch's progress."""
        return self.search.GetIndexStats(search_pb2.GetIndexStatsRequest(app_id=app_id), timeout=self.timeout_s)

    def wait_embedding_model(
        self, app_id: str, timeout: float = 3600.0, on_progress: Callable[[search_pb2.IndexStats], None] | None = None
    ) -> search_pb2.IndexStats:
        """Wait until the app's searches use the embedding model it was last switched to."""
        wanted = self.ingestion.GetApp(ingestion_pb2.GetAppRequest(id=app_id), timeout=self.timeout_s).embedding_model
        deadline = time.monotonic() + timeout
        while True:
            stats = self.index_stats(app_id)
            if on_progress:
                on_progress(stats)
            # The base backbone's index reports the backbone's version string
            # (firstlight.models.backbone.BACKBONE_VERSION, not imported here: it pulls in torch).
            if not stats.switching_to and (stats.model == wanted or (not wanted and stats.model.startswith("efficientnet-lite"))):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"app {app_id} still searches {stats.model!r} after {timeout:.0f}s ({stats.switch_remaining} inputs to go)")
            time.sleep(0.25)

    # -- labeling ---------------------------------------------------------------------
    @_wrap_errors
    def bulk_label(
        self,
        app_id: str,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        input_ids: Iterable[str] = (),
        text: str = "",
        image: bytes = b"",
        like_input: str = "",
        min_score: float = 0.0,
        max_results: int = 100,
        only_unlabeled: bool = False,
        dry_run: bool = False,
    ) -> ingestion_pb2.BulkAnnotateResponse:
        """Label (add), un-label (remove) or relabel (both) a hand-picked list or every result of a
        search by text / image / input above ``min_score``, in one call."""
        sel = ingestion_pb2.BulkSelection(
            input_ids=list(input_ids), search_text=text, search_image=image, search_input_id=like_input,
            min_score=min_score, max_results=max_results,
            filter=common_pb2.InputFilter(labeled=common_pb2.LABELED_FILTER_UNLABELED if only_unlabeled else 0),  # type: ignore[arg-type]
        )
        return self.ingestion.BulkAnnotate(
            ingestion_pb2.BulkAnnotateRequest(app_id=app_id, selection=sel, add_concepts=list(add), remove_concepts=list(remove), dry_run=dry_run),
            timeout=self.timeout_s,
        )

    # -- training ---------------------------------------------------------------------
    def _training(self) -> training_pb2_grpc.TrainingServiceStub:
        if self.training is None:
            raise ValueError("this client has no training service address")
        return self.training

    @_wrap_errors
    def create_dataset(
        self, app_id: str, dataset_id: str, *, counts: tuple[int, int, int] | None = None,
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0, concepts: Iterable[str] = (), write_splits: bool = True,
        from_inputs: bool = False,
    ) -> training_pb2.Dataset:
        """Freeze the labeled inputs into a dataset version. ``from_inputs``: keep the split each
        input already has (inputs without one: train) instead of drawing a stratified split."""
        spec = training_pb2.SplitSpec(seed=seed, from_inputs=from_inputs)
        if counts:
            spec.train_count, spec.validation_count, spec.test_count = counts
        else:
            spec.train_fraction, spec.validation_fraction, spec.test_fraction = fractions
        return self._training().CreateDataset(
            training_pb2.CreateDatasetRequest(app_id=app_id, dataset_id=dataset_id, concepts=list(concepts), split=spec, write_splits_to_inputs=write_splits),
            timeout=self.timeout_s * 5,
        )

    @_wrap_errors
    def create_model(self, app_id: str, model_id: str, concepts: Iterable[str], *, template: str = "transfer_classifier", settings: dict[str, str] | None = None, exist_ok: bool = False) -> training_pb2.Model:
        try:
            return self._training().CreateModel(
                training_pb2.CreateModelRequest(app_id=app_id, model_id=model_id, template=template, concepts=list(concepts), settings=settings or {}),
                timeout=self.timeout_s,
            )
        except grpc.RpcError as exc:
            if exist_ok and exc.code() == grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                return self._training().ListModelVersions(training_pb2.ListModelVersionsRequest(app_id=app_id, model_id=model_id), timeout=self.timeout_s).model
            raise

    @_wrap_errors
    def train(
        self, app_id: str, model_id: str, dataset_id: str, *, settings: dict[str, str] | None = None,
        on_progress: Callable[[training_pb2.TrainingProgress], None] | None = None,
    ) -> training_pb2.TrainingJob:
        """Start a job and follow its progress stream until it ends; returns the final job."""
        job = self._training().TrainModel(
            training_pb2.TrainModelRequest(app_id=app_id, model_id=model_id, dataset_id=dataset_id, settings=settings or {}), timeout=self.timeout_s
        )
        for step in self._training().StreamTrainingProgress(training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job.id), timeout=3600):
            if on_progress:
                on_progress(step)
        job = self._training().GetTrainingJob(training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job.id), timeout=self.timeout_s)
        if job.state == training_pb2.JOB_STATE_FAILED:
            raise FirstlightError(grpc.StatusCode.FAILED_PRECONDITION, f"training job {job.id} failed: {job.error}")
        if job.state == training_pb2.JOB_STATE_CANCELLED:
            raise FirstlightError(grpc.StatusCode.CANCELLED, f"training job {job.id} was cancelled")
        return job

    @_wrap_errors
    def start_training(self, app_id: str, model_id: str, dataset_id: str, *, settings: dict[str, str] | None = None) -> training_pb2.TrainingJob:
        """Start a job and return at once (follow it with :meth:`progress`, stop it with :meth:`cancel_training`)."""
        return self._training().TrainModel(
            training_pb2.TrainModelRequest(app_id=app_id, model_id=model_id, dataset_id=dataset_id, settings=settings or {}), timeout=self.timeout_s
        )

    def progress(self, app_id: str, job_id: str, timeout_s: float = 24 * 3600) -> Iterator[training_pb2.TrainingProgress]:
        """The job's progress rows (deep templates: one per epoch with loss, lrate, metrics every
        test_freq epochs, ETA) until it ends."""
        try:
            yield from self._training().StreamTrainingProgress(training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise FirstlightError(exc.code(), exc.details()) from None  # type: ignore[attr-defined]

    @_wrap_errors
    def cancel_training(self, app_id: str, job_id: str) -> training_pb2.TrainingJob:
        """Cancel a queued or running job (a deep job stops between batches)."""
        return self._training().CancelTrainingJob(training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id), timeout=self.timeout_s)

    @_wrap_errors
    def job(self, app_id: str, job_id: str) -> training_pb2.TrainingJob:
        return self._training().GetTrainingJob(training_pb2.GetTrainingJobRequest(app_id=app_id, job_id=job_id), timeout=self.timeout_s)

    def train_deep(
        self, app_id: str, model_id: str, dataset_id: str, concepts: Iterable[str], *, template: str = "visual_classifier",
        settings: dict[str, str] | None = None, on_progress: Callable[[training_pb2.TrainingProgress], None] | None = None,
    ) -> training_pb2.TrainingJob:
        """Create (or reuse) a deep-template model and train a version on ``dataset_id``; the
        hyperparameters go in ``settings`` (e.g. ``{"architecture": "resnet_scratch", "num_epochs": "5"}``)."""
        self.create_model(app_id, model_id, concepts, template=template, settings=settings or {}, exist_ok=True)
        return self.train(app_id, model_id, dataset_id, settings=settings, on_progress=on_progress)

    @_wrap_errors
    def versions(self, app_id: str, model_id: str) -> training_pb2.ListModelVersionsResponse:
        return self._training().ListModelVersions(training_pb2.ListModelVersionsRequest(app_id=app_id, model_id=model_id), timeout=self.timeout_s)

    @_wrap_errors
    def evaluate(self, app_id: str, model_id: str, version: str = "", split: str = "validation") -> training_pb2.Evaluation:
        return self._training().EvaluateModelVersion(
            training_pb2.EvaluateModelVersionRequest(app_id=app_id, model_id=model_id, version=version, split=SPLITS[split]),  # type: ignore[arg-type]
            timeout=self.timeout_s * 5,
        )

    @_wrap_errors
    def compare(self, app_id: str, model_id: str, versions: Iterable[str] = (), split: str = "validation") -> training_pb2.Comparison:
        return self._training().CompareModelVersions(
            training_pb2.CompareModelVersionsRequest(app_id=app_id, model_id=model_id, versions=list(versions), split=SPLITS[split]),  # type: ignore[arg-type]
            timeout=self.timeout_s * 5,
        )

    # -- curation ---------------------------------------------------------------------
    def _curation(self) -> curation_pb2_grpc.CurationServiceStub:
        if self.curation is None:
            raise ValueError("this client has no curation service address (Firstlight(..., curation=...))")
        return self.curation

    @_wrap_errors
    def suggest(
        self, app_id: str, model_id: str, *, batch_size: int = 50, strategy: str = "", version: str = "", seed: int = 0, record_round: bool = False
    ) -> curation_pb2.SuggestInputsResponse:
        """Unlabeled inputs worth labeling next, best first (active learning). ``record_round``
        logs the call as a round of the experiment record (see :meth:`learning_rounds`)."""
        return self._curation().SuggestInputsForLabeling(
            curation_pb2.SuggestInputsRequest(
                app_id=app_id, model_id=model_id, model_version=version, strategy=strategy, batch_size=batch_size, seed=seed, record_round=record_round
            ),
            timeout=self.timeout_s * 5,
        )

    @_wrap_errors
    def health_check(
        self, app_id: str, *, dataset_id: str = "", dataset_version: str = "", images: bool = True, near_duplicate_threshold: float = 0.0,
        max_examples: int = 20, group_key: str = "", timeout_s: float = 600.0,
    ) -> curation_pb2.HealthCheckResponse:
        """Data health report (pass / warn / fail per check: duplicates, leaks, tiny concepts,
        imbalance, outliers, blank or corrupt images) of the app's inputs or of a dataset version."""
        return self._curation().RunHealthCheck(
            curation_pb2.HealthCheckRequest(
                app_id=app_id, dataset_id=dataset_id, dataset_version=dataset_version, images=images,
                near_duplicate_threshold=near_duplicate_threshold, max_examples=max_examples, group_key=group_key,
            ),
            timeout=timeout_s,  # the first check of an app reads and decodes every image
        )

    @_wrap_errors
    def worst_slices(
        self, app_id: str, model_id: str, *, version: str = "", split: str = "validation", min_size: int = 20, limit: int = 20
    ) -> curation_pb2.WorstSlicesResponse:
        """Where a model version does worst on a split (per concept, embedding cluster, quality
        quartile), with Wilson intervals, worst first."""
        return self._curation().GetWorstSlices(
            curation_pb2.WorstSlicesRequest(app_id=app_id, model_id=model_id, model_version=version, split=split, min_size=min_size, limit=limit),
            timeout=self.timeout_s,
        )

    @_wrap_errors
    def embedding_map(self, app_id: str, *, method: str = "pca", color_by: str = "concept", limit: int = 20_000, seed: int = 0):  # type: ignore[no-untyped-def]
        """(input ids, [N, 2] coordinates, one label per point) of the app's indexed inputs,
        projected client-side (curation.quality.projection: PCA or t-SNE) and labeled by
        ``concept`` (its single concept, "" otherwise) or ``split``."""
        import numpy as np

        from firstlight.curation.quality import projection

        if color_by not in ("concept", "split"):
            raise ValueError(f"color_by must be concept or split, got {color_by!r}")
        inputs = []
        for i in self.list_inputs(app_id, page_size=1000):
            inputs.append(i)
            if len(inputs) >= limit:
                break
        found: dict[str, list[float]] = {}
        ids = [i.id for i in inputs]
        for start in range(0, len(ids), 5000):
            resp = self.search.GetVectors(search_pb2.GetVectorsRequest(app_id=app_id, input_ids=ids[start : start + 5000]), timeout=self.timeout_s)
            found.update({v.input_id: list(v.vector) for v in resp.vectors})
        kept = [i for i in inputs if i.id in found]
        if not kept:
            return [], np.zeros((0, 2), np.float32), []
        coords = projection.project_2d(np.asarray([found[i.id] for i in kept], np.float32), method, seed=seed)
        names = {0: "", 1: "train", 2: "validation", 3: "test"}
        labels = [(i.concepts[0] if len(i.concepts) == 1 else "") if color_by == "concept" else names.get(int(i.split), "") for i in kept]
        return [i.id for i in kept], coords, labels

    @_wrap_errors
    def label_errors(self, app_id: str, *, concepts: Iterable[str] = (), folds: int = 5, max_results: int = 100) -> curation_pb2.FindLabelErrorsResponse:
        return self._curation().FindLabelErrors(
            curation_pb2.FindLabelErrorsRequest(app_id=app_id, concepts=list(concepts), folds=folds, max_results=max_results),
            timeout=self.timeout_s * 10,
        )

    @_wrap_errors
    def drift(
        self, app_id: str, *, recent_input_ids: Iterable[str] = (), recent_count: int = 200, reference_split: str = "train", stream: bool = False
    ) -> curation_pb2.DriftReport:
        """Drift of stored inputs against a split, or (``stream=True``) of the policy model's recent
        predictions against its serving version's training split."""
        return self._curation().GetDriftReport(
            curation_pb2.GetDriftReportRequest(
                app_id=app_id, reference_split=SPLITS[reference_split], recent_count=recent_count, recent_input_ids=list(recent_input_ids),
                stream=stream,
            ),
            timeout=self.timeout_s * 5,
        )

    @_wrap_errors
    def set_policy(self, app_id: str, model_id: str, **fields: object) -> curation_pb2.CurationPolicy:
        """Stream policy: ``strategy``, ``threshold``, ``max_per_minute``, ``budget``,
        ``retrain_after_labels``, ``dataset_id``, ``promotion_metric``, ``promotion_min_gain``,
        ``drift_window`` (see CurationPolicy in curation.proto; unset = default)."""
        return self._curation().SetCurationPolicy(curation_pb2.CurationPolicy(app_id=app_id, model_id=model_id, **fields), timeout=self.timeout_s)  # type: ignore[arg-type]

    @_wrap_errors
    def get_policy(self, app_id: str) -> curation_pb2.CurationPolicy:
        return self._curation().GetCurationPolicy(curation_pb2.GetCurationPolicyRequest(app_id=app_id), timeout=self.timeout_s)

    @_wrap_errors
    def labeling_queue(self, app_id: str, *, state: str = "all", page_size: int = 100, page_token: str = "") -> curation_pb2.ListLabelingQueueResponse:
        """One page of the labeling queue (oldest first) with the app's counters;
        ``state``: all, queued or labeled."""
        states = {"all": 0, "queued": curation_pb2.QUEUE_ITEM_STATE_QUEUED, "labeled": curation_pb2.QUEUE_ITEM_STATE_LABELED}
        if state not in states:
            raise ValueError(f"state must be one of {', '.join(states)}")
        return self._curation().ListLabelingQueue(
            curation_pb2.ListLabelingQueueRequest(app_id=app_id, state=states[state], page_size=page_size, page_token=page_token),  # type: ignore[arg-type]
            timeout=self.timeout_s,
        )

    def queue_items(self, app_id: str, *, state: str = "all", page_size: int = 100) -> Iterator[curation_pb2.QueueItem]:
        """Every queue item, following the pages."""
        token = ""
        while True:
            page = self.labeling_queue(app_id, state=state, page_size=page_size, page_token=token)
            yield from page.items
            token = page.next_page_token
            if not token:
                return

    @_wrap_errors
    def learning_rounds(self, app_id: str) -> list[curation_pb2.LearningRound]:
        """Active-learning rounds, newest first."""
        return list(self._curation().ListLearningRounds(curation_pb2.ListLearningRoundsRequest(app_id=app_id), timeout=self.timeout_s).rounds)

    @_wrap_errors
    def annotate(
        self,
        app_id: str,
        labels: dict[str, Iterable[str]] | None = None,
        *,
        regions: dict[str, Iterable[Any]] | None = None,
        replace_regions: bool = False,
        remove: dict[str, Iterable[str]] | None = None,
    ) -> list[common_pb2.Input]:
        """Add concepts per input ({input_id: [concept, ...]}) and/or box labels
        ({input_id: [region, ...]}, forms as in :func:`region_protos`; their concepts are added
        too), all-or-nothing. ``replace_regions`` drops the inputs' previous regions first;
        ``remove`` ({input_id: [concept, ...]}) takes concepts off."""
        labels, regions, remove = labels or {}, regions or {}, remove or {}
        ids = list(dict.fromkeys([*labels, *regions, *remove]))
        resp = self.ingestion.PostAnnotations(
            ingestion_pb2.PostAnnotationsRequest(
                app_id=app_id,
                annotations=[
                    ingestion_pb2.Annotation(
                        input_id=i,
                        add_concepts=list(labels.get(i, ())),
                        remove_concepts=list(remove.get(i, ())),
                        add_regions=region_protos(regions.get(i, ())),
                        clear_regions=replace_regions and i in regions,
                    )
                    for i in ids
                ],
            ),
            timeout=self.timeout_s,
        )
        return list(resp.inputs)

    # -- predict ----------------------------------------------------------------------
    @_wrap_errors
    def predict(
        self, images: Sequence[bytes], *, model: str = "general", version: str = "", app_id: str = "", top_k: int = 5,
        concepts: Iterable[str] = (), input_ids: Iterable[str] = (),
    ) -> list[list[tuple[str, float]]]:
        """``input_ids`` (the app's ids of these images) let curation queue uncertain ones for labeling."""
        resp = self.inference.Predict(
            inference_pb2.PredictRequest(
                app_id=app_id, model_id=model, model_version=version, images=list(images), top_k=top_k, concepts=list(concepts),
                input_ids=list(input_ids),
            ),
            timeout=self.timeout_s,
        )
        return [[(c.name, c.score) for c in p.concepts] for p in resp.predictions]

    @_wrap_errors
    def detect(
        self, images: Sequence[bytes], *, model: str, app_id: str, version: str = "", top_k: int = 0,
        concepts: Iterable[str] = (), min_score: float = 0.0,
    ) -> list[list[DetectedRegion]]:
        """Regions found by a detector model (``visual_detector``) per image, best first; boxes are
        (x0, y0, x1, y1) normalised to the image. ``top_k`` 0 returns every region it found."""
        resp = self.inference.Predict(
            inference_pb2.PredictRequest(
                app_id=app_id, model_id=model, model_version=version, images=list(images), top_k=top_k,
                concepts=list(concepts), min_score=min_score,
            ),
            timeout=self.timeout_s,
        )
        return [
            [DetectedRegion(r.concept, r.score, (r.box.x0, r.box.y0, r.box.x1, r.box.y1)) for r in p.regions]
            for p in resp.predictions
        ]

    @_wrap_errors
    def workflow(self, app_id: str, images: Sequence[bytes], steps: Sequence[inference_pb2.WorkflowStep]) -> inference_pb2.PredictWorkflowResponse:
        return self.inference.PredictWorkflow(
            inference_pb2.PredictWorkflowRequest(app_id=app_id, images=list(images), steps=list(steps)), timeout=self.timeout_s
        )


#: ``Client(ingestion, search, inference, training, api_key=..., tls_root_cert=...)``
Client = Firstlight
