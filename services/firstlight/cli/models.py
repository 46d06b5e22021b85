"""Datasets and models: freeze a dataset version, train a model version, cancel a job."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from firstlight.cli.app import command
from firstlight.cli.errors import USAGE, fail
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console, progress_bar
from firstlight.v1 import training_pb2


def _split(split: str) -> tuple[float, float, float]:
    try:
        train, validation, test = (float(x) for x in split.split(","))
    except ValueError:
        fail(f"--split takes three numbers train,validation,test, got {split!r}", USAGE)
    return train, validation, test


@command()
def dataset(
    app_id: str,
    dataset_id: str,
    split: Annotated[str, typer.Option(help="train,validation,test counts (e.g. 500,100,100) or fractions (0.8,0.1,0.1)")] = "0.8,0.1,0.1",
    concept: Annotated[list[str] | None, typer.Option(help="Only inputs labeled with these concepts")] = None,
    seed: int = 0,
    from_inputs: Annotated[bool, typer.Option(help="Keep the split recorded on each input (none: train) instead of drawing one")] = False,
    group_duplicates: Annotated[bool, typer.Option(help="Keep exact and near-duplicates in one split, as a video's frames (no leaks)")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Freeze the app's labeled inputs into a dataset version with stratified splits."""
    parts = _split(split)
    is_counts = all(p.is_integer() and p > 1 for p in parts)
    counts = (int(parts[0]), int(parts[1]), int(parts[2])) if is_counts else None
    with client(data_dir) as fl:
        ds = fl.create_dataset(
            app_id,
            dataset_id,
            counts=counts,
            fractions=(0.8, 0.1, 0.1) if is_counts else parts,
            seed=seed,
            concepts=concept or [],
            from_inputs=from_inputs,
            group_duplicates=group_duplicates,
        )
    table = Table(title=f"dataset {ds.id} version {ds.version}")
    for col in ("concept", "train", "validation", "test"):
        table.add_column(col)
    for c in ds.counts:
        table.add_row(c.concept, str(c.train), str(c.validation), str(c.test))
    console.print(table)
    _print_health(ds)


def _print_health(ds: training_pb2.Dataset) -> None:
    """The health check recorded with the version: a failing one warns (training still runs
    unless asked to refuse it: `train --require-passing-check`)."""
    if not ds.HasField("health"):
        return
    h = ds.health
    colour = {"pass": "green", "warn": "yellow", "fail": "red"}.get(h.status, "dim")
    console.print(f"health check: [{colour}]{h.status}[/]" + (f" ({h.error})" if h.error else ""))
    for c in h.checks:
        if c.status in ("warn", "fail"):
            console.print(f"  [{'red' if c.status == 'fail' else 'yellow'}]{c.status}[/] {c.name}: {c.message}")
    if h.status in ("warn", "fail"):
        console.print(f"  details: firstlight check {ds.app_id} --dataset {ds.id} (adds the pixel checks)")


def _settings(setting: list[str]) -> dict[str, str]:
    bad = [s for s in setting if "=" not in s]
    if bad:
        fail(f"--set takes key=value, got {', '.join(map(repr, bad))}", USAGE)
    return dict(s.split("=", 1) for s in setting)


@command()
def train(
    app_id: str,
    model_id: str,
    dataset_id: Annotated[str, typer.Option("--dataset")],
    concept: Annotated[list[str] | None, typer.Option(help="Concepts (needed the first time a model is trained)")] = None,
    template: str = "transfer_classifier",
    setting: Annotated[list[str] | None, typer.Option("--set", help="key=value, e.g. --set C=0.5 --set augment_flip=true")] = None,
    require_passing_check: Annotated[bool, typer.Option(help="refuse a dataset version whose recorded health check failed")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Train a new version (creating the model if needed), following its progress.

    Deep templates (visual_classifier, visual_detector, visual_embedder) take hyperparameters with
    --set, e.g. --template visual_classifier --set architecture=resnet_scratch --set num_epochs=5;
    the bar shows epoch, loss, validation accuracy and ETA. Ctrl-C stops following (the job goes
    on: `firstlight cancel APP JOB` stops it)."""
    settings = _settings(setting or [])
    with client(data_dir) as fl:
        if concept:
            fl.create_model(app_id, model_id, concept, template=template, settings=settings, exist_ok=True)
        with progress_bar() as bar:
            task = bar.add_task(f"training {model_id}", total=100, rate="")

            def show(p: training_pb2.TrainingProgress) -> None:
                if p.stage == "queued" and p.message:  # the dataset version's failing health check
                    console.print(f"[yellow]warning:[/] {p.message}")
                bar.update(task, completed=p.progress * 100, rate=_progress_text(p), description=f"training {model_id} (job {p.job_id})")

            job = fl.train(
                app_id, model_id, dataset_id, settings=settings if not concept else None, on_progress=show, require_passing_check=require_passing_check
            )
        listed = fl.versions(app_id, model_id)
    v = next(v for v in listed.versions if v.version == job.version)
    metrics = ", ".join(f"{k} {x:.3f}" for k, x in sorted(v.validation_metrics.items()) if k != "n")
    console.print(f"version {v.version} trained in {v.train_seconds:.2f}s; validation: {metrics}")
    console.print(f"{'[green]serving[/green]' if v.serving else 'not promoted'}: {v.promotion_note}")
    if v.test_metrics:
        console.print("test: " + ", ".join(f"{k} {x:.3f}" for k, x in sorted(v.test_metrics.items()) if k != "n"))
    if v.timings:
        console.print("timings: " + ", ".join(f"{k} {x:.1f}" for k, x in sorted(v.timings.items())))
    fit = json.loads(v.fit_report_json or "{}")
    if fit.get("class_weighting"):
        console.print(f"class imbalance: {fit['class_weighting']} weights {fit.get('class_weights', '')}")


def _progress_text(p: training_pb2.TrainingProgress) -> str:
    """The bar's status: the stage, or for a deep template's epoch row its loss, lr, metric and ETA."""
    if not p.epoch:
        return p.stage
    text = f"epoch {p.epoch}/{p.num_epochs} loss {p.loss:.3f} lr {p.lrate:.2g}"
    if "accuracy" in p.metrics:
        text += f" val acc {p.metrics['accuracy']:.3f}"
    return text + (f" ETA {p.eta_seconds:.0f}s" if p.eta_seconds else "")


@command()
def cancel(app_id: str, job_id: str, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Cancel a queued or running training job (a deep template stops between batches)."""
    with client(data_dir) as fl:
        job = fl.cancel_training(app_id, job_id)
    console.print(f"job {job.id}: cancel requested (progress {job.progress:.0%})")
