"""The data-efficiency ladder, scripted end to end through the services (``make demo-ladder``,
``firstlight ladder``): upload unlabeled images, bulk-label them by text search with a human's
corrections (simulated by an oracle that knows the true class), freeze a stratified split,
train a transfer classifier and one-shot models, evaluate on validation, confirm on test.

The oracle is the only thing that knows the truth; everything else goes through the same RPCs
a user calls."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from firstlight.errors import NotFound
from firstlight.progress import progress_bar
from firstlight.sdk import Firstlight, UploadItem, folder_items

DEFAULT_CLASSES = ["bear", "bird", "dog", "elephant", "zebra"]


def _predict_when_served(client: Firstlight, app_id: str, model: str, images: list[bytes], timeout: float = 60):  # type: ignore[no-untyped-def]
    """The version is announced on model.version.ready and loaded by the inference service
    asynchronously; wait for it rather than assume it is there."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.predict(images, model=model, app_id=app_id, top_k=1)
        except NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def bulk_label_by_text(client: Firstlight, app_id: str, truth: dict[str, str], console: Console, first_quota: int = 20) -> dict:
    """Rounds of: text search per concept among unlabeled inputs → label the top results in one
    call → the human corrects the wrong ones. Round 1 uses only the ImageNet-name bridge; later
    rounds also use the concept prototypes learned from the labels so far."""
    concepts = sorted(set(truth.values()))
    labeled: dict[str, str] = {}
    rounds = []
    quota = first_quota
    while len(labeled) < len(truth) and len(rounds) < 12:
        remaining = len(truth) - len(labeled)
        quota = min(quota, math.ceil(remaining / len(concepts)))
        # Every concept's text search scores every unlabeled input; an input goes to the concept
        # that scores it highest, and each concept labels the inputs it wins by the widest margin.
        scores: dict[str, dict[str, float]] = {}
        for concept in concepts:
            resp = client.bulk_label(app_id, add=[concept], text=concept, only_unlabeled=True, max_results=min(remaining, 10_000), dry_run=True)
            for input_id, score in zip(resp.input_ids, resp.scores):
                if input_id not in labeled:
                    scores.setdefault(input_id, {})[concept] = score
        ranked: dict[str, list[tuple[float, str]]] = {}
        for input_id, by_concept in scores.items():
            ordered = sorted(by_concept.items(), key=lambda kv: -kv[1])
            margin = ordered[0][1] - (ordered[1][1] if len(ordered) > 1 else 0.0)
            ranked.setdefault(ordered[0][0], []).append((margin, input_id))
        picks: dict[str, str] = {}
        for concept, candidates in ranked.items():
            picks.update({input_id: concept for _, input_id in sorted(candidates, reverse=True)[:quota]})
        if not picks:  # nothing left that search returns: label the rest by hand (oracle)
            picks = {i: truth[i] for i in truth if i not in labeled}
        by_concept: dict[str, list[str]] = {}
        for input_id, concept in picks.items():
            by_concept.setdefault(concept, []).append(input_id)
        for concept, ids in by_concept.items():
            client.bulk_label(app_id, add=[concept], input_ids=ids)
        wrong = {i: c for i, c in picks.items() if truth[i] != c}
        for input_id, guessed in wrong.items():  # the human's corrections: relabel in one call each
            client.bulk_label(app_id, add=[truth[input_id]], remove=[guessed], input_ids=[input_id])
        precision = 1 - len(wrong) / len(picks)
        rounds.append({"round": len(rounds) + 1, "labeled": len(picks), "corrections": len(wrong), "precision": precision})
        console.print(f"  round {len(rounds)}: labeled {len(picks)} by text search, precision {precision:.3f}, {len(wrong)} corrected")
        labeled.update({i: truth[i] for i in picks})
        client.wait_labels_visible(app_id, {i: truth[i] for i in picks})
        quota *= 2
    return {"rounds": rounds, "first_round_precision": rounds[0]["precision"] if rounds else 0.0}


def run_ladder(
    client: Firstlight,
    items: list[tuple[str, str, bytes]],
    out_dir: Path,
    console: Console,
    *,
    app_id: str = "ladder",
    counts: tuple[int, int, int] | None = (500, 100, 100),
    seed: int = 0,
    label_by_text: bool = True,
) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = {i: c for i, c, _ in items}
    concepts = sorted(set(truth.values()))
    console.rule(f"[bold]Data-efficiency ladder: {len(items)} images, {len(concepts)} concepts")
    client.create_app(app_id, exist_ok=True)
    with progress_bar(console) as bar:
        task = bar.add_task("uploading (unlabeled)", total=len(items), rate="")
        uploads = [UploadItem(data, [] if label_by_text else [c], id=i) for i, c, data in items]
        report = client.upload(app_id, uploads, on_progress=lambda n: bar.advance(task, n))
        itask = bar.add_task("indexing", total=len(items), rate="")
        client.wait_indexed(app_id, len(items), timeout=1800, on_progress=lambda n: bar.update(itask, completed=n))
    if report.failures and any(f.code != "ALREADY_EXISTS" for f in report.failures):
        raise RuntimeError(f"upload refused {len(report.failures)} images: {report.failures[0].message}")

    labeling: dict = {"skipped": "uploaded with their labels"}
    if label_by_text:
        console.print("[bold]Bulk labeling by text search[/bold] (+ corrections)")
        labeling = bulk_label_by_text(client, app_id, truth, console)

    if counts and sum(counts) > len(items):
        counts = None  # a smaller folder: fall back to 80/10/10 fractions
    dataset = client.create_dataset(app_id, "main", counts=counts, seed=seed)
    console.print(f"dataset main@{dataset.version[:12]}: " + ", ".join(f"{c.concept} {c.train}/{c.validation}/{c.test}" for c in dataset.counts))

    results: dict[str, dict] = {}
    runs = [
        ("transfer", "transfer_classifier", {}),
        ("oneshot-1", "oneshot_classifier", {"examples_per_concept": "1", "seed": str(seed)}),
        ("oneshot-5", "oneshot_classifier", {"examples_per_concept": "5", "seed": str(seed)}),
    ]
    for model_id, template, settings in runs:
        client.create_model(app_id, model_id, concepts, template=template, settings=settings, exist_ok=True)
        with progress_bar(console) as bar:
            task = bar.add_task(f"training {model_id}", total=100, rate="")

            def on_progress(step, task=task, bar=bar) -> None:  # type: ignore[no-untyped-def]
                bar.update(task, completed=step.progress * 100, rate=step.stage)

            job = client.train(app_id, model_id, "main", on_progress=on_progress)
        version = next(v for v in client.versions(app_id, model_id).versions if v.version == job.version)
        val = client.evaluate(app_id, model_id, job.version, split="validation")
        test = client.evaluate(app_id, model_id, job.version, split="test")
        (out_dir / f"{model_id}-validation-confusion.png").write_bytes(val.confusion_matrix_png)
        (out_dir / f"{model_id}-test-confusion.png").write_bytes(test.confusion_matrix_png)
        (out_dir / f"{model_id}-test-report.md").write_text(test.report_markdown)
        results[model_id] = {
            "version": job.version,
            "train_seconds": version.train_seconds,
            "validation_accuracy": val.metrics["accuracy"],
            "test_accuracy": test.metrics["accuracy"],
            "test_macro_f1": test.metrics.get("macro_f1", float("nan")),
        }

    best = max(results, key=lambda m: results[m]["validation_accuracy"])  # chosen on validation only
    # Served through Triton after model.version.ready: predictions on test images agree with evaluation.
    test_ids = [i for i, _, _ in items][:5]
    by_id = {i: data for i, _, data in items}
    served = _predict_when_served(client, app_id, "transfer", [by_id[i] for i in test_ids])

    table = Table(title=f"One-shot vs transfer learning (test split; best on validation: {best})")
    for col in ("model", "train s", "validation acc", "test acc", "test macro F1"):
        table.add_column(col)
    for model_id, r in results.items():
        table.add_row(model_id, f"{r['train_seconds']:.3f}", f"{r['validation_accuracy']:.3f}", f"{r['test_accuracy']:.3f}", f"{r['test_macro_f1']:.3f}")
    console.print(table)
    summary = {
        "images": len(items),
        "concepts": concepts,
        "labeling": labeling,
        "dataset_version": dataset.version,
        "results": results,
        "best_on_validation": best,
        "served_predictions": [p[0][0] if p else "" for p in served],
        "served_truth": [truth[i] for i in test_ids],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"reports and confusion matrices in {out_dir}")
    return summary


def folder_dataset(folder: Path) -> list[tuple[str, str, bytes]]:
    """(input id, true concept, bytes) from FOLDER/<concept>/<file>: the oracle's answer key."""
    out = []
    for item in folder_items(folder):
        if item.concepts:
            out.append((item.id, item.concepts[0], item.image_bytes))
    return out


def class_balance(items: list[tuple[str, str, bytes]]) -> Counter:
    return Counter(c for _, c, _ in items)
