"""The embedding service's events on the wire: the one place that builds their protobufs and
picks their topics and keys (``ports.EmbeddingsPublisher``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from firstlight.messaging import topics
from firstlight.messaging.bus import EventProducer, new_header
from firstlight.v1 import events_pb2


class EmbeddingEvents:
    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def computed(self, source: events_pb2.InputIngested, model: str, vector: np.ndarray) -> Any:
        out = events_pb2.EmbeddingComputed(
            # Derived from the source event's key: a redelivery republishes the same logical event.
            header=new_header("embedding", f"{source.header.idempotency_key}:embedding"),
            app_id=source.app_id,
            input_id=source.input_id,
            model=model,
            vector=vector.tolist(),
            concepts=source.concepts,
            split=source.split,
            label_revision=source.label_revision,
            generation=source.generation,  # what the search index compares (domain.generations)
        )
        return self.producer.send(topics.EMBEDDINGS_COMPUTED, topics.event_key(source.app_id, source.input_id), out)

    def flush(self) -> None:
        self.producer.flush(timeout=30)
