"""training.events: the one place the training service builds its event protobufs and picks
their topics (with a recording producer; the integration tests read them off the broker)."""

from __future__ import annotations

from typing import Any

from firstlight.messaging import topics
from firstlight.training.events import BusEvents
from firstlight.training.ports import JobProgressed, VersionReady
from firstlight.v1 import events_pb2


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, Any]] = []

    def send_and_wait(self, topic: str, key: bytes, message: Any, /) -> None:
        self.sent.append((topic, key, message))


def test_version_ready_and_progress_go_to_their_topics_keyed_by_app() -> None:
    producer = Producer()
    events = BusEvents(producer)
    events.version_ready(VersionReady("app", "m", "3", "fl.app.m", ["a", "b"], True, "softmax", kind="detector", image_size=224))
    events.job_progressed(JobProgressed("app", "job1", "m", 2, epoch=2, num_epochs=5, loss=0.5, metrics={"accuracy": 0.9}))
    events.job_progressed(JobProgressed("app", "job1", "m", 3, message="version 3: promoted"))
    (t1, k1, ready), (t2, k2, epoch), (t3, _, end) = producer.sent
    assert (t1, k1) == (topics.MODEL_VERSION_READY, topics.event_key("app", "m"))
    assert isinstance(ready, events_pb2.ModelVersionReady)
    assert (ready.version, ready.serving, ready.kind, ready.image_size, list(ready.concepts)) == ("3", True, "detector", 224, ["a", "b"])
    assert (t2, k2) == (topics.TRAINING_PROGRESS, topics.event_key("app", "job1")) and t3 == topics.TRAINING_PROGRESS
    assert (epoch.epoch, epoch.num_epochs, dict(epoch.metrics)) == (2, 5, {"accuracy": 0.9})
    assert end.epoch == 0 and end.state == 3 and end.message == "version 3: promoted"
    # one id per epoch row and one for the end: a redelivered row is recognised
    assert (epoch.header.idempotency_key, end.header.idempotency_key) == ("job1/2/2", "job1/end/3")
    assert ready.header.idempotency_key == "app/m/3" and ready.header.producer == "training"
