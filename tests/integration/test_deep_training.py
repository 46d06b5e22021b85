"""Deep templates through the real services: a visual_classifier job runs in the training
service's worker, streams per-epoch progress (gRPC and the `training.progress` topic), records its
experiment, is exported to Triton, served by Predict and explained by curation; a job can be cancelled; a job whose
service is killed mid-training resumes from its checkpoint after the restart (acceptance 4)."""

from __future__ import annotations

import signal

import pytest

from firstlight import datasets
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.v1 import events_pb2, training_pb2

from .helpers import eventually
from .kafka_io import find_record

pytestmark = pytest.mark.integration

APP = "deep-it"
CONCEPTS = ["bird", "elephant", "zebra"]
TINY = {"architecture": "resnet_scratch", "image_size": "32", "batch_size": "8", "lrate": "0.05", "init_epochs": "1", "step_epochs": "1"}


@pytest.fixture(scope="module")
def dataset(client: Firstlight) -> str:
    client.create_app(APP)
    animals = datasets.animal_mnist(12, seed=3, classes=CONCEPTS)
    report = client.upload(APP, [UploadItem(d, [c], id=i) for i, c, d in animals])
    assert not report.failures
    client.wait_indexed(APP, len(animals), timeout=300)
    client.create_dataset(APP, "d", concepts=CONCEPTS, fractions=(0.5, 0.25, 0.25), seed=0)
    return "d"


def test_hyperparameter_that_does_not_apply_is_invalid_argument(client: Firstlight, dataset: str) -> None:
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT.*detection_score_threshold"):  # noqa: RUF043
        client.create_model(APP, "bad", CONCEPTS, template="visual_classifier", settings={"detection_score_threshold": "0.5"})
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT.*batch_size"):  # noqa: RUF043
        client.create_model(APP, "bad", CONCEPTS, template="visual_classifier", settings={"batch_size": "0"})


def test_train_stream_record_and_serve(stack, client: Firstlight, dataset: str) -> None:  # type: ignore[no-untyped-def]
    rows: list[training_pb2.TrainingProgress] = []
    job = client.train_deep(APP, "deepcls", dataset, CONCEPTS, settings={**TINY, "num_epochs": "3", "test_freq": "2"}, on_progress=rows.append)
    assert job.state == training_pb2.JOB_STATE_SUCCEEDED and job.version == "1"
    epochs = [r for r in rows if r.epoch]
    assert [r.epoch for r in epochs] == [1, 2, 3] and all(r.num_epochs == 3 for r in epochs)
    assert [bool(r.metrics) for r in epochs] == [False, True, True]  # test_freq 2, and the last epoch
    assert [r.lrate for r in epochs] == pytest.approx([0.05, 0.005, 0.0005])  # init 1, step 1
    assert epochs[0].eta_seconds > 0 and epochs[-1].eta_seconds == 0
    [v] = client.versions(APP, "deepcls").versions
    assert v.template == "visual_classifier" and v.settings["architecture"] == "resnet_scratch"
    assert {"accuracy", "macro_precision", "macro_recall"} <= set(v.validation_metrics) and "accuracy" in v.test_metrics
    assert v.timings["train_seconds"] > 0 and v.timings["total_seconds"] >= v.timings["train_seconds"]
    experiment = __import__("json").loads(v.fit_report_json)
    assert experiment["architecture"] == "resnet_scratch" and len(experiment["history"]) == 3

    ev = client.evaluate(APP, "deepcls", "1", split="test")  # the exported TorchScript, re-run
    assert ev.count == 9 and ev.confusion_matrix_png.startswith(b"\x89PNG")

    # explained by curation: the network split at its last feature map by training (issue 19)
    shown = datasets.animal_mnist(1, seed=98, classes=["zebra"])[0][2]
    ex = client.explain(APP, "deepcls", image=shown, top_k=2, evidence=2)
    assert ex.model_version == "1" and ex.template == "visual_classifier" and len(ex.concepts) == 2
    for c in ex.concepts:
        assert (c.map_height, c.map_width) == (4, 4) and max(c.saliency) > min(c.saliency)  # 32 px: 1/8 of the side
        assert c.overlay_png.startswith(b"\x89PNG") and 1 <= len(c.evidence) <= 2

    record = find_record(
        stack.broker.bootstrap,
        "training.progress",
        lambda r: (
            events_pb2.TrainingProgressed.FromString(r.value).job_id == job.id
            and events_pb2.TrainingProgressed.FromString(r.value).state == training_pb2.JOB_STATE_SUCCEEDED
        ),
    )
    assert record.key == f"{APP}/{job.id}".encode()

    image = datasets.animal_mnist(1, seed=99, classes=["zebra"])[0][2]

    def served():  # type: ignore[no-untyped-def]
        try:
            return client.predict([image], model="deepcls", app_id=APP, top_k=3)
        except FirstlightError as exc:
            if "NOT_FOUND" not in str(exc):
                raise
            return None

    ranked = eventually(served, timeout=120, what="deep model served")
    assert len(ranked[0]) == 3 and {c for c, _ in ranked[0]} == set(CONCEPTS)
    assert sum(s for _, s in ranked[0]) == pytest.approx(1.0, abs=1e-3)
    # the version's ONNX graph, in ONNX Runtime on this CPU-only host (issue 17)
    assert f"deep model fl.{APP}.deepcls v1: onnxruntime on cpu" in (stack.log_dir / "triton.log").read_text()


def _follow_until(client: Firstlight, job_id: str, epoch: int) -> list[int]:
    seen = []
    for row in client.progress(APP, job_id):
        if row.epoch:
            seen.append(row.epoch)
        if row.epoch >= epoch or row.state in (3, 4, 5):
            return seen
    return seen


def test_cancel(client: Firstlight, dataset: str) -> None:
    client.create_model(APP, "cancelme", CONCEPTS, template="visual_classifier", settings={**TINY, "num_epochs": "200"})
    job = client.start_training(APP, "cancelme", dataset)
    _follow_until(client, job.id, 1)
    client.cancel_training(APP, job.id)
    last = list(client.progress(APP, job.id))[-1]
    assert last.state == training_pb2.JOB_STATE_CANCELLED
    assert client.job(APP, job.id).state == training_pb2.JOB_STATE_CANCELLED
    with pytest.raises(FirstlightError, match="FAILED_PRECONDITION"):
        client.cancel_training(APP, job.id)


def test_killed_job_resumes_from_its_checkpoint(stack, client: Firstlight, dataset: str) -> None:  # type: ignore[no-untyped-def]
    # ~400 items per epoch keeps each epoch around a second on a loaded CPU: the kill lands mid-job.
    settings = {**TINY, "num_epochs": "5", "num_items_per_epoch": "400", "test_freq": "5"}
    client.create_model(APP, "resumable", CONCEPTS, template="visual_classifier", settings=settings)
    job = client.start_training(APP, "resumable", dataset)
    before = _follow_until(client, job.id, 2)
    assert before[-1] >= 2
    stack.kill_service("training", signal.SIGKILL)  # a crash: no graceful shutdown
    stack.start_service("training")
    after = []
    for row in client.progress(APP, job.id):
        if row.epoch:
            after.append(row.epoch)
    final = client.job(APP, job.id)
    assert final.state == training_pb2.JOB_STATE_SUCCEEDED, final.error
    # The epoch counter continues after the last checkpoint (never restarts at 1) and finishes.
    assert after and after[0] > 1 and after[-1] == 5 and after == list(range(after[0], 6))
    assert after[0] >= before[-1] + 1  # epoch before[-1] was checkpointed before it was reported
    [v] = client.versions(APP, "resumable").versions
    history = __import__("json").loads(v.fit_report_json)["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]  # the version's history spans both processes
