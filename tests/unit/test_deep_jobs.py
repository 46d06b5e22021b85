"""Deep jobs in the training core with in-memory peers and events (the integration test does
the same through the real services): progress rows with ETA and the Kafka event per epoch, the
experiment record, cancellation, and a job stopped by shutdown resuming in a new service instance."""

import time

import pytest
import torch
from training_doubles import DarkLightPeers, RecordedEvents, training_core, wait_for_job

from firstlight.errors import FailedPrecondition
from firstlight.training.core import CANCELLED, RUNNING, SUCCEEDED

torch.set_num_threads(1)
CONCEPTS = ["dark", "light"]
TINY = {"architecture": "resnet_scratch", "image_size": "32", "batch_size": "8", "lrate": "0.05", "test_freq": "2"}


class FakePlatform(DarkLightPeers):
    """The peers a deep job reads, and its events."""

    def __init__(self) -> None:
        super().__init__()
        self.events = RecordedEvents()


def _service(tmp_path, platform):
    return training_core(tmp_path, platform, platform.events)


@pytest.fixture
def ready(tmp_path):
    platform = FakePlatform()
    service = _service(tmp_path, platform)
    service.create_dataset("app", "d", fractions=(0.5, 0.25, 0.25))
    yield service, platform
    service.shutdown()


def test_job_streams_epochs_records_experiment_and_publishes(ready, tmp_path):
    service, platform = ready
    service.create_model("app", "m", "visual_classifier", CONCEPTS, {**TINY, "num_epochs": "3"})
    job = service.train("app", "m", "d", {})
    done = wait_for_job(service, job["id"], (SUCCEEDED,))
    steps = service.log.wait_after(job["id"], 0, 0.1)
    epochs = [s for s in steps if s.epoch]
    assert [s.epoch for s in epochs] == [1, 2, 3] and [bool(s.metrics) for s in epochs] == [False, True, True]
    assert epochs[0].eta_seconds > 0 and epochs[-1].eta_seconds == 0
    assert [e.epoch for e in platform.events.progress if e.epoch] == [1, 2, 3] and platform.events.progress[-1].state == SUCCEEDED
    v = service.store.get_version("app", "m", int(done["version"]))
    exp = v["train_report"]["experiment"]
    assert exp["hyperparameters"]["architecture"] == "resnet_scratch" and exp["dataset_version"] == v["dataset_version"]
    assert {"train_seconds", "export_seconds", "total_seconds", "fetch_seconds"} <= set(exp["timings"])
    assert "accuracy" in exp["test"] and len(exp["history"]) == 3
    assert platform.short_side == round(32 * 256 / 224)  # images shrink to what the template uses
    announced = platform.events.ready[-1]
    assert (announced.kind, announced.image_size) == ("classifier", 32)
    assert (tmp_path / "repo" / announced.triton_model / done["version"] / "model.pt").exists()


def test_cancel_running_and_ended(ready):
    service, platform = ready
    platform.events.delay = 0.5  # slow epochs down so the cancel lands mid-job
    service.create_model("app", "c", "visual_classifier", CONCEPTS, {**TINY, "num_epochs": "50"})
    job = service.train("app", "c", "d", {})
    while not any(s.epoch for s in service.log.wait_after(job["id"], 0, 1.0)):
        pass
    service.cancel(job["id"])
    assert wait_for_job(service, job["id"], (CANCELLED,))["state"] == CANCELLED
    with pytest.raises(FailedPrecondition):
        service.cancel(job["id"])


def test_a_cancel_sent_to_another_replica_stops_the_job(ready, tmp_path):
    service, platform = ready
    platform.events.delay = 0.5
    service.create_model("app", "x", "visual_classifier", CONCEPTS, {**TINY, "num_epochs": "50"})
    job = service.train("app", "x", "d", {})
    while not any(s.epoch for s in service.log.wait_after(job["id"], 0, 1.0)):
        pass
    other = _service(tmp_path, FakePlatform())  # a second replica over the same database
    try:
        other.cancel(job["id"])
        assert wait_for_job(service, job["id"], (CANCELLED,), timeout=30)["state"] == CANCELLED
    finally:
        other.shutdown()


def test_a_job_cancelled_before_a_crash_is_not_resumed(tmp_path):
    platform = FakePlatform()
    first = _service(tmp_path, platform)
    first.create_dataset("app", "d", fractions=(0.5, 0.25, 0.25))
    first.create_model("app", "k", "visual_classifier", CONCEPTS, {**TINY, "num_epochs": "4"})
    job = first.train("app", "k", "d", {})
    first.shutdown()
    # The process died with the job RUNNING and its cancel stored but not yet acted on.
    first.store.update_job(job["id"], state=RUNNING, cancel_requested=True)
    second = _service(tmp_path, platform)
    try:
        second.recover_interrupted_jobs()
        assert second.job(job["id"])["state"] == CANCELLED
    finally:
        second.shutdown()


def test_shutdown_leaves_the_job_running_and_a_new_service_resumes_it(tmp_path):
    platform = FakePlatform()
    first = _service(tmp_path, platform)
    first.create_dataset("app", "d", fractions=(0.5, 0.25, 0.25))
    first.create_model("app", "r", "visual_classifier", CONCEPTS, {**TINY, "num_epochs": "4"})
    platform.events.delay = 0.3
    job = first.train("app", "r", "d", {})
    while not [s for s in first.log.wait_after(job["id"], 0, 1.0) if s.epoch >= 2]:
        pass
    first.shutdown()  # what SIGTERM does: stop between batches, keep the job RUNNING
    time.sleep(1.0)
    assert first.job(job["id"])["state"] == RUNNING
    platform.events.delay = 0.0
    second = _service(tmp_path, platform)
    second.recover_interrupted_jobs()  # what a new process does at start-up
    done = wait_for_job(second, job["id"], (SUCCEEDED,))
    resumed = [s.epoch for s in second.log.wait_after(job["id"], 0, 0.1) if s.epoch]
    assert resumed and resumed[0] >= 3 and resumed[-1] == 4
    exp = second.store.get_version("app", "r", int(done["version"]))["train_report"]["experiment"]
    assert [r["epoch"] for r in exp["history"]] == [1, 2, 3, 4]  # both processes' epochs
    assert exp["epochs_run_in_this_process"] == resumed
    second.shutdown()
