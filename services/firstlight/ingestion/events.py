"""The ingestion service's events on the wire: the one place that builds their protobufs and
picks their topics and keys. The store encodes the core's domain events (``ports.Event``) with
:func:`encode` into outbox rows; the relay reads them back with :func:`watched` and
:func:`type_name`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import singledispatch

from firstlight.domain.generations import generation_of
from firstlight.ingestion.ports import (
    AnnotationsChanged,
    EmbeddingModelChanged,
    Event,
    InputIngested,
    InputRow,
    InputsDeleted,
    Region,
)
from firstlight.messaging import topics
from firstlight.v1 import common_pb2, events_pb2

PRODUCER = "ingestion"


@dataclass(frozen=True)
class OutboxEvent:
    """An encoded event as the outbox keeps it."""

    topic: str
    key: bytes
    value: bytes


def _header(key: str | None = None) -> events_pb2.EventHeader:
    header = events_pb2.EventHeader(idempotency_key=key or uuid.uuid4().hex, producer=PRODUCER)
    header.event_time.GetCurrentTime()
    return header


def region_proto(g: Region) -> common_pb2.Region:
    """A stored labeled object as a common.Region (score 0: it is a label, not a detection)."""
    return common_pb2.Region(concept=g[0], box=common_pb2.BoundingBox(x0=g[1], y0=g[2], x1=g[3], y1=g[4]))


def _ingested(row: InputRow, key: str | None, embedding_model: str, preview_uri: str = "") -> events_pb2.InputIngested:
    return events_pb2.InputIngested(
        embedding_model=embedding_model,
        preview_uri=preview_uri,
        header=_header(key),
        app_id=row.app_id,
        input_id=row.id,
        blob_uri=row.blob_uri,
        concepts=row.concepts,
        split=row.split,  # type: ignore[arg-type]
        label_revision=row.label_revision,
        generation=generation_of(row.created_at),
    )


@singledispatch
def encode(event: Event) -> OutboxEvent:
    """A domain event as the outbox row the relay publishes (topic, key, payload)."""
    raise TypeError(f"not an ingestion event: {type(event).__name__}")


@encode.register
def _(event: InputIngested) -> OutboxEvent:
    row = event.row
    msg = _ingested(row, event.idempotency_key, event.embedding_model, event.preview_uri)
    return OutboxEvent(topics.INPUTS_INGESTED, topics.event_key(row.app_id, row.id), msg.SerializeToString())


@encode.register
def _(event: EmbeddingModelChanged) -> OutboxEvent:
    msg = events_pb2.EmbeddingModelChanged(
        header=_header(),
        app_id=event.app_id,
        embedding_model=event.embedding_model,
        previous_embedding_model=event.previous_embedding_model,
        input_ids=list(event.input_ids),
    )
    return OutboxEvent(topics.EMBEDDING_MODEL_CHANGED, topics.event_key(event.app_id), msg.SerializeToString())


@encode.register
def _(event: InputsDeleted) -> OutboxEvent:
    msg = events_pb2.InputsDeleted(header=_header(), app_id=event.app_id, input_ids=list(event.input_ids), generations=list(event.generations))
    return OutboxEvent(topics.INPUTS_DELETED, topics.event_key(event.app_id), msg.SerializeToString())


@encode.register
def _(event: AnnotationsChanged) -> OutboxEvent:
    r = event.row
    msg = events_pb2.AnnotationsChanged(
        header=_header(),
        app_id=r.app_id,
        input_id=r.id,
        concepts=r.concepts,
        split=r.split,  # type: ignore[arg-type]
        label_revision=r.label_revision,
        regions=[region_proto(g) for g in r.regions],
        generation=generation_of(r.created_at),
    )
    return OutboxEvent(topics.ANNOTATIONS_CHANGED, topics.event_key(r.app_id, r.id), msg.SerializeToString())


def type_name(row: OutboxEvent) -> str:
    """The payload's message type (the record's type header)."""
    return topics.TOPICS[row.topic].message_type.DESCRIPTOR.full_name


def watched(row: OutboxEvent) -> tuple[str, str, str] | None:
    """(app, input, embedding model) of an ``inputs.ingested`` row: an announcement search is to
    confirm; None for every other row."""
    if row.topic != topics.INPUTS_INGESTED:
        return None
    msg = events_pb2.InputIngested.FromString(row.value)
    return msg.app_id, msg.input_id, msg.embedding_model


def announcement_prefix(app_id: str) -> tuple[str, bytes]:
    """(topic, record-key prefix) shared by every ``inputs.ingested`` row of the app's inputs."""
    return topics.INPUTS_INGESTED, topics.event_key(app_id) + b"/"
