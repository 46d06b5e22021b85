"""Training core: dataset versions from an app's labeled inputs, models, a job queue run by a
worker pool (never in an RPC handler), cancellation and restart recovery, and the one path that
records a trained version, decides its promotion and announces it.

Templates are trained by :class:`~firstlight.training.ports.TemplateRunner` s (heads on
embeddings, deep torch templates); everything else goes through the ports of
:mod:`firstlight.training.ports`. No grpc, kafka, triton or generated ``firstlight.v1`` code here.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firstlight.domain import evaluation, frames, group_split, splits, validation
from firstlight.domain.errors import SplitPreconditionError
from firstlight.domain.promotion import decide_promotion, metrics_of
from firstlight.errors import FailedPrecondition, FirstlightError, InvalidArgument, NotFound, Unavailable
from firstlight.training.ports import (
    Candidate,
    EventPublisher,
    HealthChecks,
    Interrupted,
    JobCancelled,
    JobProgressed,
    Peers,
    TemplateRunner,
    TrainingStorePort,
    VersionReady,
)
from firstlight.training.records import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    DatasetRow,
)
from firstlight.training.records import Box as BoxTuple

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowFilter:
    """Which rows of a dataset version a page keeps (on their frozen labels and split)."""

    concepts: tuple[str, ...] = ()  # any of these
    split: int = 0  # 0: any
    labeled: bool | None = None  # None: either


@dataclass(frozen=True)
class RowsPage:
    version: str
    rows: list[DatasetRow]
    next_token: str
    total: int


__all__ = ["CANCELLED", "FAILED", "QUEUED", "RUNNING", "SUCCEEDED", "TERMINAL", "JobLog", "Progress", "RowFilter", "RowsPage", "TrainingCore"]

SPLIT_NAMES = {1: "train", 2: "validation", 3: "test"}
SPLIT_IDS = {v: k for k, v in SPLIT_NAMES.items()}

#: Rows one ListDatasetRows page holds at most.
MAX_ROWS_PAGE = 1000

CANCEL_POLL_S = 1.0  # how often a running job reads a cancel stored by another replica
#: Inputs one ``score_inputs`` call scores (the curation service pages its pool).
MAX_SCORED = 20_000


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


def _keep_concepts(items: list[tuple[str, list[str], list[BoxTuple]]], wanted: Sequence[str]) -> list[tuple[str, list[str], list[BoxTuple]]]:
    """Restrict labeled inputs (id, concepts, boxes) to the ``wanted`` concepts (all when empty);
    inputs left with no concept drop out, and so do boxes of concepts not kept."""
    if not wanted:
        return [(i, list(cs), list(boxes)) for i, cs, boxes in items]
    keep = set(wanted)
    out = [(i, [c for c in cs if c in keep], [g for g in boxes if g[0] in keep]) for i, cs, boxes in items]
    return [item for item in out if item[1]]


def serving_metrics(version: dict[str, Any]) -> dict[str, float | None]:
    """The validation metrics the promotion rule reads of a recorded version: every metric of
    its full evaluation report where it kept one (heads), else its stored validation metrics."""
    report = (version.get("train_report") or {}).get("validation")
    if isinstance(report, dict) and "per_concept" in report:
        return metrics_of(evaluation.EvaluationReport.from_dict(report))
    return dict(version.get("validation_metrics") or {})


#: Jobs whose progress steps stay in memory for StreamTrainingProgress; a stream of an older job
#: reads its stored state instead (as after a restart).
MAX_LOGGED_JOBS = 256


class JobLog:
    """Progress history of recent jobs, for StreamTrainingProgress (waiters are woken)."""

    def __init__(self) -> None:
        self._steps: dict[str, list[Progress]] = {}
        self._cond = threading.Condition()

    def add(self, job_id: str, step: Progress) -> None:
        with self._cond:
            self._steps.setdefault(job_id, []).append(step)
            while len(self._steps) > MAX_LOGGED_JOBS:  # the oldest job's steps (dicts keep insertion order)
                del self._steps[next(iter(self._steps))]
            self._cond.notify_all()

    def wait_after(self, job_id: str, seen: int, timeout: float) -> list[Progress]:
        with self._cond:
            self._cond.wait_for(lambda: len(self._steps.get(job_id, [])) > seen, timeout=timeout)
            return list(self._steps.get(job_id, [])[seen:])


class _Run:
    """A running job as its template runner sees it (:class:`firstlight.training.ports.JobRun`)."""

    def __init__(self, core: TrainingCore, job: dict[str, Any], model: dict[str, Any], dataset: dict[str, Any], rows: list[DatasetRow]) -> None:
        self.core = core
        self.job = job
        self.model = model
        self.dataset = dataset
        self.rows: list[Any] = list(rows)
        self.work_dir = core.work_root / job["id"]

    def step(self, stage: str, progress: float, metrics: dict[str, float] | None = None, message: str = "") -> None:
        self.core.step(self.job["id"], stage, progress, metrics, message)

    def epoch(self, progress: float, event: JobProgressed) -> None:
        job_id = self.job["id"]
        self.core.store.update_job(job_id, state=RUNNING, progress=progress)
        self.core.log.add(
            job_id,
            Progress(
                RUNNING, "training", progress, dict(event.metrics), event.message or f"epoch {event.epoch}/{event.num_epochs}",
                epoch=event.epoch, num_epochs=event.num_epochs, loss=event.loss, lrate=event.lrate,
                eta_seconds=event.eta_seconds, items_per_second=event.items_per_second,
            ),
        )  # fmt: skip
        self.core.publish_progress(event)

    def is_cancelled(self) -> bool:
        return self.core.is_cancelled(self.job["id"])

    def check_cancelled(self) -> None:
        if self.core.stopping.is_set():
            raise Interrupted(self.job["id"])
        if self.is_cancelled():
            raise JobCancelled("training job cancelled")


class TrainingCore:
    def __init__(
        self,
        store: TrainingStorePort,
        peers: Peers,
        events: EventPublisher,
        runners: Sequence[TemplateRunner],
        work_root: Path,
        workers: int = 2,
        health: HealthChecks | None = None,
    ) -> None:
        self.store = store
        # The curation service's health check, run on every version frozen (None: not run)
        self.health = health
        self.peers = peers
        self.events = events
        self.runners = {t: r for r in runners for t in r.templates}
        self.templates = tuple(self.runners)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="train")
        self.log = JobLog()
        self._promotion: dict[str, tuple[str, float]] = {}  # job id -> (metric, min gain)
        # Deep jobs keep checkpoints here (one folder per job): it must survive a restart.
        self.work_root = work_root
        self._cancelled: set[str] = set()
        self._cancel_lock = threading.Lock()
        self._cancel_checked: dict[str, float] = {}  # job id -> monotonic time of the last store read
        # Set on shutdown: deep jobs stop between batches and stay RUNNING, so the next start
        # resumes them from their checkpoint (and the process can exit promptly on SIGTERM).
        self.stopping = threading.Event()

    def _runner(self, template: str) -> TemplateRunner:
        runner = self.runners.get(template)
        if runner is None:
            raise InvalidArgument(f"unknown template {template!r} (available: {', '.join(self.templates)})")
        return runner

    def parse_settings(self, template: str, settings: dict[str, str]) -> object:
        """Validate a model's settings for its template (INVALID_ARGUMENT naming the key)."""
        return self._runner(template).parse(template, settings)

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
        group_duplicates: bool = False,
    ) -> dict[str, Any]:
        """``input_splits``: keep the split recorded on each input (none: train) instead of
        drawing a stratified one; ``fractions``, ``counts`` and ``seed`` are then ignored.
        ``group_duplicates``: exact and near-duplicates (found by the curation service) join
        one group with the frames of their videos, so no copy sits in two splits."""
        validation.app_id(app_id)
        validation.input_id(dataset_id)
        wanted = [validation.concept(c) for c in concepts]
        if input_splits:
            if group_duplicates:
                raise InvalidArgument("group_duplicates draws a new split and from_inputs keeps the recorded one: choose one")
            return self._dataset_from_input_splits(app_id, dataset_id, wanted, write_back)
        items = _keep_concepts(self.peers.labeled_inputs(app_id, wanted), wanted)
        if not items:
            raise FailedPrecondition(f"app {app_id!r} has no labeled inputs" + (f" with concepts {wanted}" if wanted else ""))
        keys = splits.stratification_keys([cs for _, cs, _ in items])
        groups = frames.video_groups([i for i, _, _ in items])
        duplicates = 0
        if group_duplicates:
            found = self._duplicate_groups(app_id, [i for i, _, _ in items])
            row = {i: k for k, (i, _, _) in enumerate(items)}
            linked = [[row[i] for i in g if i in row] for g in found]
            duplicates = len(linked)
            groups = group_split.merge_groups(groups, linked)
        if any(g is not None for g in groups):
            # Frames of one video (and copies of one image, with group_duplicates) are
            # near-identical: all of them go to one split (no leak from train into test),
            # stratified as far as whole groups allow.
            grouped = group_split.group_split(keys, groups, fractions=fractions, counts=counts, seed=seed)
            assignment = {name: idx for name, idx in grouped.splits.items() if name in SPLIT_IDS}
            try:
                splits.check_split(keys, assignment, require_validation=grouped.requested["validation"] > 0)
            except SplitPreconditionError as exc:  # say why: whole videos per split
                videos = len({g for g, k in zip(groups, keys) if g is not None and k == exc.concept})
                others = sum(1 for g, k in zip(groups, keys) if g is None and k == exc.concept)
                what = "video or duplicate group" if group_duplicates else "video"
                raise SplitPreconditionError(
                    f"{exc}. Frames of one video{' and copies of one image' if group_duplicates else ''} stay in one split "
                    "(no near-identical images across train and validation), "
                    f"and {exc.concept!r} is on {videos} {what}(s) and {others} other input(s): label it on another video or image",
                    exc.concept,
                ) from None
            log.info("dataset %s/%s: group-aware split over %s groups (%s duplicate groups), achieved %s of %s", app_id, dataset_id,
                     len({g for g in groups if g}), duplicates, grouped.achieved, grouped.requested)  # fmt: skip
        else:
            assignment = splits.stratified_split(keys, fractions=fractions, counts=counts, seed=seed)
        split_of = {}
        for name, idx in assignment.items():
            for i in idx:
                split_of[items[i][0]] = SPLIT_IDS[name]
        rows = [DatasetRow(i, sorted(cs), split_of[i], boxes) for i, cs, boxes in items if i in split_of]
        version = splits.dataset_version_id([(r.input_id, r.concepts, r.split, r.regions) for r in rows])
        spec: dict[str, Any] = {"concepts": wanted, "fractions": fractions, "counts": counts, "seed": seed}
        if group_duplicates:
            spec["group_duplicates"] = True
        created = self.store.save_dataset(app_id, dataset_id, version, spec, rows)
        if write_back:
            self.peers.write_splits(app_id, {r.input_id: r.split for r in rows})
        health = self._check_health(app_id, dataset_id, version)
        return {"app_id": app_id, "id": dataset_id, "version": version, "rows": rows, "created_at": created, "health": health}

    def _dataset_from_input_splits(self, app_id: str, dataset_id: str, wanted: list[str], write_back: bool) -> dict[str, Any]:
        keep = set(wanted)
        rows = []
        for input_id, cs, split in self.peers.inputs(app_id, labeled=True):
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
            self.peers.write_splits(app_id, {r.input_id: r.split for r in rows})
        health = self._check_health(app_id, dataset_id, version)
        return {"app_id": app_id, "id": dataset_id, "version": version, "rows": rows, "created_at": created, "health": health}

    def extend_dataset(self, app_id: str, dataset_id: str) -> dict[str, Any]:
        """A new version of ``dataset_id`` for active learning: every input of the latest version
        keeps its split (validation and test stay frozen, so versions trained on successive
        rounds are compared on the same validation inputs) with its current labels, and labeled
        inputs it did not have join the train split — except, for a version split with
        ``group_duplicates``, a new input in a group (a video, or copies of one image) with a
        held-out member: it joins that member's split, so extending does not bring a leak back."""
        latest = self.get_dataset(app_id, dataset_id)
        wanted = list(latest["spec"].get("concepts") or [])
        items = _keep_concepts(self.peers.labeled_inputs(app_id, wanted), wanted)
        old = {r.input_id: r.split for r in latest["rows"]}
        if latest["spec"].get("group_duplicates") and any(i not in old for i, _, _ in items):
            old = {**old, **self._held_out_group_splits(app_id, [i for i, _, _ in items], old)}
        rows = [DatasetRow(i, sorted(cs), old.get(i, SPLIT_IDS["train"]), boxes) for i, cs, boxes in items]
        version = splits.dataset_version_id([(r.input_id, r.concepts, r.split, r.regions) for r in rows])
        spec = {**latest["spec"], "extended_from": latest["version"]}
        created = self.store.save_dataset(app_id, dataset_id, version, spec, rows)
        health = self._check_health(app_id, dataset_id, version)
        return {"app_id": app_id, "id": dataset_id, "version": version, "rows": rows, "created_at": created, "health": health}

    def _held_out_group_splits(self, app_id: str, ids: list[str], old: dict[str, int]) -> dict[str, int]:
        """New inputs (not in ``old``) grouped, by video or as duplicates, with a held-out input
        of ``old``: the split they join (the lowest held-out split of their group)."""
        row = {i: k for k, i in enumerate(ids)}
        linked = [[row[i] for i in g if i in row] for g in self._duplicate_groups(app_id, ids)]
        groups = group_split.merge_groups(frames.video_groups(ids), linked)
        held: dict[str, int] = {}
        for i, g in zip(ids, groups):
            if g is not None and old.get(i, SPLIT_IDS["train"]) != SPLIT_IDS["train"]:
                held[g] = min(held.get(g, old[i]), old[i])
        return {i: held[g] for i, g in zip(ids, groups) if i not in old and g is not None and g in held}

    def _duplicate_groups(self, app_id: str, input_ids: list[str]) -> list[list[str]]:
        """The curation service's duplicate groups among ``input_ids``. Unlike the health check,
        this one must run: a split asked to keep copies together is not drawn without them."""
        why = "group_duplicates needs the curation service to find the duplicate groups"
        if self.health is None:
            raise Unavailable(f"{why}, and this training service has none configured (FIRSTLIGHT_CURATION_ADDR); nothing was frozen")
        try:
            return self.health.duplicate_groups(app_id, input_ids)
        except Unavailable as exc:
            raise Unavailable(f"{why}, and it is unreachable ({exc}); nothing was frozen, try again") from None

    def _check_health(self, app_id: str, dataset_id: str, version: str) -> dict[str, Any] | None:
        """Run the health check on a version just frozen and record it with the version. It
        never fails the freeze: a check that cannot run is recorded as "skip" with the reason."""
        if self.health is None:
            return None
        try:
            health = self.health.dataset_health(app_id, dataset_id, version)
        except FirstlightError as exc:
            health = {"status": "skip", "checks": [], "error": f"{type(exc).__name__}: {exc}"}
        if health["status"] == "fail":
            failing = [c["name"] for c in health["checks"] if c["status"] == "fail"]
            log.warning("dataset %s/%s version %s fails its health check: %s", app_id, dataset_id, version, ", ".join(failing))
        self.store.set_dataset_health(app_id, dataset_id, version, health)
        return health

    def get_dataset(self, app_id: str, dataset_id: str) -> dict[str, Any]:
        ds = self._latest_dataset(app_id, dataset_id)
        return {**ds, "rows": self.store.dataset_rows(app_id, dataset_id, ds["version"])}

    def _latest_dataset(self, app_id: str, dataset_id: str) -> dict[str, Any]:
        validation.app_id(app_id)
        validation.input_id(dataset_id)
        ds = self.store.latest_dataset(app_id, dataset_id)
        if not ds:
            raise NotFound(f"dataset {dataset_id!r} does not exist in app {app_id!r}")
        return ds

    def dataset_for(self, model: dict[str, Any], dataset_id: str) -> tuple[dict[str, Any], list[DatasetRow]]:
        """The latest version of ``dataset_id`` restricted to the model's concepts (labels and
        boxes); FAILED_PRECONDITION when a concept has no training or validation input."""
        ds = self.get_dataset(model["app_id"], dataset_id)
        concepts = set(model["concepts"])
        rows = [
            DatasetRow(
                r.input_id,
                [c for c in r.concepts if c in concepts],
                r.split,
                None if r.regions is None else [g for g in r.regions if g[0] in concepts],
            )
            for r in ds["rows"]
        ]
        rows = [r for r in rows if r.concepts]
        for concept in model["concepts"]:
            for split in (1, 2):
                if not any(concept in r.concepts and r.split == split for r in rows):
                    where = "labeled inputs" if split == 1 else "inputs in the validation split"
                    raise FailedPrecondition(f"concept {concept!r} has no {where} in dataset {dataset_id!r} (version {ds['version'][:12]})")
        return ds, rows

    # -- models -----------------------------------------------------------------------
    def create_model(self, app_id: str, model_id: str, template: str, concepts: Sequence[str], settings: dict[str, str]) -> dict[str, Any]:
        validation.app_id(app_id)
        validation.input_id(model_id)
        if model_id == "general":
            raise InvalidArgument("model id 'general' is reserved for the built-in model")
        self._runner(template)
        names = list(dict.fromkeys(validation.concept(c) for c in concepts))
        if len(names) < 2:
            raise InvalidArgument(f"a classifier needs at least two concepts (got {len(names)})")
        self.parse_settings(template, settings)  # validate now, not at training time
        return self.store.insert_model(app_id, model_id, template, names, dict(settings))

    def model(self, app_id: str, model_id: str) -> dict[str, Any]:
        # INVALID_ARGUMENT for an empty or malformed id (an admin's TrainModel(app_id="") was
        # NOT_FOUND "in app ''"), as in every other service.
        validation.app_id(app_id)
        validation.input_id(model_id)
        m = self.store.get_model(app_id, model_id)
        if not m:
            raise NotFound(f"model {model_id!r} does not exist in app {app_id!r}")
        return m

    def list_versions(self, app_id: str, model_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the model, its versions)."""
        model = self.model(app_id, model_id)
        return model, self.store.list_versions(app_id, model_id)

    def version_row(self, app_id: str, model_id: str, version: str) -> dict[str, Any] | None:
        return self.store.get_version(app_id, model_id, int(version)) if version else None

    # -- jobs -------------------------------------------------------------------------
    def train(
        self,
        app_id: str,
        model_id: str,
        dataset_id: str,
        overrides: dict[str, str],
        promotion: tuple[str, float] | None = None,
        require_passing_check: bool = False,
    ) -> dict[str, Any]:
        """Queue a job. ``promotion`` = (validation metric, min gain) of the promotion rule
        (default: the template's primary metric, strictly higher). A dataset version whose
        recorded health check failed is trained on with a warning (the job's first progress
        message), or refused with ``require_passing_check``."""
        model = self.model(app_id, model_id)
        if promotion is not None:
            if promotion[0] not in evaluation.METRICS:
                raise InvalidArgument(f"unknown promotion metric {promotion[0]!r} (known: {', '.join(evaluation.METRICS)})")
            if not promotion[1] >= 0:
                raise InvalidArgument(f"promotion min_gain must be >= 0 (got {promotion[1]})")
        settings = {**model["settings"], **overrides}
        self.parse_settings(model["template"], settings)
        self.dataset_for(model, dataset_id)  # fail fast with a precise status
        warning = self._health_warning(app_id, dataset_id)
        if warning and require_passing_check:
            raise FailedPrecondition(f"{warning} (require_passing_check is set: fix the data, or train without it)")
        job_id = uuid.uuid4().hex[:16]
        if promotion is not None:
            self._promotion[job_id] = promotion
        self.store.insert_job(job_id, app_id, model_id, dataset_id, settings, QUEUED)
        self.log.add(job_id, Progress(QUEUED, "queued", 0.0, {}, warning))
        self.pool.submit(self._run, job_id)
        return self.job(job_id)

    def _health_warning(self, app_id: str, dataset_id: str) -> str:
        """Words on the latest version's recorded health check when it failed ("" otherwise)."""
        ds = self.store.latest_dataset(app_id, dataset_id) or {}
        health = ds.get("health") or {}
        if health.get("status") != "fail":
            return ""
        failing = "; ".join(f"{c['name']}: {c['message']}" for c in health.get("checks", []) if c.get("status") == "fail")
        return f"dataset {dataset_id!r} version {ds['version']} fails its health check ({failing})"

    def job(self, job_id: str, app_id: str | None = None) -> dict[str, Any]:
        job = self.store.get_job(job_id)
        if not job or (app_id and job["app_id"] != app_id):
            raise NotFound(f"training job {job_id!r} does not exist")
        return job

    def step(self, job_id: str, stage: str, progress: float, metrics: dict[str, float] | None = None, message: str = "", state: int = RUNNING) -> None:
        """One progress row of a job: its stored state and the progress stream."""
        self.store.update_job(job_id, state=state, progress=progress)
        self.log.add(job_id, Progress(state, stage, progress, metrics or {}, message))

    def publish_progress(self, event: JobProgressed) -> None:
        """A ``training.progress`` row; a broker hiccup must not fail the job (the gRPC stream
        and the job row carry the same progress)."""
        try:
            self.events.job_progressed(event)
        except Exception:  # progress events are best-effort
            log.warning("could not publish training progress of job %s", event.job_id, exc_info=True)

    def recover_interrupted_jobs(self) -> None:
        """At start-up, jobs that were queued or running when the process died: resumable
        templates (deep: epochs are expensive) continue from their last checkpoint; heads train
        in seconds, so they are marked failed with the reason rather than silently re-run; a job
        whose cancel was stored before the process died ends CANCELLED."""
        for job in self.store.jobs_in_states([QUEUED, RUNNING]):
            model = self.store.get_model(job["app_id"], job["model_id"])
            runner = self.runners.get(model["template"]) if model else None
            if job.get("cancel_requested"):
                self.store.update_job(job["id"], state=CANCELLED, error="cancelled")
            elif runner is not None and runner.resumable:
                self.resume(job["id"])
            else:
                self.store.update_job(job["id"], state=FAILED, error="the training service restarted during this job; train again")

    def resume(self, job_id: str) -> None:
        """Queue a job that was queued or running when the service stopped (deep jobs continue from
        their last checkpoint)."""
        self.log.add(job_id, Progress(QUEUED, "queued", 0.0, message="resuming after a service restart"))
        self.pool.submit(self._run, job_id)

    def cancel(self, job_id: str, app_id: str | None = None) -> dict[str, Any]:
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
        runner: TemplateRunner | None = None
        try:
            job = self.job(job_id)
            if job["state"] in TERMINAL:  # cancelled while queued
                return
            self.store.update_job(job_id, state=RUNNING)
            model = self.model(job["app_id"], job["model_id"])
            runner = self._runner(model["template"])
            ds, rows = self.dataset_for(model, job["dataset_id"])
            run = _Run(self, job, model, ds, rows)
            candidate = runner.train(run)
            self._record_version(run, candidate, runner.progress_events)
        except Interrupted:
            log.info("training job %s interrupted by shutdown; it resumes at the next start", job_id)
        except JobCancelled:
            progress = self.job(job_id)["progress"]
            self.store.update_job(job_id, state=CANCELLED, error="cancelled")
            self.log.add(job_id, Progress(CANCELLED, "cancelled", progress, message="cancelled"))
            self._publish_end(job_id, runner, CANCELLED, "cancelled")
        except Exception as exc:  # a failed job records why; the worker lives on
            log.exception("training job %s failed", job_id)
            message = str(exc) if isinstance(exc, (InvalidArgument, FailedPrecondition, NotFound)) else f"{type(exc).__name__}: {exc}"
            self.store.update_job(job_id, state=FAILED, error=message)
            self.log.add(job_id, Progress(FAILED, "failed", 1.0, message=message))
            self._publish_end(job_id, runner, FAILED, message)
        finally:
            if not self.stopping.is_set():  # a job interrupted by shutdown resumes at the next start
                self._forget_job(job_id)

    def _forget_job(self, job_id: str) -> None:
        """Per-job state a finished job no longer needs (one entry per job would stay forever)."""
        with self._cancel_lock:
            self._cancelled.discard(job_id)
            self._cancel_checked.pop(job_id, None)
        self._promotion.pop(job_id, None)

    def _publish_end(self, job_id: str, runner: TemplateRunner | None, state: int, message: str) -> None:
        job = self.store.get_job(job_id)
        if job and runner is not None and runner.progress_events:
            self.publish_progress(JobProgressed(job["app_id"], job_id, job["model_id"], state, message))

    def _record_version(self, run: _Run, candidate: Candidate, progress_events: bool) -> None:
        """The one path from a trained candidate to a recorded version, for every template:
        export it, decide its promotion with the one rule, record it, serve it if promoted, and
        announce it on ``model.version.ready``."""
        job, model, ds = run.job, run.model, run.dataset
        job_id, app_id, model_id = job["id"], job["app_id"], job["model_id"]
        self.step(job_id, "exporting", 0.9, metrics=candidate.validation_metrics)
        version = self.store.next_version(app_id, model_id)
        exported = candidate.export(version)

        serving = model["serving_version"]
        previous = self.store.get_version(app_id, model_id, int(serving)) if serving else None
        # The policy's metric where this template reports it, else its primary metric; strictly
        # better by more than the policy's minimum gain.
        policy_metric, min_gain = self._promotion.pop(job_id, ("", 0.0))
        promote, note = decide_promotion(
            candidate.deciding,
            None if previous is None else serving_metrics(previous),
            policy_metric,
            min_gain,
            primary=candidate.primary_metric,
        )
        if previous is not None:
            note = note.replace("vs serving", f"vs serving v{serving}", 1)
        self.store.insert_version(
            app_id=app_id,
            model_id=model_id,
            version=version,
            dataset_id=ds["id"],
            dataset_version=ds["version"],
            settings=job["settings"],
            validation_metrics=candidate.validation_metrics,
            train_report=exported.train_report,
            train_seconds=candidate.train_seconds,
            triton_model=exported.triton_model,
            activation=candidate.activation,
            promotion_note=note,
        )
        if promote:
            self.store.set_serving(app_id, model_id, str(version))
        self.events.version_ready(
            VersionReady(
                app_id, model_id, str(version), exported.triton_model, list(model["concepts"]), promote, candidate.activation,
                kind=candidate.kind, image_size=candidate.image_size, embedding_model=candidate.embedding_model,
            )
        )  # fmt: skip
        self.store.update_job(job_id, state=SUCCEEDED, version=str(version), progress=1.0)
        message = f"version {version}: {note}"
        self.log.add(job_id, Progress(SUCCEEDED, "done", 1.0, candidate.validation_metrics, message))
        if progress_events:
            self.publish_progress(JobProgressed(app_id, job_id, model_id, SUCCEEDED, message))

    # -- evaluation -------------------------------------------------------------------
    def _version(self, app_id: str, model_id: str, version: str) -> dict[str, Any]:
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

    def evaluate(self, app_id: str, model_id: str, version: str, split: int) -> dict[str, Any]:
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
        runner = self._runner(model["template"])
        report = runner.evaluate(app_id, model, v, rows)
        title = f"{model_id} v{v['version']} on {SPLIT_NAMES[split]} ({len(rows)} inputs)"
        with tempfile.TemporaryDirectory() as tmp:
            png_path = Path(tmp) / "confusion.png"
            evaluation.render_confusion_matrix_png(report, png_path, title)
            png = png_path.read_bytes()
        markdown = evaluation.render_report_markdown(report, title, {"dataset": f"{v['dataset_id']} ({v['dataset_version'][:12]})", "settings": v["settings"]})
        self.store.save_evaluation(app_id, model_id, v["version"], split, report.to_dict(), markdown, png)
        return {
            "version": str(v["version"]),
            "split": split,
            "report": report,
            "png": png,
            "markdown": markdown,
            "count": len(rows),
            "predictions": self._predictions(runner, app_id, model, v, rows, report),
        }

    def _predictions(
        self, runner: TemplateRunner, app_id: str, model: dict[str, Any], v: dict[str, Any], rows: list[DatasetRow], report: evaluation.EvaluationReport
    ) -> list[tuple[str, str, str, float]]:
        """Which input lands in which confusion cell: (input, true, predicted, probability) for
        single-label heads (scored again on the same stored embeddings); [] for a multi-label
        matrix (it counts pairs) and for deep templates (their network runs in Triton)."""
        if report.multilabel:
            return []
        try:
            scores = runner.score(app_id, model, v, [r.input_id for r in rows])
        except FailedPrecondition:
            return []
        if scores.activation != "softmax":
            return []
        truth = {r.input_id: r.concepts for r in rows}
        return evaluation.top1_predictions(scores.input_ids, [truth[i] for i in scores.input_ids], scores.proba, list(model["concepts"]))

    def promote(
        self, app_id: str, model_id: str, version: str, metric: str = "", min_gain: float = 0.0, override_reason: str = ""
    ) -> tuple[dict[str, Any], bool, str, str]:
        """A person promotes a version: the one promotion rule (``decide_promotion``, as after
        training) still decides against the serving version's validation metrics; a refusal
        stands unless ``override_reason`` says why (kept in the version's promotion note with
        the rule's verdict). Returns (model, promoted, note, previous serving version)."""
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
        experiment = (v.get("train_report") or {}).get("experiment") or {}
        ok, verdict = decide_promotion(
            serving_metrics(v),
            None if previous is None else serving_metrics(previous),
            metric,
            min_gain,
            primary=experiment.get("primary_metric") or "accuracy",
        )
        if previous is not None:
            verdict = verdict.replace("vs serving", f"vs serving v{serving}", 1)
        if not ok and not override_reason.strip():
            raise FailedPrecondition(f"the promotion rule refuses version {v['version']}: {verdict}")
        note = f"promoted by hand: {verdict}" if ok else f"promoted by hand over the rule ({override_reason.strip()}); the rule said: {verdict}"
        self.store.set_promotion_note(app_id, model_id, int(v["version"]), note[:1024])
        self.store.set_serving(app_id, model_id, str(v["version"]))
        self.events.version_ready(
            VersionReady(
                app_id, model_id, str(v["version"]), v["triton_model"], list(model["concepts"]), True, v["activation"],
                kind=str(experiment.get("kind") or ""), image_size=int(experiment.get("image_size") or 0),
                embedding_model=str((v.get("train_report") or {}).get("embedding_model") or ""),
            )
        )  # fmt: skip
        return self.model(app_id, model_id), True, note, serving

    def stored_evaluation(self, app_id: str, model_id: str, version: str, split: int) -> tuple[str, int, dict[str, float]]:
        """(version, split, headline metrics) of the evaluation an earlier ``evaluate`` stored."""
        v = self._version(app_id, model_id, version)
        split = split or 2
        if split not in SPLIT_NAMES:
            raise InvalidArgument(f"unknown split {split}")
        stored = self.store.get_evaluation(app_id, model_id, v["version"], split)
        if not stored:
            raise NotFound(f"model {model_id!r} version {v['version']} has no stored evaluation on the {SPLIT_NAMES[split]} split")
        return str(v["version"]), split, evaluation.headline(evaluation.EvaluationReport.from_dict(stored))

    def dataset_rows_page(self, app_id: str, dataset_id: str, version: str, page_size: int, page_token: str, flt: RowFilter) -> RowsPage:
        """A page of a dataset version's rows matching ``flt`` (by input id); the latest version
        when ``version`` is empty, or the version ``page_token`` pins; the whole match when
        ``page_size`` is 0. The token is ``<version>.<opaque position>``: the version is named
        (a content hash the response shows anyway) so that later pages need not repeat it; the
        position is encrypted, and the token is authenticated for the app, dataset, version
        and filter (like ListInputs' tokens)."""
        validation.app_id(app_id)
        validation.input_id(dataset_id)
        size = validation.page_size(page_size, default=0, maximum=MAX_ROWS_PAGE)
        for c in flt.concepts:
            validation.concept(c)
        if flt.split not in (0, *SPLIT_NAMES):
            raise InvalidArgument(f"unknown split {flt.split}")
        pinned, _, position = page_token.rpartition(".")
        if page_token:
            if not pinned:
                raise InvalidArgument("page_token is not a token returned by this service for this listing")
            if version and version != pinned:
                raise InvalidArgument(f"page_token is a page of dataset version {pinned[:80]!r}, not {version[:80]!r}")
            version = pinned
        elif not version:
            version = self._latest_dataset(app_id, dataset_id)["version"]
        elif not self.store.has_dataset_version(app_id, dataset_id, version):
            raise NotFound(f"dataset {dataset_id!r} has no version {version!r} in app {app_id!r}")
        scope = json.dumps([app_id, dataset_id, version, sorted(flt.concepts), flt.split, flt.labeled])
        offset = validation.decode_page_token("dsrows", position, scope)
        rows, total = self.store.dataset_rows_page(
            app_id, dataset_id, version, offset, size or None, concepts=flt.concepts, split=flt.split, labeled=flt.labeled
        )  # fmt: skip
        end = offset + len(rows)
        token = f"{version}.{validation.encode_page_token('dsrows', end, scope)}" if size and end < total else ""
        return RowsPage(version, rows, token, total)

    def score_inputs(self, app_id: str, model_id: str, version: str, input_ids: Sequence[str]) -> dict[str, Any]:
        """A version's probabilities on the inputs' stored embeddings (inputs without one are
        left out), what curation's strategies rank by: version, concepts, input_ids, proba
        ([inputs, concepts] float32) and activation."""
        if len(input_ids) > MAX_SCORED:
            raise InvalidArgument(f"at most {MAX_SCORED} input ids per call (got {len(input_ids)})")
        for i in input_ids:
            validation.input_id(i)
        model = self.model(app_id, model_id)
        v = self._version(app_id, model_id, version)
        scores = self._runner(model["template"]).score(app_id, model, v, list(input_ids))
        return {
            "version": str(v["version"]), "concepts": list(model["concepts"]), "input_ids": scores.input_ids,
            "proba": scores.proba, "activation": scores.activation,
        }  # fmt: skip

    def head_weights(self, app_id: str, model_id: str, version: str) -> dict[str, Any]:
        """A head version's arrays (the curation service's explanations run them through the
        backbone): version, template, concepts, W, b, activation, normalize, embedding_model."""
        model = self.model(app_id, model_id)
        v = self._version(app_id, model_id, version)
        head, embedding_model = self._runner(model["template"]).head(model, v)
        return {
            "version": str(v["version"]), "template": model["template"], "concepts": list(head.concepts), "W": head.W, "b": head.b,
            "activation": head.activation, "normalize": bool(head.normalize), "embedding_model": embedding_model,
        }  # fmt: skip

    def deep_explainer(self, app_id: str, model_id: str, version: str) -> dict[str, Any]:
        """A deep classifier version split for Grad-CAM (curation's explanations): version,
        template, concepts, activation, image_size, torchscript (bytes)."""
        model = self.model(app_id, model_id)
        v = self._version(app_id, model_id, version)
        data, meta = self._runner(model["template"]).explainer(model, v)
        return {
            "version": str(v["version"]), "template": model["template"], "concepts": list(meta["concepts"]),
            "activation": v["activation"], "image_size": int(meta["image_size"]), "torchscript": data,
        }  # fmt: skip

    def compare(self, app_id: str, model_id: str, version_ids: Sequence[str], split: int) -> dict[str, Any]:
        all_versions = [str(v["version"]) for v in self.store.list_versions(app_id, model_id)] if not version_ids else list(version_ids)
        if not all_versions:
            raise FailedPrecondition(f"model {model_id!r} has no trained version yet")
        results = {v: self.evaluate(app_id, model_id, v, split) for v in all_versions}
        comparison = evaluation.compare({f"v{v}": r["report"] for v, r in results.items()})
        return {"results": results, "best": (comparison.best or "").lstrip("v"), "markdown": evaluation.render_comparison_markdown(comparison)}

    def shutdown(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
