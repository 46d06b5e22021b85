"""Data and model quality: the health check, a model's worst slices, the embedding map, the
histogram of a stored image-quality metric, uniqueness and representatives."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from firstlight.cli.app import command
from firstlight.cli.errors import CALL_FAILED, fail
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console
from firstlight.sdk import FirstlightError, projection
from firstlight.sdk.quality import histogram_png

#: Characters of the longest bar of a text histogram.
BAR_WIDTH = 40


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


@command("keep-one")
def keep_one(
    app_id: str,
    keep: str = typer.Argument(..., help="the input to keep"),
    drop: list[str] = typer.Argument(..., help="its duplicates, to delete"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Keep one input of a duplicate group and delete the others (refused, nothing deleted, if
    one is not a duplicate of it or carries a label it lacks)."""
    with client(data_dir) as fl:
        resp = fl.keep_one(app_id, keep, drop)
    console.print(f"kept {resp.kept}; deleted {len(resp.deleted_input_ids)}: {', '.join(resp.deleted_input_ids)}")


@command("dedupe")
def dedupe(
    app_id: str,
    dataset: str = typer.Option("", help="only the duplicates within this dataset's latest version"),
    group_key: str = typer.Option("", help="metadata key grouping inputs that belong together (e.g. video_id)"),
    yes: bool = typer.Option(False, "--yes", help="delete; without it, only say what would be deleted"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Keep one of every duplicate group the health check finds (the one it suggests: largest,
    sharpest) and delete the others. A group the service refuses (a member carries a label the
    kept one lacks) is left as it is and reported; exit code 1 if any was."""
    refused = 0
    with client(data_dir) as fl:
        with console.status("checking…"):
            resp = fl.health_check(app_id, dataset_id=dataset, max_examples=1000, group_key=group_key)
        for g in resp.duplicate_groups:
            drop = [i for i in g.input_ids if i != g.keep]
            if not yes:
                console.print(f"would keep {g.keep}, delete {', '.join(drop)} ({g.kind})")
                continue
            try:
                fl.keep_one(app_id, g.keep, drop)
                console.print(f"kept {g.keep}, deleted {', '.join(drop)} ({g.kind})")
            except FirstlightError as exc:
                refused += 1
                console.print(f"[yellow]left {g.keep}, {', '.join(drop)}: {exc}[/]")
    n = sum(len(g.input_ids) - 1 for g in resp.duplicate_groups)
    more = "; more may remain: run it again" if len(resp.duplicate_groups) == 1000 else ""
    console.print(
        f"{len(resp.duplicate_groups)} group(s), {n} duplicate(s){'' if yes else ' (dry run: --yes deletes)'}{f'; {refused} refused' if refused else ''}{more}"
    )
    if refused:
        raise typer.Exit(CALL_FAILED)


SHOWN_VALUE = 40  # characters of a slice's value shown (metadata values are free text, up to 4 KB)


def shorten(value: str) -> str:
    """A slice value for the table: cut to SHOWN_VALUE characters, rich markup escaped (a
    metadata value such as "[red]" is text, not style)."""
    return escape(value if len(value) <= SHOWN_VALUE else value[: SHOWN_VALUE - 1] + "…")


@command("slices")
def worst_slices(
    app_id: str,
    model_id: str,
    version: str = "",
    split: str = "validation",
    min_size: int = 20,
    rank_by: str = typer.Option("", help="brier (default: where the head is least reliable), accuracy or f1"),
    metadata_key: list[str] = typer.Option(
        [], "--metadata-key", help="input metadata key to slice by (repeat for more, at most 8; default: the categorical keys)"
    ),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Where a model version does worst on a split: per concept, embedding cluster, input metadata
    value and image-quality quartile; accuracy, F1 and Brier score (lower is better) with 95%
    intervals."""
    with client(data_dir) as fl:
        resp = fl.worst_slices(app_id, model_id, version=version, split=split, min_size=min_size, rank_by=rank_by, metadata_keys=metadata_key)
    keys = ", ".join(resp.metadata_keys) or "none"
    table = Table(
        title=f"{model_id} v{resp.model_version} on {resp.split}, worst by {resp.rank_by}: accuracy {resp.accuracy:.3f}, "
        f"macro F1 {resp.f1:.3f}, Brier {resp.brier:.3f} over {resp.count} inputs; metadata keys "
        f"{'asked' if metadata_key else 'chosen'}: {keys}"
    )
    for col in ("slice", "n", "accuracy (95%)", "F1 (95%)", "Brier (95%)", f"worse by ({resp.rank_by})", "note"):
        table.add_column(col)
    for s in resp.slices:
        table.add_row(
            f"{s.field}={shorten(s.value)}",
            str(s.count),
            f"{s.accuracy:.3f} ({s.accuracy_low:.3f}-{s.accuracy_high:.3f})",
            f"{s.f1:.3f} ({s.f1_low:.3f}-{s.f1_high:.3f})",
            f"{s.brier:.3f} ({s.brier_low:.3f}-{s.brier_high:.3f})",
            f"{s.rank_gap:+.3f}",
            f"mostly {s.majority_concept} ({s.majority_share:.0%})" if s.majority_concept else "",
        )
    console.print(table)


@command("map", also=(ValueError, RuntimeError, TimeoutError))
def embedding_map(
    app_id: str,
    out: Path = typer.Option(Path("map.png"), help="PNG to write"),
    method: str = typer.Option("pca", help="pca or tsne (at most 20,000 inputs)"),
    color_by: str = typer.Option("concept", help="concept, split or prediction"),
    model: str = typer.Option("", help="with --color-by prediction: the model whose predicted concept colours each point"),
    model_version: str = typer.Option("", help="its version (default: the latest that scored the pool, else the serving one)"),
    dataset: str = typer.Option("", help="with --color-by split: the splits of this dataset's version"),
    dataset_version: str = typer.Option("", help="that version (default: the latest)"),
    force: bool = typer.Option(False, "--force", help="compute the map again even if the cached one is current"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """A 2-D map of the app's embeddings as a PNG, coloured by concept, split or prediction.
    The curation service computes it (cached until the app's inputs change)."""
    with client(data_dir) as fl, console.status("mapping…"):
        ids, coords, labels = fl.embedding_map(
            app_id,
            method=method,
            color_by=color_by,
            model_id=model,
            model_version=model_version,
            dataset_id=dataset,
            dataset_version=dataset_version,
            force=force,
        )
    if not ids:
        fail(f"app {app_id!r} has no indexed inputs")
    out.write_bytes(projection.map_png(coords, labels, title=f"{app_id}: {len(ids)} inputs ({method}, by {color_by})"))
    console.print(f"wrote {out} ({len(ids)} inputs)")


def histogram_bars(edges: Sequence[float], counts: Sequence[int], width: int = BAR_WIDTH) -> list[tuple[str, int, str]]:
    """(bucket range, count, bar) per bucket; bars scaled so the fullest bucket is ``width``
    characters, and any non-empty bucket shows at least a sliver (a lone blank image is visible)."""
    top = max(counts, default=0)
    rows = []
    for n, count in enumerate(counts):
        close = "]" if n == len(counts) - 1 else ")"  # the last bucket includes its upper edge
        eighths = 0 if not top else max(round(8 * width * count / top), 1 if count else 0)
        rows.append((f"[{edges[n]:.4g}, {edges[n + 1]:.4g}{close}", int(count), "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]))
    return rows


@command("quality-histogram")
def quality_histogram(
    app_id: str,
    metric: str = typer.Argument(
        ..., help="blur, brightness, highlight, contrast, saturation, noise, aspect_ratio, width, height, grayscale or blank_fraction"
    ),
    bins: int = typer.Option(20, help="number of equal-width buckets (1-100)"),
    png: Path | None = typer.Option(None, "--png", help="also write the histogram as a PNG plot"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Histogram of one stored image-quality metric over the app's inputs (list the inputs of a
    bucket with `firstlight inputs APP --where 'METRIC<=X'`)."""
    with client(data_dir) as fl:
        resp = fl.quality_histogram(app_id, metric, bins=bins)
    measured = sum(resp.counts)
    if not measured:
        console.print(f"no input of {app_id!r} has quality metrics yet" + (f" ({resp.unmeasured} stored before they were measured)" if resp.unmeasured else ""))
        return
    table = Table(title=f"{metric} over {measured} inputs of {app_id}")
    table.add_column(metric)
    table.add_column("inputs", justify="right")
    table.add_column("")
    for bucket, count, bar in histogram_bars(list(resp.edges), list(resp.counts)):
        table.add_row(bucket, str(count), f"[cyan]{bar}[/]")
    console.print(table)
    if resp.unmeasured:
        console.print(f"{resp.unmeasured} input(s) stored before quality was measured are not counted")
    if png is not None:
        png.write_bytes(histogram_png(list(resp.edges), list(resp.counts), title=f"{app_id}: {metric} ({measured} inputs)", metric=metric))
        console.print(f"wrote {png}")


@command("explain")
def explain(
    app_id: str,
    model_id: str,
    input: str = typer.Argument(..., help="an input id of the app, or the path of an image file"),
    out: Path = typer.Option(Path("explain.png"), help="PNG to write: image | saliency map | overlay, a row per concept"),
    version: str = typer.Option("", help="model version (default: the serving one)"),
    top_k: int = typer.Option(3, help="top predicted concepts explained"),
    evidence: int = typer.Option(6, help="nearest labeled training examples shown per concept"),
    method: str = typer.Option("", help="gradcam++ (default) or gradcam"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Why a model predicts what it does on one image: a saliency map per top concept and the
    nearest labeled training examples of that concept."""
    path = Path(input)
    with client(data_dir) as fl, console.status("explaining…"):
        if path.is_file():
            resp = fl.explain(app_id, model_id, image=path, version=version, top_k=top_k, evidence=evidence, method=method)
        else:
            resp = fl.explain(app_id, model_id, input_id=input, version=version, top_k=top_k, evidence=evidence, method=method)
    out.write_bytes(resp.grid_png)
    table = Table(title=f"{model_id} v{resp.model_version} on {resp.input_id or path.name} ({resp.method})")
    for col in ("concept", "score", "nearest labeled training examples (cosine)"):
        table.add_column(col)
    for c in resp.concepts:
        table.add_row(c.concept, f"{c.score:.3f}", ", ".join(f"{e.input_id} ({e.similarity:.2f})" for e in c.evidence))
    console.print(table)
    console.print(f"wrote {out}")


@command("uniqueness")
def uniqueness(
    app_id: str,
    concept: str = typer.Option("", help="only the inputs of this concept, scored within it"),
    typical: bool = typer.Option(False, "--typical", help="most typical first (default: most unusual first)"),
    limit: int = typer.Option(20, min=1, max=1000, help="inputs shown"),
    representatives: bool = typer.Option(False, "--representatives", help="also the most representative inputs of each concept"),
    per_concept: int = typer.Option(5, min=1, max=50, help="with --representatives: how many per concept"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """The app's most unusual (or most typical) inputs: mean cosine distance to their nearest
    inputs of the app and of their concept; with --concept, ranked within that concept."""
    scope, order = ("concept" if concept else "app"), ("typical" if typical else "unusual")
    with client(data_dir) as fl, console.status("scoring…"):
        resp = fl.uniqueness(app_id, scope=scope, order=order, concept=concept, page_size=limit, per_concept=per_concept if representatives else 0)
    table = Table(title=f"{app_id}: most {order} of {resp.total_size} input(s)" + (f" of {concept!r}" if concept else "") + f" ({resp.examined} scored)")
    for col in ("input", "app-wide", "within concept", "concepts"):
        table.add_column(col)
    for u in resp.inputs:
        table.add_row(u.input_id, f"{u.score:.4f}", f"{u.concept_score:.4f}" if u.HasField("concept_score") else "-", ", ".join(u.concepts))
    console.print(table)
    if resp.representatives:
        reps = Table(title="most representative per concept (most typical first)")
        for col in ("concept", "inputs (distance within concept)"):
            reps.add_column(col)
        for r in resp.representatives:
            reps.add_row(r.concept, ", ".join(f"{u.input_id} ({u.concept_score:.3f})" for u in r.inputs))
        console.print(reps)
