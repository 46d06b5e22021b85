"""Deep template jobs (``visual_classifier``, ``visual_detector``, ``visual_embedder``): fetch the
dataset's pixels, run the template's torch loop in the worker thread with a context that streams
progress (through the core's :class:`~firstlight.training.ports.JobRun`: the gRPC stream, the job
row and the ``training.progress`` topic), honours cancellation, and checkpoints under the job's
work dir so a restarted service resumes the job. The candidate goes back to the core, which
exports it, decides its promotion and announces it (the one path every template takes)."""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from firstlight.domain import evaluation
from firstlight.errors import FailedPrecondition
from firstlight.training.deep import hyper as deep_hyper
from firstlight.training.deep.context import (
    Box,
    DeepData,
    DeepTemplate,
    DeepTrainResult,
    EpochReport,
    LabeledImages,
)
from firstlight.training.deep.loop import LocalContext, default_device, prepare_images
from firstlight.training.deep.triton_export import run_exported
from firstlight.training.ports import (
    Candidate,
    Exported,
    Interrupted,
    JobCancelled,
    JobProgressed,
    JobRun,
    ModelRepository,
    Peers,
    Scores,
)
from firstlight.training.records import RUNNING, DatasetRow

log = logging.getLogger(__name__)

DEEP_TEMPLATES = ("visual_classifier", "visual_detector", "visual_embedder")
_MODULES = {"visual_classifier": "classifier", "visual_detector": "detector", "visual_embedder": "embedder"}
# Share of the job's progress bar spent in the epoch loop (the rest: fetching, export).
_FETCH, _LOOP = 0.05, 0.85

__all__ = ["DEEP_TEMPLATES", "DeepRunner", "Interrupted", "fetch_images", "fetch_regions", "parse", "template"]


def template(name: str) -> DeepTemplate:
    """The template object (``TEMPLATE`` of ``firstlight.training.deep.<kind>``); importing it also
    registers its own settings."""
    if name not in _MODULES:
        raise FailedPrecondition(f"unknown deep template {name!r}")
    try:
        module = importlib.import_module(f"firstlight.training.deep.{_MODULES[name]}")
    except ImportError as exc:
        raise FailedPrecondition(f"template {name} is not available in this build: {exc}") from None
    tpl: DeepTemplate = module.TEMPLATE
    return tpl


def parse(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validated hyperparameters with defaults; INVALID_ARGUMENT naming a bad key."""
    try:
        template(name)  # registers the template's own settings
    except FailedPrecondition:
        pass  # the shared names still validate; training will say the template is missing
    return deep_hyper.parse_deep(name, settings)


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (bool, int, float, str)) or v is None else str(v)) for k, v in d.items()}


class RunContext(LocalContext):
    """A :class:`DeepTrainContext` whose progress rows go to the job (stream, job row,
    ``training.progress``) with an ETA, and whose cancellation is the job's."""

    def __init__(self, run: JobRun, data: DeepData, h: Mapping[str, Any]) -> None:
        super().__init__(data, h, run.work_dir, seed=0, device=default_device())
        self.run = run
        self.started = time.perf_counter()

    def check_cancelled(self) -> None:
        try:
            self.run.check_cancelled()  # Interrupted on shutdown (propagates), JobCancelled after a cancel
        except JobCancelled:
            self.cancel()
        super().check_cancelled()

    def report(self, row: EpochReport) -> None:
        super().report(row)
        # ETA from the epochs this process ran (resumed epochs ran on another clock).
        mean = float(np.mean([r.seconds for r in self.rows]))
        eta = mean * (row.num_epochs - row.epoch)
        job = self.run.job
        self.run.epoch(
            _FETCH + _LOOP * row.epoch / row.num_epochs,
            JobProgressed(
                job["app_id"], job["id"], job["model_id"], RUNNING, message=row.note, eta_seconds=eta, epoch=row.epoch,
                num_epochs=row.num_epochs, loss=row.loss, lrate=row.lrate, items_per_second=row.items_per_second,
                metrics=dict(row.metrics),
            ),
        )  # fmt: skip


def _split(rows: list[DatasetRow], images: dict[str, np.ndarray], regions: dict[str, list[Box]] | None = None) -> LabeledImages:
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


def fetch_regions(peers: Peers, app_id: str, rows: list[DatasetRow], concepts: list[str]) -> dict[str, list[Box]]:
    """Box labels of ``rows``, restricted to the model's concepts: the boxes frozen with the
    dataset version (so a job trains on what the version says, whatever was relabeled since),
    or, for versions frozen before boxes were snapshotted, today's boxes from ingestion."""
    known = set(concepts)
    got = {r.input_id: r.regions for r in rows if r.regions is not None}
    stale = [r.input_id for r in rows if r.regions is None]
    if stale:
        fetch = getattr(peers, "regions", None)
        if fetch is None:
            raise FailedPrecondition("visual_detector needs box labels, and this platform cannot read regions")
        got.update(fetch(app_id, stale))
    return {i: [Box(x0, y0, x1, y1, c) for c, x0, y0, x1, y1 in objs if c in known] for i, objs in got.items()}


def fetch_images(peers: Peers, app_id: str, rows: list[DatasetRow], image_size: int) -> dict[str, np.ndarray]:
    """Pixels of ``rows``, shrunk on arrival to the side the templates resize to anyway (the
    shorter side the center crop starts from: image_size × 256/224), aspect kept so normalised
    boxes stay valid."""
    ids = [r.input_id for r in rows]
    images = peers.images(app_id, ids, short_side=round(image_size * 256 / 224))
    missing = [i for i in ids if i not in images]
    if missing:
        raise FailedPrecondition(f"{len(missing)} inputs have no readable image (e.g. {missing[0]!r})")
    return images


class DeepRunner:
    templates = DEEP_TEMPLATES
    resumable = True  # epochs are expensive: a restarted service resumes from the checkpoint
    progress_events = True

    def __init__(self, peers: Peers, repository: ModelRepository) -> None:
        self.peers = peers
        self.repository = repository

    def parse(self, template: str, settings: dict[str, str]) -> object:
        return parse(template, settings)

    def train(self, run: JobRun) -> Candidate:
        started = time.perf_counter()
        job, model, ds, rows = run.job, run.model, run.dataset, run.rows
        app_id, model_id, concepts = job["app_id"], job["model_id"], list(model["concepts"])
        tpl = template(model["template"])
        h = parse(model["template"], job["settings"])
        run.step("fetching images", 0.01, message=f"{len(rows)} images of dataset {ds['id']}")
        images = fetch_images(self.peers, app_id, rows, int(h["image_size"]))
        regions = fetch_regions(self.peers, app_id, rows, concepts) if model["template"] == "visual_detector" else None
        by_split = {s: [r for r in rows if r.split == s] for s in (1, 2, 3)}
        data = DeepData(concepts, *(_split(by_split[s], images, regions) for s in (1, 2, 3)))
        del images
        fetch_seconds = time.perf_counter() - started
        ctx = RunContext(run, data, h)
        resumed = ctx.load_checkpoint()
        note = f"resuming after epoch {resumed['epoch']}" if resumed else f"{len(data.train)} training images"
        del resumed
        run.step("training", _FETCH, message=f"{model['template']} on {ctx.device}: {note}")
        result: DeepTrainResult = tpl.fit(ctx)
        ctx.check_cancelled()
        activation = str(result.report.get("activation", ""))

        def export(version: int) -> Exported:
            t_export = time.perf_counter()
            triton_model = self.repository.export_deep(app_id, model_id, version, result, concepts)
            export_seconds = time.perf_counter() - t_export
            artifacts_dir = ctx.work_dir / f"v{version}"
            artifacts_dir.mkdir(parents=True, exist_ok=True)
            for name, blob in result.artifacts.items():
                (artifacts_dir / Path(name).name).write_bytes(blob)
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
                "primary_metric": result.primary_metric,
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
            return Exported(triton_model, json.loads(json.dumps({"experiment": experiment, "fit": result.report}, default=str)))

        return Candidate(
            validation_metrics=dict(result.validation),
            deciding=dict(result.validation),
            primary_metric=result.primary_metric,
            # the fit's own clock when the template reports it, else the whole job so far
            train_seconds=float(result.timings.get("train_seconds", time.perf_counter() - started)),
            activation=activation,
            export=export,
            kind=result.kind,
            image_size=result.image_size,
        )

    def evaluate(self, app_id: str, model: dict[str, Any], version: dict[str, Any], rows: list[Any]) -> evaluation.EvaluationReport:
        """Re-evaluate an exported deep classifier version on ``rows`` (its TorchScript, in-process)."""
        module, meta = self.repository.load_deep(version["triton_model"], version["version"])
        if meta["kind"] != "classifier":
            raise FailedPrecondition(f"evaluation reports exist for classifiers; {model['template']} versions carry their metrics in ListModelVersions")
        images = fetch_images(self.peers, app_id, rows, int(meta["image_size"]))
        pixels = prepare_images([images[r.input_id] for r in rows], int(meta["image_size"]))
        probs = run_exported(module, pixels)[0]
        multilabel = version["activation"] == "sigmoid"
        truth: list[Any] = [r.concepts for r in rows] if multilabel else [r.concepts[0] for r in rows]
        return evaluation.evaluate(truth, probs, model["concepts"], multilabel=multilabel)

    def head(self, model: dict[str, Any], version: dict[str, Any]) -> tuple[Any, str]:
        raise FailedPrecondition(
            f"model {model['id']!r} is a {model['template']} model (a whole network, not a head on the stored embedding); "
            "head weights exist for transfer_classifier and oneshot_classifier models"
        )

    def explainer(self, model: dict[str, Any], version: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """(the version split for Grad-CAM as TorchScript bytes, its meta); classifiers only."""
        from firstlight.training.deep.explainer import explainer_bytes

        module, meta = self.repository.load_deep(version["triton_model"], version["version"])
        if meta["kind"] != "classifier":
            raise FailedPrecondition(f"model {model['id']!r} is a {model['template']} model; explanations exist for classifiers")
        return explainer_bytes(module, int(meta["image_size"])), meta

    def score(self, app_id: str, model: dict[str, Any], version: dict[str, Any], input_ids: list[str]) -> Scores:
        raise FailedPrecondition(
            f"model {model['id']!r} is a {model['template']} model; scoring stored embeddings works with transfer_classifier "
            "or oneshot_classifier models (heads on the stored embeddings)"
        )
