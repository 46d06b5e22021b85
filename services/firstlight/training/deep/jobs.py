"""Deep template jobs inside the TrainingService: fetch the dataset's pixels, run the template's
torch loop in the worker thread with a context that streams progress (gRPC stream, the job row,
the ``training.progress`` topic), honours cancellation, and checkpoints under the service's data
dir so a restarted service resumes the job; then export to Triton, record the version with its
experiment record (hyperparameters, dataset version, metrics, timings) and announce it.

Called by :class:`firstlight.training.service.TrainingService` (``service`` below); kept apart so
the service module stays about orchestration of every template kind."""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firstlight.errors import FailedPrecondition
from firstlight.domain import evaluation, promotion as promotion_rule
from firstlight.training.deep import hyper as deep_hyper
from firstlight.training.deep.context import Box, DeepData, DeepTemplate, DeepTrainResult, EpochReport, LabeledImages
from firstlight.training.deep.loop import LocalContext, default_device, prepare_images
from firstlight.training.deep.triton_export import export_deep, load_exported, run_exported

if TYPE_CHECKING:
    from firstlight.training.service import TrainingService
    from firstlight.training.store import DatasetRow

log = logging.getLogger(__name__)

DEEP_TEMPLATES = ("visual_classifier", "visual_detector", "visual_embedder")
_MODULES = {"visual_classifier": "classifier", "visual_detector": "detector", "visual_embedder": "embedder"}
# Share of the job's progress bar spent in the epoch loop (the rest: fetching, export).
_FETCH, _LOOP = 0.05, 0.85


class Interrupted(Exception):
    """The service is shutting down: the job stops between batches and stays RUNNING (resumed from
    its checkpoint at the next start). Deliberately not a JobCancelled."""


def template(name: str) -> DeepTemplate:
    """The template object (``TEMPLATE`` of ``firstlight.training.deep.<kind>``); importing it also
    registers its own settings."""
    if name not in _MODULES:
        raise FailedPrecondition(f"unknown deep template {name!r}")
    try:
        module = importlib.import_module(f"firstlight.training.deep.{_MODULES[name]}")
    except ImportError as exc:
        raise FailedPrecondition(f"template {name} is not available in this build: {exc}") from None
    return module.TEMPLATE


def parse(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validated hyperparameters with defaults; INVALID_ARGUMENT naming a bad key."""
    try:
        template(name)  # registers the template's own settings
    except FailedPrecondition:
        pass  # the shared names still validate; training will say the template is missing
    return deep_hyper.parse_deep(name, settings)


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (bool, int, float, str)) or v is None else str(v)) for k, v in d.items()}


class ServiceContext(LocalContext):
    """A :class:`DeepTrainContext` whose progress rows go to the job log (gRPC stream), the job
    row and the ``training.progress`` topic, with an ETA; cancelled through the service."""

    def __init__(self, service: TrainingService, job: dict, model: dict, data: DeepData, h: Mapping[str, Any]) -> None:
        super().__init__(data, h, service.work_root / job["id"], seed=0, device=default_device())
        self.service = service
        self.job = job
        self.model = model
        self.started = time.perf_counter()

    def check_cancelled(self) -> None:
        if self.service.stopping.is_set():
            raise Interrupted(self.job["id"])
        if self.service.is_cancelled(self.job["id"]):
            self.cancel()
        super().check_cancelled()

    def report(self, row: EpochReport) -> None:
        super().report(row)
        from firstlight.training.service import RUNNING, Progress

        # ETA from the epochs this process ran (resumed epochs ran on another clock).
        mean = float(np.mean([r.seconds for r in self.rows]))
        eta = mean * (row.num_epochs - row.epoch)
        progress = _FETCH + _LOOP * row.epoch / row.num_epochs
        self.service.store.update_job(self.job["id"], state=RUNNING, progress=progress)
        self.service.log.add(
            self.job["id"],
            Progress(
                RUNNING, "training", progress, dict(row.metrics), row.note or f"epoch {row.epoch}/{row.num_epochs}",
                epoch=row.epoch, num_epochs=row.num_epochs, loss=row.loss, lrate=row.lrate, eta_seconds=eta,
                items_per_second=row.items_per_second,
            ),
        )
        _publish(self.service, self.job, RUNNING, row=row, eta=eta, message=row.note)


def _publish(service: TrainingService, job: dict, state: int, *, row: EpochReport | None = None, eta: float = 0.0, message: str = "") -> None:
    """One ``training.progress`` row; a broker hiccup must not fail the job (the gRPC stream and
    the job row carry the same progress)."""
    publish = getattr(service.platform, "publish_progress", None)
    if publish is None:
        return
    from firstlight.messaging.bus import new_header
    from firstlight.v1 import events_pb2

    event = events_pb2.TrainingProgressed(
        header=new_header("training", f"{job['id']}/{row.epoch if row else 'end'}/{state}"),
        app_id=job["app_id"], job_id=job["id"], model_id=job["model_id"], state=state, message=message,
        eta_seconds=eta,
    )
    if row is not None:
        event.epoch, event.num_epochs, event.loss, event.lrate = row.epoch, row.num_epochs, row.loss, row.lrate
        event.items_per_second = row.items_per_second
        event.metrics.update(row.metrics)
    try:
        publish(event)
    except Exception:  # noqa: BLE001 - progress events are best-effort
        log.warning("could not publish training progress of job %s", job["id"], exc_info=True)


def publish_end(service: TrainingService, job_id: str, state: int, message: str) -> None:
    job = service.store.get_job(job_id)
    if not job:
        return
    model = service.store.get_model(job["app_id"], job["model_id"])
    if model and model["template"] in DEEP_TEMPLATES:
        _publish(service, job, state, message=message)


def _split(
    service: TrainingService,
    app_id: str,
    rows: list[DatasetRow],
    images: dict[str, np.ndarray],
    regions: dict[str, list[Box]] | None = None,
) -> LabeledImages:
    if regions is None:
        return LabeledImages([r.input_id for r in rows], [images[r.input_id] for r in rows], [list(r.concepts) for r in rows])
    # Detection: only inputs with box labels of the model's concepts. An input labeled with a
    # concept but no box for it would otherwise teach the detector that the object is absent.
    boxed = [r for r in rows if regions.get(r.input_id)]
    if not boxed:
        return LabeledImages([], [], [], None)  # the template says which split has no boxes
    boxes = [regions[r.input_id] for r in boxed]
    return LabeledImages(
        [r.input_id for r in boxed],
        [images[r.input_id] for r in boxed],
        [list(dict.fromkeys(b.concept for b in objs)) for objs in boxes],
        boxes,
    )


def fetch_regions(service: TrainingService, app_id: str, rows: list[DatasetRow], concepts: list[str]) -> dict[str, list[Box]]:
    """Box labels of ``rows``, restricted to the model's concepts: the boxes frozen with the
    dataset version (so a job trains on what the version says, whatever was relabeled since),
    or, for versions frozen before boxes were snapshotted, today's boxes from ingestion."""
    known = set(concepts)
    got = {r.input_id: r.regions for r in rows if r.regions is not None}
    stale = [r.input_id for r in rows if r.regions is None]
    if stale:
        fetch = getattr(service.platform, "regions", None)
        if fetch is None:
            raise FailedPrecondition("visual_detector needs box labels, and this platform cannot read regions")
        got.update(fetch(app_id, stale))
    return {i: [Box(x0, y0, x1, y1, c) for c, x0, y0, x1, y1 in objs if c in known] for i, objs in got.items()}


def fetch_images(service: TrainingService, app_id: str, rows: list[DatasetRow], image_size: int) -> dict[str, np.ndarray]:
    """Pixels of ``rows``, shrunk on arrival to the side the templates resize to anyway (the
    shorter side the center crop starts from: image_size × 256/224), aspect kept so normalised
    boxes stay valid."""
    ids = [r.input_id for r in rows]
    images = service.platform.images(app_id, ids, short_side=round(image_size * 256 / 224))
    missing = [i for i in ids if i not in images]
    if missing:
        raise FailedPrecondition(f"{len(missing)} inputs have no readable image (e.g. {missing[0]!r})")
    return images


def train_deep(service: TrainingService, job_id: str) -> None:
    from firstlight.training.service import SUCCEEDED, Progress

    started = time.perf_counter()
    job = service.job(job_id)
    app_id, model_id = job["app_id"], job["model_id"]
    model = service.model(app_id, model_id)
    tpl = template(model["template"])
    h = parse(model["template"], job["settings"])
    ds, rows = service._dataset_for(model, job["dataset_id"])
    service._step(job_id, "fetching images", 0.01, message=f"{len(rows)} images of dataset {ds['id']}")
    images = fetch_images(service, app_id, rows, int(h["image_size"]))
    regions = fetch_regions(service, app_id, rows, list(model["concepts"])) if model["template"] == "visual_detector" else None
    by_split = {s: [r for r in rows if r.split == s] for s in (1, 2, 3)}
    data = DeepData(list(model["concepts"]), *(_split(service, app_id, by_split[s], images, regions) for s in (1, 2, 3)))
    del images
    fetch_seconds = time.perf_counter() - started
    ctx = ServiceContext(service, job, model, data, h)
    resumed = ctx.load_checkpoint()
    note = f"resuming after epoch {resumed['epoch']}" if resumed else f"{len(data.train)} training images"
    del resumed
    service._step(job_id, "training", _FETCH, message=f"{model['template']} on {ctx.device}: {note}")
    result: DeepTrainResult = tpl.fit(ctx)
    ctx.check_cancelled()

    service._step(job_id, "exporting", 0.92, metrics=result.validation)
    version = service.store.next_version(app_id, model_id)
    t_export = time.perf_counter()
    triton_model = export_deep(service.repository, app_id, model_id, version, result, list(model["concepts"]))
    export_seconds = time.perf_counter() - t_export
    artifacts_dir = ctx.work_dir / f"v{version}"
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    for name, blob in result.artifacts.items():
        (artifacts_dir / Path(name).name).write_bytes(blob)

    primary = result.primary_metric
    serving = model["serving_version"]
    previous = service.store.get_version(app_id, model_id, int(serving)) if serving else None
    # The one promotion rule (training.evaluation.decide_promotion), as for heads: the policy's
    # metric where this template reports it, else its primary metric; strictly better by more
    # than the policy's minimum gain.
    policy_metric, min_gain = service._promotion.pop(job_id, ("", 0.0))
    promote, promotion = promotion_rule.decide_promotion(
        result.validation,
        None if previous is None else (previous.get("validation_metrics") or {}),
        policy_metric,
        min_gain,
        primary=primary,
    )
    if previous is not None:
        promotion = promotion.replace("vs serving", f"vs serving v{serving}", 1)
    timings = {
        "fetch_seconds": fetch_seconds,
        **{k: float(v) for k, v in result.timings.items()},
        "export_seconds": export_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    experiment = {
        "template": model["template"],
        "hyperparameters": _json_safe(h),
        "dataset_id": ds["id"],
        "dataset_version": ds["version"],
        "counts": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        "validation": result.validation,
        "test": result.test,
        "primary_metric": primary,
        "timings": timings,
        "device": ctx.device,
        "seed": ctx.seed,
        "kind": result.kind,
        "image_size": result.image_size,
        "artifacts": sorted(str(artifacts_dir / Path(n).name) for n in result.artifacts),
        # the whole run (epochs before a restart included) when the template reports it
        "history": result.report.get("history") or [r.__dict__ for r in ctx.rows],
        "epochs_run_in_this_process": [r.epoch for r in ctx.rows],
    }
    service.store.insert_version(
        app_id=app_id,
        model_id=model_id,
        version=version,
        dataset_id=ds["id"],
        dataset_version=ds["version"],
        settings=job["settings"],
        validation_metrics=result.validation,
        train_report=json.loads(json.dumps({"experiment": experiment, "fit": result.report}, default=str)),
        train_seconds=float(result.timings.get("train_seconds", timings["total_seconds"])),
        triton_model=triton_model,
        activation=str(result.report.get("activation", "")),
        promotion_note=promotion,
    )
    if promote:
        service.store.set_serving(app_id, model_id, str(version))
    service.platform.publish_version(
        app_id, model_id, str(version), triton_model, list(model["concepts"]), promote,
        str(result.report.get("activation", "")), kind=result.kind, image_size=result.image_size,
    )
    service.store.update_job(job_id, state=SUCCEEDED, version=str(version), progress=1.0)
    message = f"version {version}: {promotion}"
    service.log.add(job_id, Progress(SUCCEEDED, "done", 1.0, result.validation, message))
    _publish(service, job, SUCCEEDED, message=message)


def evaluate_version(service: TrainingService, app_id: str, model: dict, v: dict, rows: list[DatasetRow]) -> evaluation.EvaluationReport:
    """Re-evaluate an exported deep classifier version on ``rows`` (its TorchScript, in-process)."""
    module, meta = load_exported(service.repository, v["triton_model"], v["version"])
    if meta["kind"] != "classifier":
        raise FailedPrecondition(f"evaluation reports exist for classifiers; {model['template']} versions carry their metrics in ListModelVersions")
    images = fetch_images(service, app_id, rows, int(meta["image_size"]))
    pixels = prepare_images([images[r.input_id] for r in rows], int(meta["image_size"]))
    probs = run_exported(module, pixels)[0]
    multilabel = v["activation"] == "sigmoid"
    truth: list[Any] = [r.concepts for r in rows] if multilabel else [r.concepts[0] for r in rows]
    return evaluation.evaluate(truth, probs, model["concepts"], multilabel=multilabel)
