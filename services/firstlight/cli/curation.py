"""Curation: what to label next, suspect labels, drift, and the stream's active-learning policy,
queue and rounds."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from firstlight.cli.app import command
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console
from firstlight.v1 import curation_pb2


@command()
def suggest(
    app_id: str,
    model_id: str,
    batch_size: int = 20,
    strategy: Annotated[str, typer.Option(help="Empty: the default strategy")] = "",
    version: Annotated[str, typer.Option(help="Model version (empty: the serving one)")] = "",
    record: Annotated[bool, typer.Option(help="Log this as a round of the app's experiment record (see `firstlight rounds`)")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Active learning: the unlabeled inputs the model would learn most from."""
    with client(data_dir) as fl:
        resp = fl.suggest(app_id, model_id, batch_size=batch_size, strategy=strategy, version=version, record_round=record)
    table = Table(title=f"{len(resp.suggestions)} of {resp.pool_size} unlabeled inputs to label next ({resp.strategy})")
    for col in ("#", "input", "score", "difficulty", "model's guess"):
        table.add_column(col)
    for n, s in enumerate(resp.suggestions, 1):
        table.add_row(str(n), s.input_id, f"{s.score:.3f}", s.difficulty, f"{s.predicted_concept} {s.confidence:.2f}")
    console.print(table)
    if resp.round:
        console.print(f"recorded as round {resp.round} of {app_id}")


@command("label-errors")
def label_errors(app_id: str, max_results: int = 20, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Labeled inputs whose label is probably wrong, with the suggested concept."""
    with client(data_dir) as fl, console.status("cross-validating…"):
        resp = fl.label_errors(app_id, max_results=max_results)
    table = Table(title=f"suspected label errors among {resp.examined} labeled inputs")
    for col in ("input", "labeled", "probably", "score"):
        table.add_column(col)
    for e in resp.errors:
        table.add_row(e.input_id, e.given_concept, e.suggested_concept, f"{e.score:.3f}")
    console.print(table)


def _show_policy(p: curation_pb2.CurationPolicy) -> None:
    table = Table(title=f"curation policy of {p.app_id}")
    table.add_column("setting")
    table.add_column("value")
    rows = [
        ("model", p.model_id),
        ("queue when", f"{p.strategy} uncertainty >= {p.threshold:g}"),
        ("max per minute", str(p.max_per_minute or "no limit")),
        ("budget", str(p.budget or "no limit")),
        ("retrain after", f"{p.retrain_after_labels} new labels on dataset {p.dataset_id}" if p.retrain_after_labels else "never (manual)"),
        ("promote if", f"{p.promotion_metric} better by > {p.promotion_min_gain:g} on validation"),
        ("drift window", "off" if p.drift_window == -1 else f"{p.drift_window} predictions"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


@command("set-policy")
def set_policy(
    app_id: str,
    model_id: str,
    threshold: Annotated[float, typer.Option(help="Queue inputs at least this uncertain (0-1]")] = 0.5,
    strategy: Annotated[str, typer.Option(help="margin, entropy or least_confidence")] = "margin",
    max_per_minute: Annotated[int, typer.Option(help="Queue at most this many a minute (0: no limit)")] = 0,
    budget: Annotated[int, typer.Option(help="Queue at most this many in all (0: no limit)")] = 0,
    retrain_after: Annotated[int, typer.Option(help="Retrain after this many new labels (0: never)")] = 0,
    dataset: Annotated[str, typer.Option(help="Dataset each round extends and trains on")] = "",
    promotion_metric: Annotated[str, typer.Option(help="Validation metric a new version must beat")] = "accuracy",
    min_gain: Annotated[float, typer.Option(help="By more than this")] = 0.0,
    drift_window: Annotated[int, typer.Option(help="Recent predictions checked for drift (-1: off)")] = 200,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Stream-based active learning: which predictions go on the labeling queue, and when to retrain."""
    with client(data_dir) as fl:
        p = fl.set_policy(
            app_id,
            model_id,
            threshold=threshold,
            strategy=strategy,
            max_per_minute=max_per_minute,
            budget=budget,
            retrain_after_labels=retrain_after,
            dataset_id=dataset,
            promotion_metric=promotion_metric,
            promotion_min_gain=min_gain,
            drift_window=drift_window,
        )
    _show_policy(p)


@command("policy")
def show_policy(app_id: str, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Show the app's curation policy."""
    with client(data_dir) as fl:
        p = fl.get_policy(app_id)
    _show_policy(p)


@command("queue", also=(ValueError,))
def labeling_queue(
    app_id: str,
    state: Annotated[str, typer.Option(help="all, queued or labeled")] = "queued",
    limit: Annotated[int, typer.Option(help="Show at most this many")] = 50,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """The labeling queue: uncertain inputs the deployed model picked, oldest first."""
    with client(data_dir) as fl, console.status("reading the queue…"):
        stats = fl.labeling_queue(app_id, page_size=1).stats
        items = []
        for item in fl.queue_items(app_id, state=state, page_size=min(max(limit, 1), 1000)):
            items.append(item)
            if len(items) >= limit:
                break
    table = Table(title=f"labeling queue of {app_id}: {stats.queued} waiting, {stats.labeled} labeled")
    for col in ("input", "score", "model's guess", "state", "labels", "round", "queued at"):
        table.add_column(col)
    names = {1: "queued", 2: "labeled"}
    for q in items:
        table.add_row(
            q.input_id,
            f"{q.score:.3f} {q.strategy}",
            q.predicted_concept,
            names.get(q.state, "?"),
            ", ".join(q.concepts),
            str(q.round or ""),
            q.queued_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)
    console.print(
        f"screened {stats.screened}: below threshold {stats.below_threshold}, over rate {stats.skipped_rate}, "
        f"over budget {stats.skipped_budget}, duplicates {stats.duplicates}, without input id {stats.without_input_id}"
    )


@command("rounds")
def learning_rounds(app_id: str, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Active-learning rounds: labels spent, the retrained version, promoted or not and why."""
    with client(data_dir) as fl:
        rounds = fl.learning_rounds(app_id)
    table = Table(title=f"active-learning rounds of {app_id}")
    for col in ("round", "model", "strategy", "labels", "total", "version", "accuracy", "test acc", "vs serving", "promoted", "note"):
        table.add_column(col)
    for r in rounds:
        table.add_row(
            str(r.round),
            r.model_id,
            r.strategy,
            str(r.labels_spent),
            str(r.total_labels),
            (f"v{r.previous_version} → v{r.candidate_version}" if r.previous_version else f"v{r.candidate_version}") if r.candidate_version else r.status,
            f"{r.metrics['accuracy']:.3f}" if "accuracy" in r.metrics else "",
            f"{r.metrics['test_accuracy']:.3f}" if "test_accuracy" in r.metrics else "",
            f"{r.previous_metrics['accuracy']:.3f}" if "accuracy" in r.previous_metrics else "",
            "[green]yes[/green]" if r.promoted else "no",
            r.note,
        )
    console.print(table)


@command("drift")
def drift_report(
    app_id: str,
    stream: Annotated[bool, typer.Option(help="Recent predictions (policy model) instead of stored inputs")] = True,
    recent: Annotated[int, typer.Option(help="Stored inputs: the newest N outside the training split")] = 200,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Has recent data drifted from the training set?"""
    with client(data_dir) as fl, console.status("comparing distributions…"):
        r = fl.drift(app_id, stream=stream, recent_count=recent)
    verdict = "[red]DRIFT[/red]" if r.alert else "[green]no drift[/green]"
    console.print(
        f"{verdict}: p-value {r.p_value:.4f}, PSI {r.psi:.3f}, centroid distance {r.centroid_distance:.4f} "
        f"({r.recent_count} recent vs {r.reference_count} reference{f', model {r.model_id} v{r.model_version}' if r.model_id else ''})"
    )
