"""The search service's events on the wire: the one place that builds their protobufs and
picks their topics and keys (the indexer consumes the other services' events; it announces
through this)."""

from __future__ import annotations

from collections.abc import Sequence

from firstlight.messaging import topics
from firstlight.messaging.bus import EventProducer, new_header
from firstlight.v1 import events_pb2


class SearchEvents:
    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def indexed(self, embedded: Sequence[events_pb2.EmbeddingComputed]) -> None:
        """``inputs.indexed`` for each indexed embedding (ingestion stops watching the input),
        waiting for the broker's acknowledgement of every one."""
        futures = [
            self.producer.send(
                topics.INPUTS_INDEXED,
                topics.event_key(ev.app_id, ev.input_id),
                events_pb2.InputIndexed(
                    # Derived from the source event's key: a redelivery republishes the same event.
                    header=new_header("search", f"{ev.header.idempotency_key}:indexed"),
                    app_id=ev.app_id,
                    input_id=ev.input_id,
                    model=ev.model,
                ),
            )
            for ev in embedded
        ]
        self.producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
