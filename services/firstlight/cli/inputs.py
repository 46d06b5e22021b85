"""Inputs: upload a folder, list inputs (by concept, by a stored image-quality metric), label by
hand or by search, box labels, the app's embedding model, and the bundled sample images as a folder."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from firstlight import errors
from firstlight.cli.app import command
from firstlight.cli.errors import fail
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console, progress_bar
from firstlight.datasets import export_animal_mnist
from firstlight.sdk import QualityFilter, ReembedReport, folder_items
from firstlight.sdk.quality import SYNTAX
from firstlight.v1 import common_pb2, search_pb2

SPLIT_NAMES: dict[int, str] = {common_pb2.SPLIT_TRAIN: "train", common_pb2.SPLIT_VALIDATION: "validation", common_pb2.SPLIT_TEST: "test"}

#: Box labels go in calls of this many inputs (each call is all-or-nothing).
BOX_LABEL_CHUNK = 500


@command()
def upload(
    app_id: str,
    folder: Path,
    wait: Annotated[bool, typer.Option(help="Wait until every upload is searchable")] = True,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Upload a folder of images (class sub-folders become concepts), or one video file (MP4,
    MOV, WebM, MKV, AVI): its sampled frames become inputs with their timestamps."""
    from firstlight.cli.video import is_video, upload_video_file

    if is_video(folder):
        upload_video_file(app_id, folder, wait=wait, data_dir=data_dir)
        return
    items = folder_items(folder)
    if not items:
        fail(f"no images found under {folder}")
    with client(data_dir) as fl:
        fl.create_app(app_id, exist_ok=True)
        before = fl.indexed_count(app_id)
        with progress_bar() as bar:
            task = bar.add_task("uploading", total=len(items), rate="")
            start = time.perf_counter()

            def advance(n: int) -> None:
                bar.advance(task, n)
                done = bar.tasks[task].completed
                bar.update(task, rate=f"{done / max(time.perf_counter() - start, 1e-9):.0f} img/s")

            report = fl.upload(app_id, items, on_progress=advance)
            accepted = len(report.input_ids)
            if wait and accepted:
                itask = bar.add_task("indexing", total=accepted, rate="")

                def indexed(n: int) -> None:
                    bar.update(itask, completed=n - before, rate=f"{(n - before) / max(time.perf_counter() - start, 1e-9):.0f} img/s")

                fl.wait_indexed(app_id, before + accepted, timeout=3600, on_progress=indexed)
        total = time.perf_counter() - start
    console.print(
        f"uploaded {accepted} of {len(items)} images in {report.seconds:.1f}s"
        + (f"; all searchable after {total:.1f}s ({accepted / total:.1f} img/s end to end)" if wait and accepted else "")
    )
    already = [f for f in report.failures if f.code == "ALREADY_EXISTS"]
    if already:
        console.print(f"{len(already)} images were already uploaded (same path → same input id): skipped")
    for failure in report.failures:
        if failure.code != "ALREADY_EXISTS":
            console.print(f"[yellow]refused[/yellow] {items[failure.index].metadata.get('filename')}: {failure.code} {failure.message}")


@command("inputs", also=(ValueError,))
def list_inputs(
    app_id: str,
    where: Annotated[str, typer.Option(help=f"Only inputs whose stored quality metric is in a range: {SYNTAX}; e.g. 'blur<=20'")] = "",
    concept: Annotated[list[str] | None, typer.Option(help="Only inputs with any of these concepts")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many (0: all)")] = 50,
    ids_only: Annotated[bool, typer.Option("--ids-only", help="Print only the ids, one a line (for scripts)")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """List an app's inputs, optionally those of some concepts and with a quality metric in a
    range (inputs stored before quality was measured never match a --where)."""
    quality = QualityFilter.parse(where) if where else None
    with client(data_dir) as fl:
        total = fl.count_inputs(app_id, concepts=concept or [], quality=quality)
        shown: list[common_pb2.Input] = []
        for item in fl.list_inputs(app_id, concepts=concept or [], quality=quality, page_size=min(limit or 1000, 1000)):
            if limit and len(shown) == limit:
                break
            shown.append(item)
    if ids_only:
        for item in shown:
            console.print(item.id, highlight=False, soft_wrap=True)
        return
    table = Table()
    for col in ("input", "concepts", "split", "size", *((quality.metric,) if quality else ())):
        table.add_column(col)
    for item in shown:
        value = (f"{getattr(item.quality, quality.metric):.4g}",) if quality else ()
        table.add_row(item.id, ", ".join(item.concepts), SPLIT_NAMES.get(int(item.split), ""), f"{item.width}×{item.height}", *value)
    if shown:
        console.print(table)
    # after the table, not as its title (rich wraps a title to the table's width)
    console.print(f"{total} input(s) of {app_id}" + (f" with {quality}" if quality else "") + (f"; the first {len(shown)} shown" if len(shown) < total else ""))


@command("set-embedding-model")
def set_embedding_model(
    app_id: str,
    model_id: Annotated[str, typer.Argument(help="The app's trained visual_embedder model; omit to switch back to the base backbone")] = "",
    version: Annotated[str, typer.Option(help="Version of model_id (default: the latest)")] = "",
    wait: Annotated[bool, typer.Option(help="Follow the re-indexing until searches use the new model")] = True,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Switch an app's image-embedding model: every input is re-embedded and re-indexed, and
    searches keep answering from the old index until the new one is complete."""
    with client(data_dir) as fl:
        resp = fl.set_embedding_model(app_id, model_id, version)
        target = resp.app.embedding_model or "the base backbone"
        if not resp.changed:
            console.print(f"app {app_id} already uses {target}")
            return
        console.print(f"app {app_id} switches to {target}: {resp.inputs_to_reembed} inputs to re-embed")
        if wait:
            with progress_bar() as bar:
                task = bar.add_task("re-indexing", total=max(resp.inputs_to_reembed, 1), rate="")

                def show(stats: search_pb2.IndexStats) -> None:
                    done = stats.switch_total - stats.switch_remaining if stats.switching_to else resp.inputs_to_reembed
                    bar.update(task, completed=done, rate=f"searching {stats.model}")

                stats = fl.wait_embedding_model(app_id, on_progress=show)
            console.print(f"searches of {app_id} now use {stats.model} ({stats.indexed_count} inputs indexed)")


@command()
def reembed(
    app_id: str,
    rotated: Annotated[
        bool, typer.Option("--rotated", help="Photos stored with an EXIF orientation other than 1 (versions before the decode change embedded them sideways)")
    ] = False,
    ids: Annotated[list[str] | None, typer.Option("--ids", help="These inputs (repeat the option, or separate ids with commas)")] = None,
    all_inputs: Annotated[bool, typer.Option("--all", help="Every input of the app")] = False,
    wait: Annotated[bool, typer.Option(help="Follow the re-embedding until every queued input is indexed again")] = True,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Embed inputs again and re-index them (searches keep answering from the old vectors until
    each is replaced). Give exactly one of --rotated, --ids, --all. Safe to repeat."""
    listed = [i for value in ids or [] for i in value.split(",") if i]
    if (rotated + all_inputs + bool(listed)) != 1:
        fail("give exactly one of --rotated, --ids ID[,ID...], --all")
    with client(data_dir) as fl, progress_bar() as bar:
        scan = bar.add_task("scanning" if not listed else "queueing", total=None, rate="")

        def scanned(report: ReembedReport) -> None:
            bar.update(scan, completed=report.scanned, total=max(report.total, 1), rate=f"{report.queued} queued")

        report = fl.reembed(app_id, listed or None, only_rotated=rotated, all_inputs=all_inputs, on_progress=scanned)
        if wait and report.queued:
            itask = bar.add_task("re-indexing", total=report.queued, rate="")
            # What is in flight counts every announcement of the app (an upload's too).
            fl.wait_reindexed(app_id, on_progress=lambda left: bar.update(itask, completed=max(0, report.queued - left)))
    what = ("rotated photo" if rotated else "input") + ("" if report.queued == 1 else "s")
    console.print(f"{report.queued} {what} of {app_id} queued for re-embedding ({report.scanned} scanned in {report.seconds:.1f}s)")
    if report.unreadable_ids:
        shown = ", ".join(report.unreadable_ids[:5]) + (" …" if len(report.unreadable_ids) > 5 else "")
        console.print(f"[yellow]{len(report.unreadable_ids)} stored originals could not be read[/yellow] (not queued): {shown}")
    if report.queued and not wait:
        console.print(f"they are re-indexed in the background; `firstlight backlog {app_id}` shows what is still in flight")
    elif report.queued:
        console.print("all re-indexed")


@command()
def backlog(app_id: str, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Inputs of an app announced for embedding and not yet searchable (uploads, re-embedding)."""
    with client(data_dir) as fl:
        b = fl.indexing_backlog(app_id)
    console.print(
        f"{b.unrelayed + b.awaiting_index} input(s) of {app_id} in flight: {b.unrelayed} not yet sent to the broker, {b.awaiting_index} awaiting indexing"
    )


@command()
def label(
    app_id: str,
    concept: Annotated[list[str], typer.Option("--add", help="Concept(s) to add")],
    text: Annotated[str, typer.Option(help="Label the results of this text search")] = "",
    like: Annotated[Path | None, typer.Option(help="...or of a search by this image")] = None,
    input_id: Annotated[list[str] | None, typer.Option(help="...or these inputs")] = None,
    remove: Annotated[list[str] | None, typer.Option(help="Concept(s) to remove (relabel)")] = None,
    min_score: float = 0.0,
    max_results: int = 100,
    dry_run: bool = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Bulk-label inputs: a hand-picked list, or every result of a text/image search above a score."""
    with client(data_dir) as fl:
        resp = fl.bulk_label(
            app_id,
            add=concept,
            remove=remove or [],
            input_ids=input_id or [],
            text=text,
            image=like.read_bytes() if like else b"",
            min_score=min_score,
            max_results=max_results,
            dry_run=dry_run,
        )
    verb = "would label" if dry_run else "labeled"
    console.print(f"{verb} {len(resp.input_ids)} inputs with {', '.join(concept)}")


@command("label-boxes")
def label_boxes(
    app_id: str,
    boxes: Annotated[Path, typer.Argument(help='JSON file: {"<input id>": [["concept", x0, y0, x1, y1], ...], ...}, boxes normalised to [0, 1]')],
    replace: Annotated[bool, typer.Option(help="Drop each listed input's previous boxes first")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Add box labels (regions, for visual_detector) to uploaded inputs; their concepts are added too."""
    try:
        wanted = json.loads(boxes.read_text())
        if not isinstance(wanted, dict):
            raise ValueError("the top level must be an object keyed by input id")
    except (OSError, ValueError) as exc:
        fail(f"cannot read {boxes}: {exc}")
    items = list(wanted.items())
    done = 0
    with client(data_dir) as fl, progress_bar() as bar:
        task = bar.add_task("labeling", total=len(items), rate="")
        for start in range(0, len(items), BOX_LABEL_CHUNK):
            part = dict(items[start : start + BOX_LABEL_CHUNK])
            try:
                fl.annotate(app_id, regions=part, replace_regions=replace)
            except (errors.FirstlightError, KeyError, TypeError, ValueError) as exc:  # a malformed box, too: say which chunk
                fail(f"inputs {start}..{start + len(part) - 1}: {exc} ({done} labeled before)")
            done += len(part)
            bar.advance(task, len(part))
    console.print(f"labeled {done} inputs with {sum(len(v) for _, v in items)} boxes")


@command("export-sample")
def export_sample(folder: Path, per_class: int = 100, seed: int = 0) -> None:
    """Write bundled animal-mnist images as FOLDER/<class>/<id>.png."""
    n = export_animal_mnist(folder, per_class, seed)
    console.print(f"wrote {n} images under {folder}")
