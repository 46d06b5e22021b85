"""Kafka layer: a local broker process manager, topic table and the event bus."""

from firstlight.messaging.broker import BrokerError, LocalBroker, tansu_binary
from firstlight.messaging.bus import (
    BatchConsumer,
    EventProducer,
    ParsedRecord,
    PoisonMessage,
    RetryableError,
    new_header,
)
from firstlight.messaging.topics import (
    ANNOTATIONS_CHANGED,
    EMBEDDINGS_COMPUTED,
    INPUTS_DELETED,
    INPUTS_INDEXED,
    INPUTS_INGESTED,
    INPUTS_SUBMIT,
    TOPICS,
    TopicSpec,
    dlq,
    ensure_topics,
    event_key,
)

__all__ = [
    "ANNOTATIONS_CHANGED",
    "EMBEDDINGS_COMPUTED",
    "INPUTS_DELETED",
    "INPUTS_INDEXED",
    "INPUTS_INGESTED",
    "INPUTS_SUBMIT",
    "TOPICS",
    "BatchConsumer",
    "BrokerError",
    "EventProducer",
    "LocalBroker",
    "ParsedRecord",
    "PoisonMessage",
    "RetryableError",
    "TopicSpec",
    "dlq",
    "ensure_topics",
    "event_key",
    "new_header",
    "tansu_binary",
]
