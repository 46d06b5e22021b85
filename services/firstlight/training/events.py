"""The training service's events: the only place it builds event protobufs and picks topics.

:class:`BusEvents` implements the core's :class:`~firstlight.training.ports.EventPublisher` on
the event bus (``model.version.ready``, ``training.progress``)."""

from __future__ import annotations

from typing import Any, Protocol

from firstlight.messaging import topics
from firstlight.messaging.bus import new_header
from firstlight.training.ports import JobProgressed, VersionReady
from firstlight.v1 import events_pb2

SOURCE = "training"


class Producer(Protocol):
    def send_and_wait(self, topic: str, key: bytes, message: Any, /) -> Any: ...


def version_ready_event(e: VersionReady) -> events_pb2.ModelVersionReady:
    return events_pb2.ModelVersionReady(
        header=new_header(SOURCE, f"{e.app_id}/{e.model_id}/{e.version}"),
        app_id=e.app_id,
        model_id=e.model_id,
        version=e.version,
        triton_model=e.triton_model,
        concepts=list(e.concepts),
        serving=e.serving,
        activation=e.activation,
        kind=e.kind,
        image_size=e.image_size,
        embedding_model=e.embedding_model,
    )


def progress_event(e: JobProgressed) -> events_pb2.TrainingProgressed:
    event = events_pb2.TrainingProgressed(
        # one id per epoch row, one for the job's end: a redelivered row is recognised
        header=new_header(SOURCE, f"{e.job_id}/{e.epoch or 'end'}/{e.state}"),
        app_id=e.app_id, job_id=e.job_id, model_id=e.model_id, state=e.state,
        message=e.message, eta_seconds=e.eta_seconds,
    )  # fmt: skip
    if e.epoch:
        event.epoch, event.num_epochs, event.loss, event.lrate = e.epoch, e.num_epochs, e.loss, e.lrate
        event.items_per_second = e.items_per_second
        event.metrics.update(e.metrics)
    return event


class BusEvents:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    def version_ready(self, e: VersionReady) -> None:
        self.producer.send_and_wait(topics.MODEL_VERSION_READY, topics.event_key(e.app_id, e.model_id), version_ready_event(e))

    def job_progressed(self, e: JobProgressed) -> None:
        self.producer.send_and_wait(topics.TRAINING_PROGRESS, topics.event_key(e.app_id, e.job_id), progress_event(e))
