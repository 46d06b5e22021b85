"""The ladder's middle rungs through the real services: bulk labeling, datasets and splits,
transfer and one-shot training in workers, evaluation with reports, promotion, serving the
trained version through Triton after `model.version.ready`, and workflows."""

from __future__ import annotations

import threading

import grpc
import pytest

from firstlight import datasets
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.v1 import inference_pb2, training_pb2

from .helpers import eventually

pytestmark = pytest.mark.integration

APP = "ladder-it"
CONCEPTS = ["bird", "elephant", "zebra"]


@pytest.fixture(scope="module")
def labeled(client: Firstlight) -> dict[str, str]:
    client.create_app(APP)
    animals = datasets.animal_mnist(30, seed=5, classes=CONCEPTS)
    unlabeled = datasets.animal_mnist(5, seed=6, classes=["bear"])
    items = [UploadItem(d, [c], id=i) for i, c, d in animals] + [UploadItem(d, [], id=f"u-{i}") for i, _, d in unlabeled]
    report = client.upload(APP, items)
    assert not report.failures
    client.wait_indexed(APP, len(items), timeout=300)
    return {i: c for i, c, _ in animals}


def test_bulk_label_unlabel_relabel(client: Firstlight, labeled: dict[str, str]) -> None:
    preview = client.bulk_label(APP, add=["bear"], text="bear", only_unlabeled=True, max_results=3, dry_run=True)
    assert len(preview.input_ids) == 3 and list(preview.scores) == sorted(preview.scores, reverse=True)
    assert all(c == [] for c in (list(client.get_input(APP, i).concepts) for i in preview.input_ids))  # dry run
    picked = ["u-" + i for i, _, _ in datasets.animal_mnist(5, seed=6, classes=["bear"])][:2]
    client.bulk_label(APP, add=["bear", "mammal"], input_ids=picked)
    assert sorted(client.get_input(APP, picked[0]).concepts) == ["bear", "mammal"]
    client.bulk_label(APP, remove=["mammal"], input_ids=picked)  # un-label
    client.bulk_label(APP, add=["ursa"], remove=["bear"], input_ids=picked[1:])  # relabel
    assert list(client.get_input(APP, picked[0]).concepts) == ["bear"]
    assert list(client.get_input(APP, picked[1]).concepts) == ["ursa"]
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT"):
        client.bulk_label(APP, add=["x"])  # no selection
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.bulk_label(APP, add=["x"], input_ids=["does-not-exist"])


def test_dataset_train_evaluate_serve(client: Firstlight, labeled: dict[str, str]) -> None:
    ds = client.create_dataset(APP, "three", concepts=CONCEPTS, fractions=(0.6, 0.2, 0.2), seed=1)
    assert {c.concept: (c.train, c.validation, c.test) for c in ds.counts} == dict.fromkeys(CONCEPTS, (18, 6, 6))
    again = client.create_dataset(APP, "three", concepts=CONCEPTS, fractions=(0.6, 0.2, 0.2), seed=1)
    assert again.version == ds.version  # same inputs, labels and seed: the same frozen version
    some = next(i for i in labeled)
    assert client.get_input(APP, some).split != 0  # splits were written back to the inputs

    client.create_model(APP, "animals", CONCEPTS)
    stages: list[str] = []
    job = client.train(APP, "animals", "three", on_progress=lambda p: stages.append(p.stage))
    assert job.state == training_pb2.JOB_STATE_SUCCEEDED and job.version == "1"
    assert stages[0] == "queued" and "fitting" in stages and stages[-1] == "done"

    listed = client.versions(APP, "animals")
    assert listed.model.serving_version == "1"
    [v1] = listed.versions
    assert v1.serving and v1.dataset_version == ds.version and v1.validation_metrics["accuracy"] > 0.8
    assert 0 < v1.train_seconds < 30
    fit = __import__("json").loads(v1.fit_report_json)
    assert fit["n_train"] == 54 and fit["class_weighting"] == "balanced" and set(fit["class_counts"]) == set(CONCEPTS)

    ev = client.evaluate(APP, "animals", "1", split="test")
    assert ev.count == 18 and ev.metrics["accuracy"] > 0.7
    assert ev.confusion_matrix_png.startswith(b"\x89PNG\r\n\x1a\n")
    assert sum(ev.confusion_matrix) == 18 and list(ev.concept_order) == sorted(CONCEPTS)
    assert "| concept" in ev.report_markdown.lower() or "concept" in ev.report_markdown

    # Served through Triton once model.version.ready reached the inference service.
    train_ids = [i for i, c in labeled.items()][:12]
    images = {i: client_bytes for i, _, client_bytes in datasets.animal_mnist(30, seed=5, classes=CONCEPTS) if i in train_ids}

    def served():  # type: ignore[no-untyped-def]
        try:
            return client.predict([images[i] for i in train_ids], model="animals", app_id=APP, top_k=1)
        except FirstlightError:
            return None

    predictions = eventually(served, timeout=60, what="trained model served")
    hits = sum(p[0][0] == labeled[i] for p, i in zip(predictions, train_ids))
    assert hits >= 10, predictions


def test_two_trainings_at_once_and_promotion(client: Firstlight, labeled: dict[str, str]) -> None:
    client.create_dataset(APP, "three", concepts=CONCEPTS, fractions=(0.6, 0.2, 0.2), seed=1)
    client.create_model(APP, "oneshot", CONCEPTS, template="oneshot_classifier", settings={"examples_per_concept": "1"})
    client.create_model(APP, "strong", CONCEPTS, exist_ok=True)
    jobs: dict[str, training_pb2.TrainingJob] = {}
    threads = [threading.Thread(target=lambda m=m: jobs.setdefault(m, client.train(APP, m, "three"))) for m in ("oneshot", "strong")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {m: j.state for m, j in jobs.items()} == dict.fromkeys(("oneshot", "strong"), training_pb2.JOB_STATE_SUCCEEDED)

    # A second version trained with crippling regularisation must not replace the first.
    job = client.train(APP, "strong", "three", settings={"C": "0.000001"})
    listed = client.versions(APP, "strong")
    v2 = next(v for v in listed.versions if v.version == job.version)
    v1 = next(v for v in listed.versions if v.version != job.version)
    better = v2.validation_metrics["accuracy"] > v1.validation_metrics["accuracy"]
    assert listed.model.serving_version == (job.version if better else v1.version)
    assert v2.promotion_note
    cmp = client.compare(APP, "strong", split="validation")
    assert len(cmp.evaluations) == 2 and cmp.best_version in {v1.version, v2.version} and "|" in cmp.report_markdown


def test_augment_flip_trains_on_mirrored_embeddings(client: Firstlight, labeled: dict[str, str]) -> None:
    client.create_dataset(APP, "three", concepts=CONCEPTS, fractions=(0.6, 0.2, 0.2), seed=1)
    client.create_model(APP, "flipped", CONCEPTS, settings={"augment_flip": "true"})
    stages: list[str] = []
    job = client.train(APP, "flipped", "three", on_progress=lambda p: stages.append(p.stage))
    assert job.state == training_pb2.JOB_STATE_SUCCEEDED and "embedding flipped images" in stages


def test_workflow_general_then_custom(client: Firstlight, labeled: dict[str, str]) -> None:
    image = datasets.animal_mnist(1, seed=9, classes=["zebra"])[0][2]
    steps = [
        inference_pb2.WorkflowStep(model_id="general", top_k=3),
        inference_pb2.WorkflowStep(model_id="animals", top_k=1),
        inference_pb2.WorkflowStep(model_id="animals", gate_step=0, gate_concepts=["no-such-imagenet-class"], top_k=1),
    ]
    eventually(lambda: _served(client, "animals"), timeout=60, what="animals served")
    out = client.workflow(APP, [image], steps).outputs[0]
    assert list(out.ran) == [True, True, False]
    assert len(out.steps[0].concepts) == 3 and len(out.steps[1].concepts) == 1 and not out.steps[2].concepts


def _served(client: Firstlight, model: str) -> bool:
    try:
        client.predict([datasets.sample_photo("coffee")], model=model, app_id=APP)
        return True
    except FirstlightError:
        return False


@pytest.mark.parametrize(
    "call, code, words",
    [
        (lambda c: c.create_model(APP, "lonely", ["bird"]), "INVALID_ARGUMENT", "at least two concepts"),
        (lambda c: c.create_model(APP, "typo", CONCEPTS, settings={"learning_rat": "1"}), "INVALID_ARGUMENT", "learning_rat"),
        (lambda c: c.create_model(APP, "range", CONCEPTS, settings={"C": "-1"}), "INVALID_ARGUMENT", "C"),
        (lambda c: c.create_model(APP, "tmpl", CONCEPTS, template="nope"), "INVALID_ARGUMENT", "template"),
        (lambda c: c.train(APP, "no-such-model", "three"), "NOT_FOUND", "no-such-model"),
        (lambda c: c.train(APP, "animals", "no-such-dataset"), "NOT_FOUND", "no-such-dataset"),
        (lambda c: c.evaluate(APP, "animals", "99"), "NOT_FOUND", "99"),
        (lambda c: c.predict([datasets.sample_photo("coffee")], model="animals", version="99", app_id=APP), "NOT_FOUND", "99"),
        (lambda c: c.predict([datasets.sample_photo("coffee")], model="ghost", app_id=APP), "NOT_FOUND", "ghost"),
    ],
    ids=[
        "one-concept",
        "unknown-setting",
        "setting-range",
        "unknown-template",
        "unknown-model",
        "unknown-dataset",
        "unknown-version",
        "predict-unknown-version",
        "predict-unknown-model",
    ],
)
def test_training_errors(client: Firstlight, labeled: dict[str, str], call, code: str, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FirstlightError) as err:
        call(client)
    assert err.value.code.name == code and words in err.value.message


def test_concept_without_labels_or_validation(client: Firstlight, labeled: dict[str, str]) -> None:
    client.create_model(APP, "with-cat", ["bird", "cat"])
    with pytest.raises(FirstlightError) as err:
        client.train(APP, "with-cat", "three")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "cat" in err.value.message
