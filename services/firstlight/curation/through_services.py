"""The active-learning benchmark through the running stack's services: the live loop's RPCs,
with an oracle in place of the labeler.

One app per benchmark set holds everything, uploaded once through ingestion (embedded by the
EmbeddingService, indexed by search):

- the pool: unlabeled, no split (``pool-00000``...; uploaded in pool order, so the
  CurationService lists it in the order ``simulate`` indexes it);
- a small validation set and the held-out test set, labeled, with their split recorded on the
  input at upload (``val-*``, ``test-*``).

Runs (strategy × seed) go one after another on that app; each run has its own model and
dataset id (``<strategy>-s<seed>-<token>``), and takes its labels off again at the end, so the
next run starts from the same unlabeled pool. One round of a run, all through the services:

1. ``PostAnnotations``: the oracle's labels of the inputs picked so far (the seed set first:
   the same inputs ``simulate.seed_set`` picks for that seed);
2. ``CreateDataset(from_inputs)``: labeled pool inputs go to train, validation and test keep
   the split they were uploaded with (the same held-out inputs for every version);
3. ``TrainModel`` (transfer template, its default settings) and wait for the job;
4. ``EvaluateModelVersion(test)``: test accuracy of that version on the held-out split;
5. ``SuggestInputsForLabeling(strategy, batch, version, record_round)``: the next batch, and
   the round goes into the app's experiment record (``ListLearningRounds``) with the labels
   the version trained on and its validation and test metrics.

The rounds+1 curve points are the same as ``simulate.run_curve``'s, with the same per-round
selection seeds (``default_rng([seed, 1])``), so the two modes can be compared on one set.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from firstlight.curation import simulate
from firstlight.curation import strategies as st

UPLOAD_CHUNK = 256
LABEL_CHUNK = 500  # annotations per PostAnnotations call


@dataclass
class ImageSet:
    """A benchmark set as encoded images: class index per image, class names."""

    name: str
    classes: list[str]
    pool: list[bytes]
    y_pool: np.ndarray
    test: list[bytes]
    y_test: np.ndarray
    val: list[bytes]
    y_val: np.ndarray


@dataclass
class Prepared:
    app_id: str
    pool_ids: list[str]
    seconds: float  # upload + indexing


def pool_id(i: int) -> str:
    return f"pool-{i:05d}"


def prepare(client, data: ImageSet, app_id: str, *, timeout_s: float = 3600, log: Callable[[str], None] | None = None) -> Prepared:  # type: ignore[no-untyped-def]
    """Create ``app_id`` and upload the set once (pool unlabeled; validation and test labeled,
    split recorded on the input); waits until every input is indexed. Re-running on an app that
    already holds the set uploads nothing new (ids are fixed; ALREADY_EXISTS is fine)."""
    from firstlight.sdk import UploadItem

    t0 = time.monotonic()
    client.create_app(app_id, exist_ok=True)
    items = [UploadItem(img, [], id=pool_id(i)) for i, img in enumerate(data.pool)]
    items += [UploadItem(img, [data.classes[k]], id=f"val-{i:05d}", split="validation") for i, (img, k) in enumerate(zip(data.val, data.y_val))]
    items += [UploadItem(img, [data.classes[k]], id=f"test-{i:05d}", split="test") for i, (img, k) in enumerate(zip(data.test, data.y_test))]
    have = client.indexed_count(app_id)
    if have < len(items):
        if log:
            log(f"uploading {len(items)} images to app {app_id!r} ({len(data.pool)} pool, {len(data.val)} validation, {len(data.test)} test)")
        report = client.upload(app_id, items, chunk=UPLOAD_CHUNK)
        bad = [f for f in report.failures if f.code != "ALREADY_EXISTS"]
        if bad:
            raise RuntimeError(f"{len(bad)} images were refused, e.g. {bad[0].id}: {bad[0].code} {bad[0].message}")
        client.wait_indexed(app_id, len(items), timeout=timeout_s)
    return Prepared(app_id, [pool_id(i) for i in range(len(data.pool))], time.monotonic() - t0)


def _label(client, app_id: str, labels: dict[str, str], *, remove: bool = False) -> None:  # type: ignore[no-untyped-def]
    items = list(labels.items())
    for start in range(0, len(items), LABEL_CHUNK):
        part = {i: [c] for i, c in items[start : start + LABEL_CHUNK]}
        client.annotate(app_id, remove=part) if remove else client.annotate(app_id, part)


@dataclass
class Curve:
    labels: list[int]
    accuracy: list[float]
    rounds: list[int]  # experiment-record round numbers
    versions: list[str]
    seconds: float


def run_curve(
    client,
    prepared: Prepared,
    data: ImageSet,
    *,
    strategy: str,
    seed: int,
    seed_per_class: int = 2,  # type: ignore[no-untyped-def]
    rounds: int = 15,
    batch: int = 50,
    token: str = "",
    log: Callable[[str], None] | None = None,
) -> Curve:
    """One strategy, one seed, through the services (see module doc)."""
    t0 = time.monotonic()
    app_id, ids, y = prepared.app_id, prepared.pool_ids, np.asarray(data.y_pool)
    index = {i: n for n, i in enumerate(ids)}
    run_id = f"{strategy.replace('_', '-')}-s{seed}-{token or uuid.uuid4().hex[:6]}"
    client.create_model(app_id, run_id, data.classes)
    labeled: dict[str, str] = {}
    out = Curve([], [], [], [], 0.0)
    try:
        first = simulate.seed_set(y, seed_per_class, np.random.default_rng(seed))
        new = {ids[i]: data.classes[y[i]] for i in first}
        rng = np.random.default_rng([seed, 1])
        for r in range(rounds + 1):
            _label(client, app_id, new)
            labeled.update(new)
            client.create_dataset(app_id, run_id, from_inputs=True, write_splits=False)
            job = client.train(app_id, run_id, run_id)
            ev = client.evaluate(app_id, run_id, job.version, split="test")
            out.labels.append(len(labeled))
            out.accuracy.append(float(ev.metrics["accuracy"]))
            out.versions.append(job.version)
            b = min(batch, len(ids) - len(labeled))
            if b == 0:  # the whole pool is labeled: nothing left to suggest (or to record a round with)
                break
            resp = client.suggest(
                app_id, run_id, batch_size=b, strategy=strategy, version=job.version,
                seed=int(rng.integers(2**31)), record_round=True,
            )  # fmt: skip
            out.rounds.append(int(resp.round))
            if log:
                log(f"  {run_id} round {r}: {len(labeled)} labels, v{job.version}, test accuracy {out.accuracy[-1]:.4f}")
            if r == rounds:
                break
            picked = [s.input_id for s in resp.suggestions]
            if len(set(picked)) != len(picked) or any(p in labeled or p not in index for p in picked):
                raise RuntimeError(f"round {r}: the suggestions are not {b} distinct unlabeled pool inputs")
            new = {p: data.classes[y[index[p]]] for p in picked}  # the oracle
    finally:
        if labeled:  # back to an unlabeled pool for the next run
            _label(client, app_id, labeled, remove=True)
    out.seconds = time.monotonic() - t0
    return out


def run_benchmark(
    client,
    data: ImageSet,
    *,
    app_id: str,
    strategies: Sequence[str],
    seeds: Sequence[int],
    seed_per_class: int = 2,  # type: ignore[no-untyped-def]
    rounds: int = 15,
    batch: int = 50,
    control: str = "random",
    log: Callable[[str], None] | None = None,
) -> simulate.BenchmarkResult:
    """Every strategy (plus ``control``) × seed through the services; the same result type (and
    JSON/Markdown/PNG) as ``simulate.run_benchmark``."""
    names = list(dict.fromkeys([control, *strategies]))
    for name in names:
        if name not in st.STRATEGIES or name == "mc_dropout":
            raise ValueError(f"strategy {name!r} cannot run through the services (SuggestInputsForLabeling has no mc_dropout)")
    if not seeds:
        raise ValueError("need at least one seed")
    prepared = prepare(client, data, app_id, log=log)
    if log:
        log(f"{data.name}: app {app_id!r} ready in {prepared.seconds:.0f}s")
    token = uuid.uuid4().hex[:6]
    accuracy: dict[str, dict[int, list[float]]] = {}
    seconds: dict[str, float] = {}
    per_run: dict[str, dict[str, object]] = {}
    labels: list[int] = []
    for name in names:
        accuracy[name], seconds[name] = {}, 0.0
        for s in seeds:
            curve = run_curve(
                client, prepared, data, strategy=name, seed=int(s), seed_per_class=seed_per_class, rounds=rounds, batch=batch, token=token, log=log
            )
            accuracy[name][int(s)] = curve.accuracy
            labels = curve.labels
            seconds[name] += curve.seconds
            per_run[f"{name}/{s}"] = {"seconds": round(curve.seconds, 1), "rounds": curve.rounds, "versions": curve.versions}
            if log:
                log(f"{name:>18} seed {s}: acc {curve.accuracy[0]:.3f} -> {curve.accuracy[-1]:.3f} at {curve.labels[-1]} labels ({curve.seconds:.0f}s)")
    settings = {
        "seed_per_class": seed_per_class,
        "rounds": rounds,
        "batch": batch,
        "pool": len(data.pool),
        "test": len(data.test),
        "validation": len(data.val),
        "classes": len(data.classes),
        "fit": "TrainModel (transfer_classifier, default settings)",
        "mode": "through-services",
        "app_id": app_id,
        "upload_seconds": round(prepared.seconds, 1),
        "runs": per_run,
    }
    return simulate.BenchmarkResult(
        strategies=names, seeds=[int(s) for s in seeds], labels=labels, accuracy=accuracy, settings=settings, seconds=seconds, control=control,
    )  # fmt: skip
