"""Evaluate a model version on a split: metrics per concept, a confusion matrix and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from firstlight.cli.app import command
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console


@command()
def evaluate(
    app_id: str,
    model_id: str,
    version: str = "",
    split: Annotated[str, typer.Option(help="train, validation or test")] = "validation",
    out: Annotated[Path, typer.Option(help="Folder for the confusion matrix PNG and Markdown report")] = Path("reports"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Evaluate a model version on a split; writes a confusion-matrix PNG and a report."""
    with client(data_dir) as fl, console.status(f"evaluating {model_id} on {split}…"):
        ev = fl.evaluate(app_id, model_id, version, split=split)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{model_id}-v{ev.version}-{split}"
    stem.with_suffix(".png").write_bytes(ev.confusion_matrix_png)
    stem.with_suffix(".md").write_text(ev.report_markdown)
    table = Table(title=f"{model_id} v{ev.version} on {split} ({ev.count} inputs)")
    for col in ("concept", "precision", "recall", "F1", "support"):
        table.add_column(col)
    for c in ev.concepts:
        table.add_row(c.concept, f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}", str(c.support))
    console.print(table)
    console.print(", ".join(f"{k} {x:.3f}" for k, x in sorted(ev.metrics.items()) if k != "n"))
    console.print(f"wrote {stem}.png and {stem}.md")
