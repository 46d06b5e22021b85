"""Scripted experiments through the services: the data-efficiency ladder and the active-learning
benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from firstlight.cli.app import command
from firstlight.cli.errors import USAGE, fail
from firstlight.cli.options import DEFAULT_DATA_DIR, DataDir, client
from firstlight.cli.output import console
from firstlight.curation import strategies as st
from firstlight.datasets import ANIMAL_CLASSES, animal_mnist
from firstlight.ladder import folder_dataset, run_ladder
from firstlight.sdk import Firstlight


@command()
def ladder(
    folder: Annotated[Path | None, typer.Option(help="Folder of class sub-folders (default: bundled animal-mnist)")] = None,
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
    if folder:
        items = folder_dataset(folder)
        if not items:
            fail(f"no labeled class sub-folders with images under {folder}", USAGE)
    else:
        names = ANIMAL_CLASSES if classes == "all" else classes.split(",")
        items = list(animal_mnist(per_class, seed=seed, classes=names))
    counts: tuple[int, int, int] | None = None
    if split:
        try:
            train, validation, test = (int(x) for x in split.split(","))
        except ValueError:
            fail(f"--split takes three counts train,validation,test, got {split!r}", USAGE)
        counts = (train, validation, test)
    elif len(items) == 700:
        counts = (500, 100, 100)
    with client(data_dir) as fl:
        run_ladder(fl, items, out, console, app_id=app_id, counts=counts, seed=seed, label_by_text=label_by_text)


def _log(message: str) -> None:
    console.print(message, markup=False, highlight=False, soft_wrap=True)


@command("al-benchmark")
def al_benchmark(
    datasets: Annotated[list[str] | None, typer.Argument(help="Bundled cached sets (animal-mnist, fashion-mnist; default: both unless --folder)")] = None,
    folder: Annotated[Path | None, typer.Option(help="Folder of class sub-folders, embedded by the running stack's embedding service")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (one learning curve per seed and strategy)")] = "0,1,2,3,4",
    rounds: Annotated[int, typer.Option(help="Labeling rounds after the seed set")] = 15,
    batch: Annotated[int, typer.Option(help="Labels the oracle gives per round")] = 50,
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies (default: the usual comparison set)")] = "",
    seed_per_class: Annotated[int, typer.Option(help="Labeled images per class to start from")] = 2,
    c: Annotated[float | None, typer.Option("--C", help="Classifier C (default: the transfer template's)")] = None,
    balanced: Annotated[bool | None, typer.Option("--balanced/--no-balanced", help="Balanced class weights (default: the transfer template's)")] = None,
    out: Annotated[Path, typer.Option(help="Where <set>.json/.md/.png go")] = Path("al-benchmark"),
    through_services: Annotated[
        bool | None,
        typer.Option(
            "--through-services/--in-process",
            help="Every round through the running stack (PostAnnotations, CreateDataset, TrainModel, EvaluateModelVersion, "
            "SuggestInputsForLabeling; rounds in ListLearningRounds) or the in-process simulation on embeddings "
            "(default: through the services for --folder, in-process for bundled sets)",
        ),
    ] = None,
    pool: Annotated[int | None, typer.Option(help="Through the services: stratified subset of a bundled set's pool")] = None,
    test: Annotated[int | None, typer.Option(help="Through the services: stratified subset of a bundled set's test split")] = None,
    val_per_class: Annotated[int, typer.Option(help="Through the services, bundled sets: validation images per class")] = 10,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Simulate the active-learning loop with an oracle: per strategy and seed, start from a few
    labels per class, let the strategy pick a batch, reveal its labels, retrain the live loop's
    classifier (the transfer template's settings), and record test accuracy per round. Against a
    running stack every round goes through its services (the default for --folder)."""
    # Imported here, not at the top: it pulls in scipy and the training modules (~0.8 s) that
    # every other command would wait for.
    from firstlight.curation import benchmark as bm

    services = through_services if through_services is not None else folder is not None
    names = [x for x in strategies.split(",") if x] or (["random", st.DEFAULT_STRATEGY] if services else bm.DEFAULT_COMPARE)
    if services and "mc_dropout" in names:
        fail("mc_dropout has no service counterpart (SuggestInputsForLabeling); use --in-process", USAGE)
    unknown = [x for x in names if x not in st.STRATEGIES]
    if unknown:
        fail(f"unknown strategies: {', '.join(unknown)} (known: {', '.join(st.STRATEGIES)})", USAGE)
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        fail(f"--seeds must be comma-separated integers, got {seeds!r}", USAGE)
    chosen = list(datasets or ([] if folder else ["animal-mnist", "fashion-mnist"]))
    fl: Firstlight | None = None
    try:
        if folder:
            bm.load_folder(folder, seed_per_class=seed_per_class + (1 if services else 0))  # reject a bad folder before connecting
        if folder or services:
            fl = client(data_dir)
        if services:
            stems = bm.run_through_services(
                chosen, client=fl, folder=folder, strategies=names, seeds=seed_list, seed_per_class=seed_per_class, rounds=rounds,
                batch=batch, pool=pool, test=test, val_per_class=val_per_class, out=out, log=_log,
            )  # fmt: skip
        else:
            stems = bm.run(
                chosen, folder=folder, client=fl, strategies=names, seeds=seed_list, seed_per_class=seed_per_class,
                rounds=rounds, batch=batch, C=bm.DEFAULT_C if c is None else c,
                balanced=bm.DEFAULT_BALANCED if balanced is None else balanced, out=out, log=_log,
            )  # fmt: skip
    except (bm.FolderError, FileNotFoundError) as exc:
        fail(exc, USAGE)
    finally:
        if fl is not None:
            fl.close()
    for name, stem in stems.items():
        console.print(f"[green]{name}[/green]: {stem}.json, {stem}.md, {stem}.png")
