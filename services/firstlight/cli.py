"""``firstlight`` command line: start the local stack, upload, search, predict."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from firstlight.sdk import Firstlight, FirstlightError, folder_items
from firstlight.stack import ADMIN_KEY_ENTRY, STACK_FILE

app = typer.Typer(help="Firstlight: data-efficient computer vision, self-hosted.", no_args_is_help=True, add_completion=False)
console = Console()

DataDir = Annotated[Path, typer.Option("--data-dir", envvar="FIRSTLIGHT_DATA_DIR", help="Local stack state directory")]
DEFAULT_DATA_DIR = Path(".firstlight")


def _client(data_dir: Path) -> Firstlight:
    try:
        return Firstlight.from_stack(data_dir)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@app.command()
def up(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    demo: Annotated[bool, typer.Option(help="Run the demo once the stack is up")] = True,
    serve: Annotated[bool, typer.Option(help="Keep serving until Ctrl-C")] = True,
    supervise: Annotated[bool, typer.Option(help="Restart a component that exits, with backoff")] = True,
) -> None:
    """Start the whole local stack: Kafka broker, Triton, and the five services."""
    from firstlight.stack import LocalStack

    console.print("[bold]Starting Firstlight[/bold] (broker, Triton, ingestion, embedding, search, inference, training, gateway)…")
    t0 = time.perf_counter()
    stack = LocalStack(data_dir, supervise=supervise, service_ports={"gateway": 8080} if _port_free(8080) else {})
    try:
        stack.start()
        table = Table(title=f"Firstlight is up in {time.perf_counter() - t0:.1f}s")
        table.add_column("component")
        table.add_column("address")
        for name, addr in stack.addresses.items():
            if name != ADMIN_KEY_ENTRY:
                table.add_row(name, addr)
        table.add_row("admin key", f"in {data_dir / STACK_FILE} (the SDK and CLI read it from there)")
        console.print(table)
        console.print(f"logs: {stack.log_dir}")
        console.print(
            f"[bold]Portal:[/bold] {stack.gateway_url}/portal/  (sign in with an app key, or with the admin key and app id "
            f"'demo' for the demo's images; the admin key: "
            f"`python -c \"import json;print(json.load(open('{data_dir / STACK_FILE}'))['{ADMIN_KEY_ENTRY}'])\"`)  ·  "
            f"HTTP API docs: {stack.gateway_url}/v1/docs"
        )
        if demo:
            from firstlight.demo import run_demo

            with Firstlight.from_stack(data_dir) as client:
                run_demo(client, console)
        if serve:
            console.print("[green]Serving. Press Ctrl-C to stop.[/green]")
            stop = False

            def _stop(*_: object) -> None:
                nonlocal stop
                stop = True

            signal.signal(signal.SIGTERM, _stop)
            try:
                while not stop:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    finally:
        console.print("Stopping…")
        stack.stop()


@app.command()
def demo(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Run the demo against a running stack."""
    from firstlight.demo import run_demo

    with _client(data_dir) as client:
        run_demo(client, console)


@app.command("create-app")
def create_app(app_id: str, name: str = "", data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Create an app (the tenant boundary)."""
    with _client(data_dir) as client:
        try:
            created = client.create_app(app_id, name)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        console.print(f"created app [bold]{created.id}[/bold]")


@app.command("create-key")
def create_key(app_id: str, name: str = "", data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Issue an API key for an app (needs the admin key). The key is printed once, never again."""
    with _client(data_dir) as client:
        try:
            key, secret = client.create_api_key(app_id, name)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"key [bold]{key.id}[/bold] for app [bold]{app_id}[/bold] (shown once; store it now):")
    print(secret)


@app.command("list-keys")
def list_keys(app_id: str, include_revoked: bool = False, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """An app's API keys (ids and names, never the secrets; needs the admin key)."""
    with _client(data_dir) as client:
        try:
            keys = client.list_api_keys(app_id, include_revoked)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    table = Table(title=f"API keys of {app_id}")
    for column in ("id", "name", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        revoked = k.revoked_at.ToDatetime().isoformat(timespec="seconds") if k.HasField("revoked_at") else ""
        table.add_row(k.id, k.name, k.created_at.ToDatetime().isoformat(timespec="seconds"), revoked)
    console.print(table)


@app.command("revoke-key")
def revoke_key(app_id: str, key_id: str, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Revoke an API key (needs the admin key)."""
    with _client(data_dir) as client:
        try:
            client.revoke_api_key(app_id, key_id)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"revoked key [bold]{key_id}[/bold] of app [bold]{app_id}[/bold]")


@app.command()
def upload(
    app_id: str,
    folder: Path,
    wait: Annotated[bool, typer.Option(help="Wait until every upload is searchable")] = True,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Upload a folder of images; class sub-folders become concepts."""
    items = folder_items(folder)
    if not items:
        console.print(f"[red]no images found under {folder}[/red]")
        raise typer.Exit(1)
    with _client(data_dir) as client:
        client.create_app(app_id, exist_ok=True)
        before = client.indexed_count(app_id)
        with progress_bar() as bar:
            task = bar.add_task("uploading", total=len(items), rate="")
            start = time.perf_counter()

            def advance(n: int) -> None:
                bar.advance(task, n)
                done = bar.tasks[task].completed
                bar.update(task, rate=f"{done / max(time.perf_counter() - start, 1e-9):.0f} img/s")

            report = client.upload(app_id, items, on_progress=advance)
            accepted = len(report.input_ids)
            if wait and accepted:
                itask = bar.add_task("indexing", total=accepted, rate="")

                def indexed(n: int) -> None:
                    bar.update(itask, completed=n - before, rate=f"{(n - before) / max(time.perf_counter() - start, 1e-9):.0f} img/s")

                client.wait_indexed(app_id, before + accepted, timeout=3600, on_progress=indexed)
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


@app.command("set-embedding-model")
def set_embedding_model(
    app_id: str,
    model_id: Annotated[str, typer.Argument(help="The app's trained visual_embedder model; omit to switch back to the base backbone")] = "",
    version: Annotated[str, typer.Option(help="Version of model_id (default: the latest)")] = "",
    wait: Annotated[bool, typer.Option(help="Follow the re-indexing until searches use the new model")] = True,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Switch an app's image-embedding model: every input is re-embedded and re-indexed, and
    searches keep answering from the old index until the new one is complete."""
    with _client(data_dir) as client:
        try:
            resp = client.set_embedding_model(app_id, model_id, version)
            target = resp.app.embedding_model or "the base backbone"
            if not resp.changed:
                console.print(f"app {app_id} already uses {target}")
                return
            console.print(f"app {app_id} switches to {target}: {resp.inputs_to_reembed} inputs to re-embed")
            if wait:
                with progress_bar() as bar:
                    task = bar.add_task("re-indexing", total=max(resp.inputs_to_reembed, 1), rate="")

                    def show(stats) -> None:  # type: ignore[no-untyped-def]
                        done = stats.switch_total - stats.switch_remaining if stats.switching_to else resp.inputs_to_reembed
                        bar.update(task, completed=done, rate=f"searching {stats.model}")

                    stats = client.wait_embedding_model(app_id, on_progress=show)
                console.print(f"searches of {app_id} now use {stats.model} ({stats.indexed_count} inputs indexed)")
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None


def _print_hits(resp, title: str) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=title)
    for col in ("#", "input", "score", "concepts"):
        table.add_column(col)
    for n, hit in enumerate(resp.hits, 1):
        table.add_row(str(n), hit.input_id, f"{hit.score:.3f}", ", ".join(hit.concepts))
    console.print(table)


@app.command("search-image")
def search_image(
    app_id: str,
    image: Annotated[Optional[Path], typer.Option("--file", help="Query image file")] = None,
    input_id: Annotated[str, typer.Option(help="Query by an indexed input instead")] = "",
    top_k: int = 10,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Visual similarity search."""
    if (image is None) == (not input_id):
        console.print("[red]give exactly one of --file or --input-id[/red]")
        raise typer.Exit(2)
    with _client(data_dir) as client:
        try:
            resp = client.search_by_image(app_id, image=image.read_bytes() if image else None, input_id=input_id, top_k=top_k)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    _print_hits(resp, f"most similar to {image or input_id}")


@app.command("search-text")
def search_text(app_id: str, text: str, top_k: int = 10, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Text → image search (no CLIP needed: see README)."""
    with _client(data_dir) as client:
        try:
            resp = client.search_by_text(app_id, text, top_k=top_k)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    read_as = ", ".join(f"{c.name} ({c.score:.2f})" for c in resp.interpreted_as)
    _print_hits(resp, f"“{text}” (read as: {read_as})")


@app.command()
def predict(
    files: list[Path],
    top_k: int = 5,
    concept: Annotated[Optional[list[str]], typer.Option(help="Only score these concepts")] = None,
    model: Annotated[str, typer.Option(help="Model id: 'general' or one of the app's")] = "general",
    version: str = "",
    app_id: Annotated[str, typer.Option("--app", help="App of the model")] = "",
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Predict concepts with the general model or an app's trained model."""
    with _client(data_dir) as client:
        try:
            results = client.predict(
                [f.read_bytes() for f in files], model=model, version=version, app_id=app_id, top_k=top_k, concepts=concept or []
            )
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    for f, concepts in zip(files, results):
        console.print(f"[bold]{f}[/bold]: " + ", ".join(f"{n} {s:.2f}" for n, s in concepts))


@app.command()
def detect(
    files: list[Path],
    model: Annotated[str, typer.Option(help="A visual_detector model of the app")],
    app_id: Annotated[str, typer.Option("--app", help="App of the model")],
    version: str = "",
    top_k: Annotated[int, typer.Option(help="Regions per image (0: all the model found)")] = 0,
    min_score: Annotated[float, typer.Option(help="Drop regions scoring below this")] = 0.0,
    concept: Annotated[Optional[list[str]], typer.Option(help="Only these concepts")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Find objects with a detector model: concept, score and box (pixels of each image)."""
    from PIL import Image

    with _client(data_dir) as client:
        try:
            results = client.detect(
                [f.read_bytes() for f in files], model=model, app_id=app_id, version=version, top_k=top_k,
                concepts=concept or [], min_score=min_score,
            )
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    for f, regions in zip(files, results):
        w, h = Image.open(f).size
        console.print(f"[bold]{f}[/bold]: {len(regions)} region(s)")
        for r in regions:
            x0, y0, x1, y1 = r.box
            console.print(f"  {r.concept} {r.score:.2f}  box ({x0 * w:.0f}, {y0 * h:.0f}) – ({x1 * w:.0f}, {y1 * h:.0f})")


@app.command()
def ladder(
    folder: Annotated[Optional[Path], typer.Option(help="Folder of class sub-folders (default: bundled animal-mnist)")] = None,
    classes: Annotated[str, typer.Option(help="Bundled classes to use, comma-separated")] = "bear,bird,dog,elephant,zebra",
    per_class: Annotated[int, typer.Option(help="Bundled images per class")] = 140,
    app_id: Annotated[str, typer.Option("--app", help="App to create/use")] = "ladder",
    out: Annotated[Path, typer.Option(help="Where reports and confusion matrices go")] = Path("ladder-report"),
    label_by_text: Annotated[bool, typer.Option(help="Upload unlabeled and bulk-label by text search (else upload with labels)")] = True,
    split: Annotated[str, typer.Option(help="train/validation/test counts, e.g. 500,100,100 (default: 80/10/10 %)")] = "",
    seed: int = 0,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """The tutorial path: upload unlabeled → bulk-label by text search (+ corrections) →
    split 500/100/100 → train transfer and one-shot models → evaluate on validation → confirm on test."""
    from firstlight import datasets
    from firstlight.ladder import folder_dataset, run_ladder

    if folder:
        items = folder_dataset(folder)
        if not items:
            console.print(f"[red]no labeled class sub-folders with images under {folder}[/red]")
            raise typer.Exit(2)
    else:
        names = datasets.ANIMAL_CLASSES if classes == "all" else classes.split(",")
        items = [(i, c, d) for i, c, d in datasets.animal_mnist(per_class, seed=seed, classes=names)]
    counts = tuple(int(x) for x in split.split(",")) if split else ((500, 100, 100) if len(items) == 700 else None)
    with _client(data_dir) as client:
        try:
            run_ladder(client, items, out, console, app_id=app_id, counts=counts, seed=seed, label_by_text=label_by_text)  # type: ignore[arg-type]
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None


@app.command()
def label(
    app_id: str,
    concept: Annotated[list[str], typer.Option("--add", help="Concept(s) to add")],
    text: Annotated[str, typer.Option(help="Label the results of this text search")] = "",
    like: Annotated[Optional[Path], typer.Option(help="...or of a search by this image")] = None,
    input_id: Annotated[Optional[list[str]], typer.Option(help="...or these inputs")] = None,
    remove: Annotated[Optional[list[str]], typer.Option(help="Concept(s) to remove (relabel)")] = None,
    min_score: float = 0.0,
    max_results: int = 100,
    dry_run: bool = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Bulk-label inputs: a hand-picked list, or every result of a text/image search above a score."""
    with _client(data_dir) as client:
        try:
            resp = client.bulk_label(
                app_id, add=concept, remove=remove or [], input_ids=input_id or [], text=text,
                image=like.read_bytes() if like else b"", min_score=min_score, max_results=max_results, dry_run=dry_run,
            )
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    verb = "would label" if dry_run else "labeled"
    console.print(f"{verb} {len(resp.input_ids)} inputs with {', '.join(concept)}")


@app.command("label-boxes")
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
        console.print(f"[red]cannot read {boxes}: {exc}[/red]")
        raise typer.Exit(1) from None
    items = list(wanted.items())
    done = 0
    with _client(data_dir) as client, progress_bar() as bar:
        task = bar.add_task("labeling", total=len(items), rate="")
        for start in range(0, len(items), 500):  # each call is all-or-nothing
            part = dict(items[start : start + 500])
            try:
                client.annotate(app_id, regions=part, replace_regions=replace)
            except (FirstlightError, KeyError, TypeError, ValueError) as exc:
                console.print(f"[red]inputs {start}..{start + len(part) - 1}: {exc}[/red] ({done} labeled before)")
                raise typer.Exit(1) from None
            done += len(part)
            bar.advance(task, len(part))
    console.print(f"labeled {done} inputs with {sum(len(v) for _, v in items)} boxes")


@app.command()
def dataset(
    app_id: str,
    dataset_id: str,
    split: Annotated[str, typer.Option(help="train,validation,test counts (e.g. 500,100,100) or fractions (0.8,0.1,0.1)")] = "0.8,0.1,0.1",
    concept: Annotated[Optional[list[str]], typer.Option(help="Only inputs labeled with these concepts")] = None,
    seed: int = 0,
    from_inputs: Annotated[bool, typer.Option(help="Keep the split recorded on each input (none: train) instead of drawing one")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Freeze the app's labeled inputs into a dataset version with stratified splits."""
    parts = [float(x) for x in split.split(",")]
    is_counts = all(p.is_integer() and p > 1 for p in parts)
    with _client(data_dir) as client:
        try:
            ds = client.create_dataset(
                app_id, dataset_id, counts=tuple(int(p) for p in parts) if is_counts else None,  # type: ignore[arg-type]
                fractions=tuple(parts) if not is_counts else (0.8, 0.1, 0.1), seed=seed, concepts=concept or [],  # type: ignore[arg-type]
                from_inputs=from_inputs,
            )
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    table = Table(title=f"dataset {ds.id} version {ds.version}")
    for col in ("concept", "train", "validation", "test"):
        table.add_column(col)
    for c in ds.counts:
        table.add_row(c.concept, str(c.train), str(c.validation), str(c.test))
    console.print(table)


@app.command()
def train(
    app_id: str,
    model_id: str,
    dataset_id: Annotated[str, typer.Option("--dataset")],
    concept: Annotated[Optional[list[str]], typer.Option(help="Concepts (needed the first time a model is trained)")] = None,
    template: str = "transfer_classifier",
    setting: Annotated[Optional[list[str]], typer.Option("--set", help="key=value, e.g. --set C=0.5 --set augment_flip=true")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Train a new version (creating the model if needed), following its progress.

    Deep templates (visual_classifier, visual_detector, visual_embedder) take hyperparameters with
    --set, e.g. --template visual_classifier --set architecture=resnet_scratch --set num_epochs=5;
    the bar shows epoch, loss, validation accuracy and ETA. Ctrl-C stops following (the job goes
    on: `firstlight cancel APP JOB` stops it)."""
    settings = dict(s.split("=", 1) for s in (setting or []))
    with _client(data_dir) as client:
        try:
            if concept:
                client.create_model(app_id, model_id, concept, template=template, settings=settings, exist_ok=True)
            with progress_bar() as bar:
                task = bar.add_task(f"training {model_id}", total=100, rate="")
                job = client.train(app_id, model_id, dataset_id, settings=settings if not concept else None,
                                   on_progress=lambda p: bar.update(task, completed=p.progress * 100, rate=_progress_text(p),
                                                                     description=f"training {model_id} (job {p.job_id})"))
            listed = client.versions(app_id, model_id)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
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


def _progress_text(p) -> str:  # type: ignore[no-untyped-def]
    """The bar's status: the stage, or for a deep template's epoch row its loss, lr, metric and ETA."""
    if not p.epoch:
        return p.stage
    text = f"epoch {p.epoch}/{p.num_epochs} loss {p.loss:.3f} lr {p.lrate:.2g}"
    if "accuracy" in p.metrics:
        text += f" val acc {p.metrics['accuracy']:.3f}"
    return text + (f" ETA {p.eta_seconds:.0f}s" if p.eta_seconds else "")


@app.command()
def cancel(app_id: str, job_id: str, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Cancel a queued or running training job (a deep template stops between batches)."""
    with _client(data_dir) as client:
        try:
            job = client.cancel_training(app_id, job_id)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    console.print(f"job {job.id}: cancel requested (progress {job.progress:.0%})")


@app.command()
def evaluate(
    app_id: str,
    model_id: str,
    version: str = "",
    split: Annotated[str, typer.Option(help="train, validation or test")] = "validation",
    out: Annotated[Path, typer.Option(help="Folder for the confusion matrix PNG and Markdown report")] = Path("reports"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Evaluate a model version on a split; writes a confusion-matrix PNG and a report."""
    with _client(data_dir) as client, console.status(f"evaluating {model_id} on {split}…"):
        try:
            ev = client.evaluate(app_id, model_id, version, split=split)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
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


@app.command()
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
    with _client(data_dir) as client:
        try:
            resp = client.suggest(app_id, model_id, batch_size=batch_size, strategy=strategy, version=version, record_round=record)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    table = Table(title=f"{len(resp.suggestions)} of {resp.pool_size} unlabeled inputs to label next ({resp.strategy})")
    for col in ("#", "input", "score", "difficulty", "model's guess"):
        table.add_column(col)
    for n, s in enumerate(resp.suggestions, 1):
        table.add_row(str(n), s.input_id, f"{s.score:.3f}", s.difficulty, f"{s.predicted_concept} {s.confidence:.2f}")
    console.print(table)
    if resp.round:
        console.print(f"recorded as round {resp.round} of {app_id}")


@app.command("label-errors")
def label_errors(app_id: str, max_results: int = 20, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Labeled inputs whose label is probably wrong, with the suggested concept."""
    with _client(data_dir) as client, console.status("cross-validating…"):
        try:
            resp = client.label_errors(app_id, max_results=max_results)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    table = Table(title=f"suspected label errors among {resp.examined} labeled inputs")
    for col in ("input", "labeled", "probably", "score"):
        table.add_column(col)
    for e in resp.errors:
        table.add_row(e.input_id, e.given_concept, e.suggested_concept, f"{e.score:.3f}")
    console.print(table)


@app.command("check")
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
    with _client(data_dir) as client, console.status("checking…"):
        try:
            resp = client.health_check(app_id, dataset_id=dataset, images=not no_images, max_examples=max(examples, 1), group_key=group_key)
        except FirstlightError as exc:
            _fail(exc)
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
        raise typer.Exit(1)


@app.command("slices")
def worst_slices(
    app_id: str,
    model_id: str,
    version: str = "",
    split: str = "validation",
    min_size: int = 20,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Where a model version does worst on a split: per concept, embedding cluster and image-quality quartile."""
    with _client(data_dir) as client:
        try:
            resp = client.worst_slices(app_id, model_id, version=version, split=split, min_size=min_size)
        except FirstlightError as exc:
            _fail(exc)
    table = Table(title=f"{model_id} v{resp.model_version} on {resp.split}: accuracy {resp.accuracy:.3f} over {resp.count} inputs")
    for col in ("slice", "n", "accuracy", "95% interval", "gap", "note"):
        table.add_column(col)
    for s in resp.slices:
        note = f"mostly {s.majority_concept} ({s.majority_share:.0%})" if s.majority_concept else (f"F1 {s.f1:.3f}" if s.field == "concept" else "")
        table.add_row(f"{s.field}={s.value}", str(s.count), f"{s.accuracy:.3f}", f"{s.accuracy_low:.3f}-{s.accuracy_high:.3f}", f"{s.gap:+.3f}", note)
    console.print(table)


@app.command("map")
def embedding_map(
    app_id: str,
    out: Path = typer.Option(Path("map.png"), help="PNG to write"),
    method: str = typer.Option("pca", help="pca or tsne"),
    color_by: str = typer.Option("concept", help="concept or split"),
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """A 2-D map of the app's embeddings as a PNG, coloured by concept or split."""
    from firstlight.curation.quality import projection

    with _client(data_dir) as client, console.status("projecting…"):
        try:
            ids, coords, labels = client.embedding_map(app_id, method=method, color_by=color_by)
        except (FirstlightError, ValueError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    if not ids:
        console.print(f"[red]app {app_id!r} has no indexed inputs[/red]")
        raise typer.Exit(1)
    out.write_bytes(projection.map_png(coords, labels, title=f"{app_id}: {len(ids)} inputs ({method}, by {color_by})"))
    console.print(f"wrote {out} ({len(ids)} inputs)")


def _fail(exc: FirstlightError) -> None:
    console.print(f"[red]{exc}[/red]")
    raise typer.Exit(1) from None


def _show_policy(p) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=f"curation policy of {p.app_id}")
    table.add_column("setting")
    table.add_column("value")
    rows = [
        ("model", p.model_id), ("queue when", f"{p.strategy} uncertainty >= {p.threshold:g}"),
        ("max per minute", str(p.max_per_minute or "no limit")), ("budget", str(p.budget or "no limit")),
        ("retrain after", f"{p.retrain_after_labels} new labels on dataset {p.dataset_id}" if p.retrain_after_labels else "never (manual)"),
        ("promote if", f"{p.promotion_metric} better by > {p.promotion_min_gain:g} on validation"),
        ("drift window", "off" if p.drift_window == -1 else f"{p.drift_window} predictions"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


@app.command("set-policy")
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
    with _client(data_dir) as client:
        try:
            p = client.set_policy(
                app_id, model_id, threshold=threshold, strategy=strategy, max_per_minute=max_per_minute, budget=budget,
                retrain_after_labels=retrain_after, dataset_id=dataset, promotion_metric=promotion_metric,
                promotion_min_gain=min_gain, drift_window=drift_window,
            )
        except FirstlightError as exc:
            _fail(exc)
    _show_policy(p)


@app.command("policy")
def show_policy(app_id: str, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Show the app's curation policy."""
    with _client(data_dir) as client:
        try:
            p = client.get_policy(app_id)
        except FirstlightError as exc:
            _fail(exc)
    _show_policy(p)


@app.command("queue")
def labeling_queue(
    app_id: str,
    state: Annotated[str, typer.Option(help="all, queued or labeled")] = "queued",
    limit: Annotated[int, typer.Option(help="Show at most this many")] = 50,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """The labeling queue: uncertain inputs the deployed model picked, oldest first."""
    with _client(data_dir) as client, console.status("reading the queue…"):
        try:
            stats = client.labeling_queue(app_id, page_size=1).stats
            items = []
            for item in client.queue_items(app_id, state=state, page_size=min(max(limit, 1), 1000)):
                items.append(item)
                if len(items) >= limit:
                    break
        except (FirstlightError, ValueError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    table = Table(title=f"labeling queue of {app_id}: {stats.queued} waiting, {stats.labeled} labeled")
    for col in ("input", "score", "model's guess", "state", "labels", "round", "queued at"):
        table.add_column(col)
    names = {1: "queued", 2: "labeled"}
    for q in items:
        table.add_row(q.input_id, f"{q.score:.3f} {q.strategy}", q.predicted_concept, names.get(q.state, "?"), ", ".join(q.concepts),
                      str(q.round or ""), q.queued_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table)
    console.print(
        f"screened {stats.screened}: below threshold {stats.below_threshold}, over rate {stats.skipped_rate}, "
        f"over budget {stats.skipped_budget}, duplicates {stats.duplicates}, without input id {stats.without_input_id}"
    )


@app.command("rounds")
def learning_rounds(app_id: str, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Active-learning rounds: labels spent, the retrained version, promoted or not and why."""
    with _client(data_dir) as client:
        try:
            rounds = client.learning_rounds(app_id)
        except FirstlightError as exc:
            _fail(exc)
    table = Table(title=f"active-learning rounds of {app_id}")
    for col in ("round", "model", "strategy", "labels", "total", "version", "accuracy", "test acc", "vs serving", "promoted", "note"):
        table.add_column(col)
    for r in rounds:
        table.add_row(
            str(r.round), r.model_id, r.strategy, str(r.labels_spent), str(r.total_labels),
            (f"v{r.previous_version} → v{r.candidate_version}" if r.previous_version else f"v{r.candidate_version}") if r.candidate_version else r.status,
            f"{r.metrics['accuracy']:.3f}" if "accuracy" in r.metrics else "",
            f"{r.metrics['test_accuracy']:.3f}" if "test_accuracy" in r.metrics else "",
            f"{r.previous_metrics['accuracy']:.3f}" if "accuracy" in r.previous_metrics else "",
            "[green]yes[/green]" if r.promoted else "no", r.note,
        )
    console.print(table)


@app.command("drift")
def drift_report(
    app_id: str,
    stream: Annotated[bool, typer.Option(help="Recent predictions (policy model) instead of stored inputs")] = True,
    recent: Annotated[int, typer.Option(help="Stored inputs: the newest N outside the training split")] = 200,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Has recent data drifted from the training set?"""
    with _client(data_dir) as client, console.status("comparing distributions…"):
        try:
            r = client.drift(app_id, stream=stream, recent_count=recent)
        except FirstlightError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    verdict = "[red]DRIFT[/red]" if r.alert else "[green]no drift[/green]"
    console.print(
        f"{verdict}: p-value {r.p_value:.4f}, PSI {r.psi:.3f}, centroid distance {r.centroid_distance:.4f} "
        f"({r.recent_count} recent vs {r.reference_count} reference{f', model {r.model_id} v{r.model_version}' if r.model_id else ''})"
    )


@app.command("al-benchmark")
def al_benchmark(
    datasets: Annotated[Optional[list[str]], typer.Argument(help="Bundled cached sets (animal-mnist, fashion-mnist; default: both unless --folder)")] = None,
    folder: Annotated[Optional[Path], typer.Option(help="Folder of class sub-folders, embedded by the running stack's embedding service")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (one learning curve per seed and strategy)")] = "0,1,2,3,4",
    rounds: Annotated[int, typer.Option(help="Labeling rounds after the seed set")] = 15,
    batch: Annotated[int, typer.Option(help="Labels the oracle gives per round")] = 50,
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies (default: the usual comparison set)")] = "",
    seed_per_class: Annotated[int, typer.Option(help="Labeled images per class to start from")] = 2,
    c: Annotated[Optional[float], typer.Option("--C", help="Classifier C (default: the transfer template's)")] = None,
    balanced: Annotated[Optional[bool], typer.Option("--balanced/--no-balanced", help="Balanced class weights (default: the transfer template's)")] = None,
    out: Annotated[Path, typer.Option(help="Where <set>.json/.md/.png go")] = Path("al-benchmark"),
    through_services: Annotated[
        Optional[bool],
        typer.Option(
            "--through-services/--in-process",
            help="Every round through the running stack (PostAnnotations, CreateDataset, TrainModel, EvaluateModelVersion, "
            "SuggestInputsForLabeling; rounds in ListLearningRounds) or the in-process simulation on embeddings "
            "(default: through the services for --folder, in-process for bundled sets)",
        ),
    ] = None,
    pool: Annotated[Optional[int], typer.Option(help="Through the services: stratified subset of a bundled set's pool")] = None,
    test: Annotated[Optional[int], typer.Option(help="Through the services: stratified subset of a bundled set's test split")] = None,
    val_per_class: Annotated[int, typer.Option(help="Through the services, bundled sets: validation images per class")] = 10,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Simulate the active-learning loop with an oracle: per strategy and seed, start from a few
    labels per class, let the strategy pick a batch, reveal its labels, retrain the live loop's
    classifier (the transfer template's settings), and record test accuracy per round. Against a
    running stack every round goes through its services (the default for --folder)."""
    from firstlight.curation import benchmark as bm
    from firstlight.curation import strategies as st

    services = through_services if through_services is not None else folder is not None
    names = [x for x in strategies.split(",") if x] or (["random", st.DEFAULT_STRATEGY] if services else bm.DEFAULT_COMPARE)
    if services and "mc_dropout" in names:
        console.print("[red]mc_dropout has no service counterpart (SuggestInputsForLabeling); use --in-process[/red]")
        raise typer.Exit(2)
    unknown = [x for x in names if x not in st.STRATEGIES]
    if unknown:
        console.print(f"[red]unknown strategies: {', '.join(unknown)} (known: {', '.join(st.STRATEGIES)})[/red]")
        raise typer.Exit(2)
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        console.print(f"[red]--seeds must be comma-separated integers, got {seeds!r}[/red]")
        raise typer.Exit(2) from None
    sets = list(datasets or ([] if folder else ["animal-mnist", "fashion-mnist"]))
    client = None
    try:
        if folder:
            bm.load_folder(folder, seed_per_class=seed_per_class + (1 if services else 0))  # reject a bad folder before connecting
        if folder or services:
            client = _client(data_dir)
        if services:
            stems = bm.run_through_services(
                sets, client=client, folder=folder, strategies=names, seeds=seed_list, seed_per_class=seed_per_class, rounds=rounds,
                batch=batch, pool=pool, test=test, val_per_class=val_per_class, out=out,
                log=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True),
            )  # fmt: skip
        else:
            stems = bm.run(
                sets, folder=folder, client=client, strategies=names, seeds=seed_list, seed_per_class=seed_per_class,
                rounds=rounds, batch=batch, C=bm.DEFAULT_C if c is None else c,
                balanced=bm.DEFAULT_BALANCED if balanced is None else balanced, out=out, log=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True),
            )  # fmt: skip
    except (bm.FolderError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    except FirstlightError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        if client is not None:
            client.close()
    for name, stem in stems.items():
        console.print(f"[green]{name}[/green]: {stem}.json, {stem}.md, {stem}.png")


@app.command("export-sample")
def export_sample(folder: Path, per_class: int = 100, seed: int = 0) -> None:
    """Write bundled animal-mnist images as FOLDER/<class>/<id>.png."""
    from firstlight.datasets import export_animal_mnist

    n = export_animal_mnist(folder, per_class, seed)
    console.print(f"wrote {n} images under {folder}")


@app.command()
def status(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Health of each component of the local stack."""
    from firstlight.stack import SERVICES, read_stack_file, read_supervisor_file, wait_serving

    addrs = read_stack_file(data_dir)
    supervised = (read_supervisor_file(data_dir) or {}).get("components", {})
    table = Table(title="Firstlight")
    for column in ("component", "state", "address", "pid", "uptime", "restarts", "last exit"):
        table.add_column(column)
    now = time.time()

    def row(name: str, state: str, address: str) -> None:
        c = supervised.get(name, {})
        if c.get("state") in ("backoff", "restarting"):
            state = f"[yellow]{c['state'].upper()}[/yellow]"
        uptime = _uptime(now - c["started_at"]) if c.get("started_at") and c.get("state") == "running" else ""
        table.add_row(name, state, address, str(c.get("pid") or ""), uptime, str(c.get("restarts", "")), c.get("last_exit", ""))

    for name in ("broker", "triton"):
        address = addrs.get("kafka" if name == "broker" else name, "")
        up = _port_open(address)
        row(name, "[green]UP[/green]" if up else "[red]DOWN[/red]", address)
    for name in SERVICES:
        try:
            wait_serving(addrs[name], timeout_s=2)
            row(name, "[green]SERVING[/green]", addrs[name])
        except Exception:  # noqa: BLE001
            row(name, "[red]DOWN[/red]", addrs.get(name, ""))
    if "gateway" in addrs:
        from firstlight.stack import wait_http

        try:
            wait_http(f"{addrs['gateway']}/healthz", timeout_s=2)
            row("gateway", "[green]SERVING[/green]", f"{addrs['gateway']}/portal/")
        except Exception:  # noqa: BLE001
            row("gateway", "[red]DOWN[/red]", addrs["gateway"])
    console.print(table)
    if not supervised:
        console.print("no supervisor (started with --no-supervise or by a test harness): crashed components stay down")


def _uptime(seconds: float) -> str:
    from firstlight.stack import _uptime as fmt

    return fmt(seconds)


def _port_open(address: str) -> bool:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
