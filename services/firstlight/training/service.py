"""Training orchestration: datasets from the app's labeled inputs, jobs run by a worker pool
(never in an RPC handler), evaluation, export to Triton, promotion, ``model.version.ready``.

It talks to the other services only through their RPCs (ingestion: labeled inputs and split
write-back; search: stored embeddings) and the event bus."""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firstlight import validation
from firstlight.models import backbone
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound
from firstlight.training import evaluation, export, hyper, oneshot, splits, transfer
from firstlight.training.deep import jobs as deep_jobs
from firstlight.training.deep.context import JobCancelled
from firstlight.training.store import Box, DatasetRow, TrainingStore

log = logging.getLogger(__name__)

HEAD_TEMPLATES = ("transfer_classifier", "oneshot_classifier")
TEMPLATES = HEAD_TEMPLATES + deep_jobs.DEEP_TEMPLATES
SPLIT_NAMES = {1: "train", 2: "validation", 3: "test"}
SPLIT_IDS = {v: k for k, v in SPLIT_NAMES.items()}

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = 1, 2, 3, 4, 5
CANCEL_POLL_S = 1.0  # how often a running job reads a cancel stored by another replica
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


@dataclass
class Progress:
    state: int
    stage: str
    progress: float
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    # deep templates: one row per epoch
    epoch: int = 0
    num_epochs: int = 0
    loss: float = 0.0
    lrate: float = 0.0
    eta_seconds: float = 0.0
    items_per_second: float = 0.0


class Platform:
    """What training needs from the rest of the platform (gRPC clients in production; the
    unit tests pass in-memory doubles of this small surface)."""

    def labeled_inputs(self, app_id: str, concepts: Sequence[str]) -> list[tuple[str, list[str], list[Box]]]: ...
    def inputs(self, app_id: str, *, labeled: bool | None, split: int = 0) -> list[tuple[str, list[str], int]]: ...
    def write_splits(self, app_id: str, splits_by_input: dict[str, int]) -> None: ...
    def vectors(self, app_id: str, input_ids: Sequence[str]) -> dict[str, np.ndarray]: ...
    def publish_version(self, app_id: str, model_id: str, version: str, triton_model: str, concepts: list[str], serving: bool, activation: str) -> None: ...
    def flipped_vectors(self, app_id: str, input_ids: Sequence[str], model: str = "") -> dict[str, np.ndarray]: ...
    def images(self, app_id: str, input_ids: Sequence[str], short_side: int = 0) -> dict[str, np.ndarray]: ...
    def publish_progress(self, event: object) -> None: ...
    def regions(self, app_id: str, input_ids: Sequence[str]) -> dict[str, list[tuple[str, float, float, float, float]]]: ...


def embedding_model_ref(index_model: str) -> str:
    """What a head records as its embedding model: "" for the built-in backbone (however the
    index names it), else the embedder's Triton model ref."""
    return "" if index_model in ("", backbone.BACKBONE_VERSION) else index_model


def _keep_concepts(items: list[tuple[str, list[str], list[Box]]], wanted: Sequence[str]) -> list[tuple[str, list[str], list[Box]]]:
    """Restrict labeled inputs (id, concepts, boxes) to the ``wanted`` concepts (all when empty);
    inputs left with no concept drop out, and so do boxes of concepts not kept."""
    if not wanted:
        return [(i, list(cs), list(boxes)) for i, cs, boxes in items]
    keep = set(wanted)
    out = [(i, [c for c in cs if c in keep], [g for g in boxes if g[0] in keep]) for i, cs, boxes in items]
    return [item for item in out if item[1]]


class JobLog:
    """Progress history of running jobs, for StreamTrainingProgress (waiters are woken)."""

    def __init__(self) -> None:
        self._steps: dict[str, list[Progress]] = {}
        self._cond = threading.Condition()

    def add(self, job_id: str, step: Progress) -> None:
        with self._cond:
            self._steps.setdefault(job_id, []).append(step)
            self._cond.notify_all()

    def wait_after(self, job_id: str, seen: int, timeout: float) -> list[Progress]:
        with self._cond:
            self._cond.wait_for(lambda: len(self._steps.get(job_id, [])) > seen, timeout=timeout)
            return list(self._steps.get(job_id, [])[seen:])


class TrainingService:
    def __init__(
        self, store: TrainingStore, platform: Platform, model_repository: Path, workers: int = 2, work_root: Path | None = None
    ) -> None:
        self.store = store
        self.platform = platform
        self.repository = model_repository
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="train")
        self.log = JobLog()
        self._promotion: dict[str, tuple[str, float]] = {}  # job id -> (metric, min gain)
        # Deep jobs keep checkpoints here (one folder per job): it must survive a restart.
        self.work_root = work_root or model_repository.parent / "jobs"
        self._cancelled: set[str] = set()
        self._cancel_lock = threading.Lock()
        self._cancel_checked: dict[str, float] = {}  # job id -> monotonic time of the last store read
        # Set on shutdown: deep jobs stop between batches and stay RUNNING, so the next start
        # resumes them from their checkpoint (and the process can exit promptly on SIGTERM).
        self.stopping = threading.Event()

    # -- datasets ---------------------------------------------------------------------
    def create_dataset(
        self,
        app_id: str,
        dataset_id: str,
        *,
        concepts: Sequence[str] = (),
        fractions: tuple[float, float, float] | None = None,
        counts: tuple[int, int, int] | None = None,
        seed: int = 0,
        write_back: bool = False,
        input_splits: bool = False,
    ) -> dict:
        """``input_splits``: keep the split recorded on each input (none: train) instead of
        drawing a stratified one; ``fractions``, ``counts`` and ``seed`` are then ignored."""
        validation.app_id(app_id)
        validation.input_id(dataset_id)
        wanted = [validation.concept(c) for c in concepts]
        if input_splits:
            return self._dataset_from_input_splits(app_id, dataset_id, wanted, write_back)
        items = _keep_concepts(self.platform.labeled_inputs(app_id, wanted), wanted)
        if not items:
            raise FailedPrecondition(f"app {app_id!r} has no labeled inputs" + (f" with concepts {wanted}" if wanted else ""))
        keys = splits.stratification_keys([cs for _, cs, _ in items])
        assignment = splits.stratified_split(keys, fractions=fractions, counts=counts, seed=seed)
        split_of = {}
        for name, idx in assignment.items():
            for i in idx:
                split_of[items[i][0]] = SPLIT_IDS[name]
        rows = [DatasetRow(i, sorted(cs), split_of[i], boxes) for i, cs, boxes in items]
        version = splits.dataset_version_id([(r.input_id, r.concepts, r.split, r.regions) for r in rows])
        spec = {"concepts": wanted, "fractions": fractions, "counts": counts, "seed": seed}
        created = self.store.save_dataset(app_id, dataset_id, version, spec, rows)
        if write_back:
            self.platform.write_splits(app_id, {r.input_id: r.split for r in rows})
        return {"app_id": app_id, "id": dataset_id, "version": version, "rows": rows, "created_at": created}

    def _dataset_from_input_splits(self, app_id: str, dataset_id: str, wanted: list[str], write_back: bool) -> dict:
        keep = set(wanted)
        rows = []
        for input_id, cs, split in self.platform.inputs(app_id, labeled=True):
            cs = [c for c in cs if c in keep] if keep else list(cs)
            if cs:
                rows.append(DatasetRow(input_id, sorted(cs), split if split in SPLIT_NAMES else SPLIT_IDS["train"]))
        if not rows:
            raise FailedPrecondition(f"app {app_id!r} has no labeled inputs" + (f" with concepts {wanted}" if wanted else ""))
        if not any(r.split == SPLIT_IDS["train"] for r in rows):
            raise FailedPrecondition(f"every labeled input of app {app_id!r} is recorded in validation or test: the train split would be empty")
        version = splits.dataset_version_id([(r.input_id, r.concepts, r.split) for r in rows])
        spec = {"concepts": wanted, "fractions": None, "counts": None, "seed": 0, "from_inputs": True}
        created = self.store.save_dataset(app_id, dataset_id, version, spec, rows)
        if write_back:  # inputs with no split get the train split they were given
            self.platform.write_splits(app_id, {r.input_id: r.split for r in rows})
        return {"app_id": app_id, "id": dataset_id, "version": version, "rows": rows, "created_at": created}

    def extend_dataset(self, app_id: str, dataset_id: str) -> dict:
        """A new version of ``dataset_id`` for active learning: every input of the latest version
        keeps its split (validation and test stay frozen, so versions trained on successive
        rounds are compared on the same validation inputs) with its current labels, and labeled
        inputs it did not have join the train split."""
        latest = self.get_dataset(app_id, dataset_id)
        wanted = list(latest["spec"].get("concepts") or [])
        items = _keep_concepts(self.platform.labeled_inputs(app_id, wanted), wanted)
        old = {r.input_id: r.split for r in latest["rows"]}
        rows = [DatasetRow(i, sorted(cs), old.get(i, SPLIT_IDS["train"]), boxes) for i, cs, boxes in items]
        version = splits.dataset_version_id([(r.input_id, r.concepts, r.split, r.regions) for r in rows])
        spec = {**latest["spec"], "extended_from": latest["version"]}
        created = self.store.save_dataset(app_id, dataset_id, version, spec, rows)
        return {"app_id": app_id, "id": dataset_id, "version": version, "rows": rows, "created_at": created}

    def get_dataset(self, app_id: str, dataset_id: str) -> dict:
        validation.app_id(app_id)
        validation.input_id(dataset_id)
        ds = self.store.latest_dataset(app_id, dataset_id)
        if not ds:
            raise NotFound(f"dataset {dataset_id!r} does not exist in app {app_id!r}")
        return {**ds, "rows": self.store.dataset_rows(app_id, dataset_id, ds["version"])}

    # -- models -----------------------------------------------------------------------
    def create_model(self, app_id: str, model_id: str, template: str, concepts: Sequence[str], settings: dict[str, str]) -> dict:
        validation.app_id(app_id)
        validation.input_id(model_id)
        if model_id == "general":
            raise InvalidArgument("model id 'general' is reserved for the built-in model")
        if template not in TEMPLATES:
            raise InvalidArgument(f"unknown template {template!r} (available: {', '.join(TEMPLATES)})")
        names = list(dict.fromkeys(validation.concept(c) for c in concepts))
        if len(names) < 2:
            raise InvalidArgument(f"a classifier needs at least two concepts (got {len(names)})")
        parse_template_settings(template, settings)  # validate now, not at training time
        return self.store.insert_model(app_id, model_id, template, names, dict(settings))

    def model(self, app_id: str, model_id: str) -> dict:
        # INVALID_ARGUMENT for an empty or malformed id (an admin's TrainModel(app_id="") was
        # NOT_FOUND "in app ''"), as in every other service.
        validation.app_id(app_id)
        validation.input_id(model_id)
        m = self.store.get_model(app_id, model_id)
        if not m:
            raise NotFound(f"model {model_id!r} does not exist in app {app_id!r}")
        return m

    # -- training ---------------------------------------------------------------------
    def _dataset_for(self, model: dict, dataset_id: str) -> tuple[dict, list[DatasetRow]]:
        ds = self.get_dataset(model["app_id"], dataset_id)
        concepts = set(model["concepts"])
        rows = [
            DatasetRow(
                r.input_id, [c for c in r.concepts if c in concepts], r.split,
                None if r.regions is None else [g for g in r.regions if g[0] in concepts],
            )  # fmt: skip
            for r in ds["rows"]
        ]
        rows = [r for r in rows if r.concepts]
        for concept in model["concepts"]:
            for split in (1, 2):
                if not any(concept in r.concepts and r.split == split for r in rows):
                    where = "labeled inputs" if split == 1 else "inputs in the validation split"
                    raise FailedPrecondition(
                        f"concept {concept!r} has no {where} in dataset {dataset_id!r} (version {ds['version'][:12]})"
                    )
        return ds, rows

    def train(self, app_id: str, model_id: str, dataset_id: str, overrides: dict[str, str], promotion: tuple[str, float] | None = None) -> dict:
        """Queue a job. ``promotion`` = (validation metric, min gain) of the promotion rule
        (default: strictly higher accuracy)."""
        model = self.model(app_id, model_id)
        if promotion is not None:
            if promotion[0] not in evaluation.METRICS:
                raise InvalidArgument(f"unknown promotion metric {promotion[0]!r} (known: {', '.join(evaluation.METRICS)})")
            if not promotion[1] >= 0:
                raise InvalidArgument(f"promotion min_gain must be >= 0 (got {promotion[1]})")
        settings = {**model["settings"], **overrides}
        parse_template_settings(model["template"], settings)
        self._dataset_for(model, dataset_id)  # fail fast with a precise status
        job_id = uuid.uuid4().hex[:16]
        if promotion is not None:
            self._promotion[job_id] = promotion
        self.store.insert_job(job_id, app_id, model_id, dataset_id, settings, QUEUED)
        self.log.add(job_id, Progress(QUEUED, "queued", 0.0))
        self.pool.submit(self._run, job_id)
        return self.job(job_id)

    def job(self, job_id: str, app_id: str | None = None) -> dict:
        job = self.store.get_job(job_id)
        if not job or (app_id and job["app_id"] != app_id):
            raise NotFound(f"training job {job_id!r} does not exist")
        return job

    def _step(self, job_id: str, stage: str, progress: float, metrics: dict | None = None, message: str = "", state: int = RUNNING) -> None:
        self.store.update_job(job_id, state=state, progress=progress)
        self.log.add(job_id, Progress(state, stage, progress, metrics or {}, message))

    def recover_interrupted_jobs(self) -> None:
        """At start-up, jobs that were queued or running when the process died: deep jobs resume
        from their last checkpoint (epochs are expensive); head jobs train in seconds, so they
        are marked failed with the reason rather than silently re-run; a job whose cancel was
        stored before the process died ends CANCELLED."""
        for job in self.store.jobs_in_states([QUEUED, RUNNING]):
            model = self.store.get_model(job["app_id"], job["model_id"])
            if job.get("cancel_requested"):
                self.store.update_job(job["id"], state=CANCELLED, error="cancelled")
            elif model and model["template"] in deep_jobs.DEEP_TEMPLATES:
                self.resume(job["id"])
            else:
                self.store.update_job(job["id"], state=FAILED, error="the training service restarted during this job; train again")

    def resume(self, job_id: str) -> None:
        """Queue a job that was queued or running when the service stopped (deep jobs continue from
        their last checkpoint)."""
        self.log.add(job_id, Progress(QUEUED, "queued", 0.0, message="resuming after a service restart"))
        self.pool.submit(self._run, job_id)

    def cancel(self, job_id: str, app_id: str | None = None) -> dict:
        job = self.job(job_id, app_id)
        if job["state"] in TERMINAL:
            raise FailedPrecondition(f"training job {job_id!r} already ended")
        with self._cancel_lock:
            self._cancelled.add(job_id)
        self.store.update_job(job_id, cancel_requested=True)
        if job["state"] == QUEUED:  # not started: the worker will skip it
            self.store.update_job(job_id, state=CANCELLED, error="cancelled")
            self.log.add(job_id, Progress(CANCELLED, "cancelled", job["progress"], message="cancelled before it started"))
        return self.job(job_id)

    def is_cancelled(self, job_id: str) -> bool:
        """Asked between batches: a cancel sent to this process, or one stored by another
        replica's CancelTrainingJob (read from the store at most once a second)."""
        with self._cancel_lock:
            if job_id in self._cancelled:
                return True
            now = time.monotonic()
            if now - self._cancel_checked.get(job_id, 0.0) < CANCEL_POLL_S:
                return False
            self._cancel_checked[job_id] = now
        job = self.store.get_job(job_id)
        if job and job.get("cancel_requested"):
            with self._cancel_lock:
                self._cancelled.add(job_id)
            return True
        return False

    def _run(self, job_id: str) -> None:
        try:
            if self.job(job_id)["state"] in TERMINAL:  # cancelled while queued
                return
            self.store.update_job(job_id, state=RUNNING)
            if self.model(self.job(job_id)["app_id"], self.job(job_id)["model_id"])["template"] in deep_jobs.DEEP_TEMPLATES:
                deep_jobs.train_deep(self, job_id)
            else:
                self._train(job_id)
        except deep_jobs.Interrupted:
            log.info("training job %s interrupted by shutdown; it resumes at the next start", job_id)
        except JobCancelled:
            progress = self.job(job_id)["progress"]
            self.store.update_job(job_id, state=CANCELLED, error="cancelled")
            self.log.add(job_id, Progress(CANCELLED, "cancelled", progress, message="cancelled"))
            deep_jobs.publish_end(self, job_id, CANCELLED, "cancelled")
        except Exception as exc:  # noqa: BLE001 - a failed job records why; the worker lives on
            log.exception("training job %s failed", job_id)
            message = str(exc) if isinstance(exc, (InvalidArgument, FailedPrecondition, NotFound)) else f"{type(exc).__name__}: {exc}"
            self.store.update_job(job_id, state=FAILED, error=message)
            self.log.add(job_id, Progress(FAILED, "failed", 1.0, message=message))
            deep_jobs.publish_end(self, job_id, FAILED, message)

    def _xy(self, app_id: str, rows: list[DatasetRow], embedding_model: str | None = None) -> tuple[np.ndarray, list[list[str]], str]:
        """(X, labels, embedding model) of ``rows`` from the app's index. With
        ``embedding_model`` (what a version was trained on), vectors of another model are a
        FAILED_PRECONDITION: a head only understands the embeddings it was trained on."""
        ids = [r.input_id for r in rows]
        vectors_of = getattr(self.platform, "vectors_of", None)
        vectors, model = vectors_of(app_id, ids) if vectors_of else (self.platform.vectors(app_id, ids), "")
        model = embedding_model_ref(model)
        if embedding_model is not None and model != embedding_model:
            raise FailedPrecondition(
                f"this version was trained on {embedding_model or 'backbone'} embeddings and the app's index now "
                f"holds {model or 'backbone'} embeddings (its embedding model was switched); train a new version"
            )
        missing = [r.input_id for r in rows if r.input_id not in vectors]
        if missing:
            raise FailedPrecondition(
                f"{len(missing)} inputs are not embedded yet (e.g. {missing[0]!r}); wait until they are searchable"
            )
        X = np.stack([vectors[r.input_id] for r in rows]).astype(np.float32)
        return X, [r.concepts for r in rows], model

    def _train(self, job_id: str) -> None:
        job = self.job(job_id)
        app_id, model_id = job["app_id"], job["model_id"]
        model = self.model(app_id, model_id)
        ds, rows = self._dataset_for(model, job["dataset_id"])
        settings = hyper.parse_settings(model["template"], job["settings"])
        self._step(job_id, "loading embeddings", 0.05, message=f"{len(rows)} inputs from dataset {ds['id']}")
        train_rows = [r for r in rows if r.split == 1]
        X, Y, embedding_model = self._xy(app_id, train_rows)
        self._step(job_id, "fitting", 0.3, message=f"{len(train_rows)} training inputs, template {model['template']}")
        started = time.perf_counter()
        if model["template"] == "transfer_classifier":
            X_flip = None
            if settings.augment_flip:  # embeddings of the mirrored training images, same labels
                self._step(job_id, "embedding flipped images", 0.2, message=f"{len(train_rows)} images")
                flipped = self.platform.flipped_vectors(app_id, [r.input_id for r in train_rows], model=embedding_model)
                X_flip = np.stack([flipped[r.input_id] for r in train_rows]).astype(np.float32)
            head = transfer.train_transfer(X, Y, model["concepts"], settings, X_flip=X_flip)
        else:
            head = oneshot.train_oneshot(X, Y, model["concepts"], settings)
        seconds = time.perf_counter() - started
        if self.is_cancelled(job_id):  # a head fits in seconds: honour a cancel before publishing
            raise JobCancelled("training job cancelled")
        self._step(job_id, "evaluating", 0.7, metrics={"train_seconds": seconds})
        version = self.store.next_version(app_id, model_id)
        report = self._evaluate_head(head, app_id, [r for r in rows if r.split == 2], model["concepts"], embedding_model)
        metrics = evaluation.headline(report)
        self._step(job_id, "exporting", 0.85, metrics=metrics)
        triton_model = export.export_head(
            self.repository, app_id, model_id, version, head.W, head.b, head.activation, model["concepts"], head.normalize
        )

        serving = model["serving_version"]
        serving_report = None
        if serving:
            previous = self.store.get_version(app_id, model_id, int(serving))
            serving_report = evaluation.EvaluationReport.from_dict(previous["train_report"]["validation"]) if previous else None
        metric, min_gain = self._promotion.pop(job_id, ("accuracy", 0.0))
        promote, note = evaluation.should_promote(report, serving_report, metric, min_gain)
        self.store.insert_version(
            app_id=app_id,
            model_id=model_id,
            version=version,
            dataset_id=ds["id"],
            dataset_version=ds["version"],
            settings=job["settings"],
            validation_metrics=metrics,
            train_report={"validation": report.to_dict(), "fit": head.report(), "embedding_model": embedding_model},
            train_seconds=seconds,
            triton_model=triton_model,
            activation=head.activation,
            promotion_note=note,
        )
        if promote:
            self.store.set_serving(app_id, model_id, str(version))
        publish_extra = {"embedding_model": embedding_model} if embedding_model else {}  # fakes need not know
        self.platform.publish_version(app_id, model_id, str(version), triton_model, model["concepts"], promote, head.activation, **publish_extra)
        self.store.update_job(job_id, state=SUCCEEDED, version=str(version), progress=1.0)
        self.log.add(job_id, Progress(SUCCEEDED, "done", 1.0, metrics, f"version {version}: {note}"))

    def _evaluate_head(self, head, app_id: str, rows: list[DatasetRow], concepts: list[str], embedding_model: str):  # type: ignore[no-untyped-def]
        X, Y, _ = self._xy(app_id, rows, embedding_model)
        return evaluation.evaluate(Y, head.predict_proba(X), concepts, multilabel=head.activation == "sigmoid")

    # -- evaluation -------------------------------------------------------------------
    def _version(self, app_id: str, model_id: str, version: str) -> dict:
        model = self.model(app_id, model_id)
        version = version or model["serving_version"]
        if not version:
            raise FailedPrecondition(f"model {model_id!r} has no trained version yet")
        try:
            v = self.store.get_version(app_id, model_id, int(version))
        except ValueError:
            v = None
        if not v:
            raise NotFound(f"model {model_id!r} has no version {version!r}")
        return v

    def evaluate(self, app_id: str, model_id: str, version: str, split: int) -> dict:
        model = self.model(app_id, model_id)
        v = self._version(app_id, model_id, version)
        split = split or 2
        if split not in SPLIT_NAMES:
            raise InvalidArgument(f"unknown split {split}")
        rows = [
            DatasetRow(r.input_id, [c for c in r.concepts if c in model["concepts"]], r.split)
            for r in self.store.dataset_rows(app_id, v["dataset_id"], v["dataset_version"])
        ]
        rows = [r for r in rows if r.split == split and r.concepts]
        if not rows:
            raise FailedPrecondition(f"the {SPLIT_NAMES[split]} split of dataset {v['dataset_id']!r} is empty")
        predictions: list[tuple[str, str, str, float]] = []
        if model["template"] in deep_jobs.DEEP_TEMPLATES:
            report = deep_jobs.evaluate_version(self, app_id, model, v, rows)
        else:
            head = transfer.load_head(self.repository / v["triton_model"] / str(v["version"]) / "weights.npz", model["concepts"])
            # Versions from before heads recorded their embedding model were trained on the backbone's.
            X, Y, _ = self._xy(app_id, rows, v["train_report"].get("embedding_model", ""))
            proba = head.predict_proba(X)
            multilabel = head.activation == "sigmoid"
            report = evaluation.evaluate(Y, proba, model["concepts"], multilabel=multilabel)
            if not multilabel:  # which input lands in which confusion cell (a multi-label matrix counts pairs)
                predictions = evaluation.top1_predictions([r.input_id for r in rows], Y, proba, model["concepts"])
        title = f"{model_id} v{v['version']} on {SPLIT_NAMES[split]} ({len(rows)} inputs)"
        with tempfile.TemporaryDirectory() as tmp:
            png_path = Path(tmp) / "confusion.png"
            evaluation.render_confusion_matrix_png(report, png_path, title)
            png = png_path.read_bytes()
        markdown = evaluation.render_report_markdown(
            report, title, {"dataset": f"{v['dataset_id']} ({v['dataset_version'][:12]})", "settings": v["settings"]}
        )
        self.store.save_evaluation(app_id, model_id, v["version"], split, report.to_dict(), markdown, png)
        return {"version": str(v["version"]), "split": split, "report": report, "png": png, "markdown": markdown, "count": len(rows),
                "predictions": predictions}

    def promote(self, app_id: str, model_id: str, version: str, metric: str = "", min_gain: float = 0.0, override_reason: str = "") -> tuple[dict, bool, str, str]:
        """A person promotes a version: the promotion rule (``evaluation.decide_promotion``, the
        one automatic promotion uses) still decides against the serving version's validation
        metrics; a refusal stands unless ``override_reason`` says why (it is kept in the version's
        promotion note). Returns (model, promoted, note, previous serving version)."""
        if not version:
            raise InvalidArgument("name the version to promote")
        if len(override_reason) > 512:
            raise InvalidArgument(f"override_reason is {len(override_reason)} characters, over the limit of 512")
        if metric and metric not in evaluation.METRICS:
            raise InvalidArgument(f"unknown promotion metric {metric!r} (known: {', '.join(evaluation.METRICS)})")
        model = self.model(app_id, model_id)
        v = self._version(app_id, model_id, version)
        serving = model["serving_version"]
        if serving == str(v["version"]):
            return model, True, f"version {serving} is already serving", serving
        previous = self.store.get_version(app_id, model_id, int(serving)) if serving else None
        experiment = v["train_report"].get("experiment") or {}
        ok, verdict = evaluation.decide_promotion(
            v["validation_metrics"], previous["validation_metrics"] if previous else None, metric, min_gain,
            primary=experiment.get("primary_metric") or "accuracy",
        )
        if not ok and not override_reason.strip():
            raise FailedPrecondition(f"the promotion rule refuses version {v['version']}: {verdict}")
        note = f"promoted by hand: {verdict}" if ok else f"promoted by hand over the rule ({override_reason.strip()}); the rule said: {verdict}"
        self.store.set_promotion_note(app_id, model_id, int(v["version"]), note[:1024])
        self.store.set_serving(app_id, model_id, str(v["version"]))
        extra: dict = {}
        if experiment.get("kind"):
            extra.update(kind=experiment["kind"], image_size=int(experiment.get("image_size") or 0))
        elif v["train_report"].get("embedding_model"):
            extra["embedding_model"] = v["train_report"]["embedding_model"]
        self.platform.publish_version(app_id, model_id, str(v["version"]), v["triton_model"], list(model["concepts"]), True, v["activation"], **extra)
        return self.model(app_id, model_id), True, note, serving

    def compare(self, app_id: str, model_id: str, version_ids: Sequence[str], split: int) -> dict:
        all_versions = [str(v["version"]) for v in self.store.list_versions(app_id, model_id)] if not version_ids else list(version_ids)
        if not all_versions:
            raise FailedPrecondition(f"model {model_id!r} has no trained version yet")
        results = {v: self.evaluate(app_id, model_id, v, split) for v in all_versions}
        comparison = evaluation.compare({f"v{v}": r["report"] for v, r in results.items()})
        return {"results": results, "best": comparison.best.lstrip("v"), "markdown": evaluation.render_comparison_markdown(comparison)}

    def shutdown(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=False, cancel_futures=True)


def parse_template_settings(template: str, settings: dict) -> object:
    """Validate a model's settings for its template (INVALID_ARGUMENT naming the key)."""
    if template in deep_jobs.DEEP_TEMPLATES:
        return deep_jobs.parse(template, settings)
    return hyper.parse_settings(template, settings)
