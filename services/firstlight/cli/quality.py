"""Data and model quality: the health check, a model's worst slices, the embedding map."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from firstlight.cli.app import command
from firstlight.cli.errors import CALL_FAILED, fail
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console
from firstlight.sdk import projection


@command("check")
def check(
    app_id: str,
    dataset: str = typer.Option("", help="check this dataset's latest version (default: every indexed input of the app)"),
    no_images: bool = typer.Option(False, "--no-images", help="skip the pixel checks (content hash, blur, blank, …)"),
    examples: int = 5,
    group_key: str = typer.Option("", help="metadata key grouping inputs that belong together (e.g. video_id)"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Data health check: duplicates, leaks across splits, tiny concepts, imbalance, outliers,
    blank or corrupt images. Exit code 1 when a check fails."""
    with client(data_dir) as fl, console.status("checking…"):
        resp = fl.health_check(app_id, dataset_id=dataset, images=not no_images, max_examples=max(examples, 1), group_key=group_key)
    colour = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
    table = Table(title=f"health of {app_id}{' / ' + dataset if dataset else ''}: {resp.status} ({resp.examined} inputs)")
    for col in ("check", "status", "count", "detail", "examples"):
        table.add_column(col)
    for c in resp.checks:
        table.add_row(c.name, f"[{colour.get(c.status, 'white')}]{c.status}[/]", str(c.count), c.message, ", ".join(c.input_ids[:examples]))
    console.print(table)
    for g in resp.duplicate_groups[:examples]:
        console.print(f"  {g.kind} duplicates (cos ≥ {g.similarity:.3f}): keep {g.keep}, drop {', '.join(i for i in g.input_ids if i != g.keep)}")
    if resp.status == "fail":
        raise typer.Exit(CALL_FAILED)


@command("slices")
def worst_slices(
    app_id: str,
    model_id: str,
    version: str = "",
    split: str = "validation",
    min_size: int = 20,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Where a model version does worst on a split: per concept, embedding cluster and image-quality quartile."""
    with client(data_dir) as fl:
        resp = fl.worst_slices(app_id, model_id, version=version, split=split, min_size=min_size)
    table = Table(title=f"{model_id} v{resp.model_version} on {resp.split}: accuracy {resp.accuracy:.3f} over {resp.count} inputs")
    for col in ("slice", "n", "accuracy", "95% interval", "gap", "note"):
        table.add_column(col)
    for s in resp.slices:
        note = f"mostly {s.majority_concept} ({s.majority_share:.0%})" if s.majority_concept else (f"F1 {s.f1:.3f}" if s.field == "concept" else "")
        table.add_row(f"{s.field}={s.value}", str(s.count), f"{s.accuracy:.3f}", f"{s.accuracy_low:.3f}-{s.accuracy_high:.3f}", f"{s.gap:+.3f}", note)
    console.print(table)


@command("map", also=(ValueError,))
def embedding_map(
    app_id: str,
    out: Path = typer.Option(Path("map.png"), help="PNG to write"),
    method: str = typer.Option("pca", help="pca or tsne"),
    color_by: str = typer.Option("concept", help="concept or split"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """A 2-D map of the app's embeddings as a PNG, coloured by concept or split."""
    with client(data_dir) as fl, console.status("projecting…"):
        ids, coords, labels = fl.embedding_map(app_id, method=method, color_by=color_by)
    if not ids:
        fail(f"app {app_id!r} has no indexed inputs")
    out.write_bytes(projection.map_png(coords, labels, title=f"{app_id}: {len(ids)} inputs ({method}, by {color_by})"))
    console.print(f"wrote {out} ({len(ids)} inputs)")
