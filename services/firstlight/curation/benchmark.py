"""Command line for the active-learning benchmark: an oracle answers every query, on cached
real embeddings of bundled sets or on any folder of class sub-folders.

    python -m firstlight.curation.al_data                      # once: embed and cache the sets
    python -m firstlight.curation.benchmark animal-mnist fashion-mnist \
        --seeds 0 1 2 3 4 --out .cache/al/results
    firstlight al-benchmark --folder photos/ --seeds 0 1 2     # needs a running stack

Writes ``<out>/<dataset>.{json,md,png}`` per dataset (see simulate.BenchmarkResult). The
classifier is the live loop's: the transfer template's own training code
(``training.transfer.train_transfer``) with its defaults (C=100, balanced class weights) unless
``--C``/``--no-balanced`` say otherwise.

``--through-services`` (the default with ``--folder``) runs every round through the running
stack instead (``curation.through_services``: PostAnnotations, CreateDataset, TrainModel,
EvaluateModelVersion on the held-out split, SuggestInputsForLabeling recording the round);
bundled sets are then uploaded once to an app of their own (``--pool``/``--test`` take stratified
subsets) and the in-process simulation is run on the same images as well
(``<dataset>_services`` and ``<dataset>_inprocess`` outputs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from firstlight.curation import al_data, simulate
from firstlight.curation import strategies as st
from firstlight.domain.heads.transfer import TransferSettings

#: The live loop trains the transfer template with its default settings; so does the benchmark.
DEFAULT_C = TransferSettings().C
DEFAULT_BALANCED = TransferSettings().class_weight == "balanced"
EMBED_BATCH = 32  # images per EmbedImages call

DEFAULT_COMPARE = ["random", "margin", "entropy", "least_confidence", "diversity", "kmeanspp",
                   "margin_kmeanspp", "badge", "typiclust", "typiclust_margin", "mc_dropout"]  # fmt: skip


class FolderError(ValueError):
    """A folder that cannot be benchmarked (too few classes or images)."""


def load_folder(folder: Path, *, seed_per_class: int = 2) -> tuple[list[bytes], np.ndarray, list[str]]:
    """(encoded images, class index per image, class names) of ``folder/<class>/*`` (the layout
    ``firstlight upload`` takes; the SDK's folder walk). Images not in a class sub-folder are
    ignored. Each class needs the seed set plus one image in the pool and one in the test split."""
    from firstlight.sdk import folder_items

    try:
        items = [it for it in folder_items(Path(folder)) if it.concepts]
    except FileNotFoundError as exc:
        raise FolderError(str(exc)) from None
    classes = sorted({it.concepts[0] for it in items})
    if len(classes) < 2:
        raise FolderError(f"{folder}: {len(classes)} class sub-folder(s) with images; need at least 2")
    y = np.array([classes.index(it.concepts[0]) for it in items])
    need = seed_per_class + 2
    small = {c: int((y == k).sum()) for k, c in enumerate(classes) if (y == k).sum() < need}
    if small:
        listed = ", ".join(f"{c} ({n})" for c, n in sorted(small.items()))
        raise FolderError(f"{folder}: classes with fewer than {need} images (seed set of {seed_per_class} + pool + test): {listed}")
    return [it.image_bytes for it in items], y, classes


def stratified_split(y: np.ndarray, test_frac: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pool and test indices, ``test_frac`` of each class (at least one) in the test split."""
    rng = np.random.default_rng(seed)
    pool, test = [], []
    for k in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_test = min(len(idx) - 1, max(1, round(test_frac * len(idx))))
        test += list(idx[:n_test])
        pool += list(idx[n_test:])
    return np.sort(np.array(pool)), np.sort(np.array(test))


def embed_images(client, images: list[bytes], *, batch: int = EMBED_BATCH, progress: bool = True) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Embed through the stack's EmbeddingService (``client``: an SDK Firstlight), in batches."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    out: list[list[float]] = []
    cols = (TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*cols, disable=not progress) as bar:
        task = bar.add_task("embed", total=len(images))
        for start in range(0, len(images), batch):
            out += client.embed_images(images[start : start + batch])
            bar.update(task, advance=len(images[start : start + batch]))
    return np.asarray(out, dtype=np.float32)


def folder_dataset(client, folder: Path, *, seed_per_class: int = 2, test_frac: float = 0.2, split_seed: int = 0, progress: bool = True):  # type: ignore[no-untyped-def]
    """(X_pool, y_pool, X_test, y_test, class names) of a folder, embedded by the stack."""
    images, y, classes = load_folder(folder, seed_per_class=seed_per_class)
    X = embed_images(client, images, progress=progress)
    pool, test = stratified_split(y, test_frac, split_seed)
    return X[pool], y[pool], X[test], y[test], classes


def _subsample(y: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a stratified random subset of ``n`` rows (all rows when n is None or
    not smaller), every class proportionally (at least one each)."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    out = []
    classes, counts = np.unique(y, return_counts=True)
    for c, k in zip(classes, counts):
        take = max(1, round(n * k / len(y)))
        out.append(rng.choice(np.flatnonzero(y == c), size=min(take, k), replace=False))
    return np.sort(np.concatenate(out))


def bundled_image_set(name: str, *, pool: int | None = None, test: int | None = None, val_per_class: int = 10, seed: int = 0):  # type: ignore[no-untyped-def]
    """A bundled set for the through-services mode: (ImageSet, (X, y, X_test, y_test)) where the
    arrays are the cached embeddings of exactly the same pool and test images (the in-process
    comparison on the same sizes; None without the cache). ``pool``/``test``: stratified subsets of the cached pool and
    test (seed ``seed``); the validation images (``val_per_class`` per class) come from the rest
    of the cached pool, so they are in neither."""
    from firstlight.curation.through_services import ImageSet
    from firstlight.datasets import png_bytes

    imgs, y, timgs, yt = al_data.load_images(name)
    try:
        X, y2, Xt, yt2 = al_data.load_cached(name)
    except FileNotFoundError:  # no cache: the services embed the images anyway; no in-process comparison
        X = Xt = None
    else:
        if not (np.array_equal(y, y2) and np.array_equal(yt, yt2)):
            raise RuntimeError(f"{name}: the cached embeddings do not line up with the images (rebuild the cache)")
    rng = np.random.default_rng(seed)
    ip = _subsample(y, pool, rng)
    it = _subsample(yt, test, rng)
    rest = np.setdiff1d(np.arange(len(y)), ip)
    iv = np.concatenate([rng.choice(rest[y[rest] == c], size=min(val_per_class, int((y[rest] == c).sum())), replace=False) for c in np.unique(y)])
    if len(iv) < val_per_class * len(np.unique(y)):
        raise ValueError(f"{name}: not enough images outside the pool for {val_per_class} validation images per class")
    data = ImageSet(
        name=name, classes=al_data.class_names(name), pool=[png_bytes(imgs[i]) for i in ip], y_pool=y[ip],
        test=[png_bytes(timgs[i]) for i in it], y_test=yt[it], val=[png_bytes(imgs[i]) for i in iv], y_val=y[iv],
    )  # fmt: skip
    return data, (None if X is None else (X[ip], y[ip], Xt[it], yt[it]))


def folder_image_set(folder: Path, *, seed_per_class: int = 2, test_frac: float = 0.2, val_frac: float = 0.1, split_seed: int = 0):  # type: ignore[no-untyped-def]
    """A folder for the through-services mode: per class ``test_frac`` test, ``val_frac`` of the
    rest (at least one) validation, the remainder the pool."""
    from firstlight.curation.through_services import ImageSet

    images, y, classes = load_folder(folder, seed_per_class=seed_per_class + 1)  # + one validation image
    rest, test = stratified_split(y, test_frac, split_seed)
    pool_r, val_r = stratified_split(y[rest], val_frac, split_seed + 1)
    pool, val = rest[pool_r], rest[val_r]
    return ImageSet(
        name=Path(folder).resolve().name or "folder", classes=classes, pool=[images[i] for i in pool], y_pool=y[pool],
        test=[images[i] for i in test], y_test=y[test], val=[images[i] for i in val], y_val=y[val],
    )  # fmt: skip


def run_through_services(
    datasets: list[str],
    *,
    client,
    folder: Path | None = None,
    strategies: list[str] = ("random", st.DEFAULT_STRATEGY),  # type: ignore[no-untyped-def, assignment]
    seeds: list[int] = (0, 1, 2),
    seed_per_class: int = 2,
    rounds: int = 15,
    batch: int = 50,
    pool: int | None = None,  # type: ignore[assignment]
    test: int | None = None,
    val_per_class: int = 10,
    out: Path | None = None,
    tag: str = "",
    test_frac: float = 0.2,
    app_prefix: str = "al-bench",
    compare: bool = True,
    log=lambda m: print(m, flush=True),  # type: ignore[no-untyped-def]
) -> dict[str, Path]:
    """The benchmark through the running stack (``curation.through_services``) on bundled sets
    and/or a folder; for bundled sets also the in-process simulation on the same images and
    sizes (``<name><tag>_inprocess``), unless ``compare`` is off. Returns the output stems."""
    from firstlight.curation import through_services as ts

    out = Path(out) if out is not None else al_data.default_cache_dir() / "results"
    sets: list[tuple[str, object, object]] = []
    for name in datasets:
        data, arrays = bundled_image_set(name, pool=pool, test=test, val_per_class=val_per_class)
        sets.append((name, data, arrays))
    if folder is not None:
        data = folder_image_set(folder, seed_per_class=seed_per_class, test_frac=test_frac)
        sets.append((data.name, data, None))
    stems = {}
    for name, data, arrays in sets:
        sizes = f"pool {len(data.pool)}, validation {len(data.val)}, test {len(data.test)}"  # type: ignore[attr-defined]
        log(f"== {name} through the services: {sizes}")
        app_id = f"{app_prefix}-{name}-{len(data.pool)}-{len(data.test)}"[:64]  # type: ignore[attr-defined]
        res = ts.run_benchmark(
            client, data, app_id=app_id, strategies=list(strategies), seeds=list(seeds), seed_per_class=seed_per_class,  # type: ignore[arg-type]
            rounds=rounds, batch=batch, log=log,
        )  # fmt: skip
        res.settings.update(dataset=name, embedding="embedding service base backbone")
        stem = out / f"{name}{tag}_services"
        md = _write(res, stem, f"### {name} through the services ({sizes}; TrainModel, SuggestInputsForLabeling, EvaluateModelVersion)\n\n", len(seeds))
        log(md)
        stems[name] = stem
        if compare and arrays is not None:
            X, y, Xt, yt = arrays  # type: ignore[misc]
            sim = simulate.run_benchmark(
                X, y, Xt, yt, strategies=list(strategies), seeds=list(seeds), seed_per_class=seed_per_class, rounds=rounds, batch=batch, log=log
            )
            sim.settings.update(dataset=name, embedding="efficientnet-lite0 224px (cache)", mode="in-process")
            stem = out / f"{name}{tag}_inprocess"
            log(_write(sim, stem, f"### {name} in-process, same images ({sizes}; {sim.settings['fit']})\n\n", len(seeds)))
            stems[f"{name} (in-process)"] = stem
    return stems


def _write(res: simulate.BenchmarkResult, stem: Path, header: str, n_seeds: int) -> str:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(res.to_json())
    md = header + res.to_markdown()
    stem.with_suffix(".md").write_text(md)
    res.plot(stem.with_suffix(".png"), title=f"{stem.name}: active learning ({n_seeds} seeds)")
    return md


def run(
    datasets: list[str],
    *,
    folder: Path | None = None,
    client=None,
    strategies: list[str] = DEFAULT_COMPARE,  # type: ignore[no-untyped-def]
    seeds: list[int] = (0, 1, 2, 3, 4),
    seed_per_class: int = 2,
    rounds: int = 15,
    batch: int = 50,  # type: ignore[assignment]
    C: float = DEFAULT_C,
    balanced: bool = DEFAULT_BALANCED,
    size: int = 224,
    out: Path | None = None,
    tag: str = "",
    test_frac: float = 0.2,
    log=lambda m: print(m, flush=True),  # type: ignore[no-untyped-def]
) -> dict[str, Path]:
    """Run the benchmark on each bundled ``datasets`` name and/or on ``folder`` (embedded via
    ``client``); returns the output stem (``<out>/<name><tag>``) per set."""
    out = Path(out) if out is not None else al_data.default_cache_dir() / "results"
    fit = simulate.transfer_fit(TransferSettings(C=C, class_weight="balanced" if balanced else "none"))
    sets = [(name, None) for name in datasets] + ([(Path(folder).resolve().name or "folder", Path(folder))] if folder else [])
    stems = {}
    for name, path in sets:
        if path is None:
            X, y, Xt, yt = al_data.load_cached(name, size=size)
            embedding = f"efficientnet-lite0 {size}px"
        else:
            if client is None:
                raise ValueError("a folder needs a client of the running stack (its embedding service)")
            X, y, Xt, yt, classes = folder_dataset(client, path, seed_per_class=seed_per_class, test_frac=test_frac)
            embedding = "embedding service base backbone"
        log(f"== {name}: pool {X.shape}, test {Xt.shape}")
        res = simulate.run_benchmark(
            X, y, Xt, yt, strategies=list(strategies), seeds=list(seeds), seed_per_class=seed_per_class,
            rounds=rounds, batch=batch, fit=fit, log=log,
        )  # fmt: skip
        res.settings.update(dataset=name, embedding=embedding)
        if path is not None:
            res.settings.update(folder=str(path), classes=classes, test_fraction=test_frac)
        stem = out / f"{name}{tag}"
        md = _write(res, stem, f"### {name} ({embedding} embeddings, {res.settings['fit']})\n\n", len(seeds))
        log(md)
        stems[name] = stem
    return stems


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="active-learning benchmark (oracle labels) on cached sets or a folder")
    ap.add_argument("datasets", nargs="*", help="bundled cached sets (default: animal-mnist fashion-mnist unless --folder)")
    ap.add_argument("--folder", type=Path, help="folder of class sub-folders, embedded by the running stack")
    ap.add_argument("--data-dir", type=Path, default=Path(".firstlight"), help="local stack state directory (for --folder)")
    ap.add_argument("--test-frac", type=float, default=0.2, help="stratified test fraction of a folder")
    ap.add_argument("--strategies", nargs="+", default=DEFAULT_COMPARE, choices=st.STRATEGIES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--seed-per-class", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--size", type=int, default=224, help="embedding resolution of the cache")
    ap.add_argument("--out", type=Path, default=al_data.default_cache_dir() / "results")
    ap.add_argument("--C", type=float, default=DEFAULT_C, help="logistic regression inverse regularisation (default: the transfer template's)")
    ap.add_argument("--balanced", action=argparse.BooleanOptionalAction, default=DEFAULT_BALANCED,
                    help="class_weight='balanced' (default: the transfer template's)")  # fmt: skip
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    ap.add_argument("--through-services", action=argparse.BooleanOptionalAction, default=None,
                    help="run every round through the running stack's RPCs (default for --folder; bundled sets default to the in-process simulation)")  # fmt: skip  # noqa: E501
    ap.add_argument("--pool", type=int, default=None, help="through the services: stratified subset of the bundled pool")
    ap.add_argument("--test", type=int, default=None, help="through the services: stratified subset of the bundled test set")
    ap.add_argument("--val-per-class", type=int, default=10, help="through the services: validation images per class (outside pool and test)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    datasets = args.datasets or ([] if args.folder else ["animal-mnist", "fashion-mnist"])
    client = None
    services = args.through_services if args.through_services is not None else bool(args.folder)
    try:
        if args.folder:
            load_folder(args.folder, seed_per_class=args.seed_per_class + (1 if services else 0))  # fail before connecting
        if args.folder or services:
            from firstlight.sdk import Firstlight

            client = Firstlight.from_stack(args.data_dir)
        if services:
            # mc_dropout has no service counterpart: the default comparison here is the control + the default
            chosen = ["random", st.DEFAULT_STRATEGY] if args.strategies is DEFAULT_COMPARE else args.strategies
            run_through_services(
                datasets, client=client, folder=args.folder, strategies=chosen, seeds=args.seeds, seed_per_class=args.seed_per_class,
                rounds=args.rounds, batch=args.batch, pool=args.pool, test=args.test, val_per_class=args.val_per_class, out=args.out,
                tag=args.tag, test_frac=args.test_frac,
            )  # fmt: skip
            return 0
        run(
            datasets, folder=args.folder, client=client, strategies=args.strategies, seeds=args.seeds,
            seed_per_class=args.seed_per_class, rounds=args.rounds, batch=args.batch, C=args.C, balanced=args.balanced,
            size=args.size, out=args.out, tag=args.tag, test_frac=args.test_frac,
        )  # fmt: skip
    except (FolderError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
