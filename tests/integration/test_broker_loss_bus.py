"""The event bus across a broker that loses its state (tansu with memory storage, SIGKILLed and
started again on the same port): a producer whose broker forgot its producer id is replaced
instead of failing forever, and a consumer that stays subscribed reads the new log from its
start instead of from its old positions. Broker only (a few seconds)."""

from __future__ import annotations

import time

import pytest

from firstlight.messaging import topics
from firstlight.messaging.broker import LocalBroker
from firstlight.messaging.bus import BatchConsumer, EventProducer
from firstlight.v1 import events_pb2

pytestmark = [pytest.mark.integration]


def test_producer_and_consumer_survive_a_broker_that_lost_everything() -> None:
    broker = LocalBroker().start()
    producer = EventProducer(broker.bootstrap, "test-source")
    relay = EventProducer(broker.bootstrap, "test-relay")
    lost: list[str] = []
    rebuilt: list[str] = []
    relay.on_rebuild = rebuilt.append
    final: list[str] = []

    def forward(records):  # type: ignore[no-untyped-def]
        futures = [relay.send(topics.EMBEDDINGS_COMPUTED, r.key, events_pb2.EmbeddingComputed(app_id="a", input_id=r.message.input_id)) for r in records]
        relay.flush(30)
        for f in futures:
            f.get(30)

    first = BatchConsumer(broker.bootstrap, "t-first", topics.INPUTS_INGESTED, events_pb2.InputIngested, forward,
                          session_timeout_ms=6000, heartbeat_interval_ms=1000, on_broker_lost=lambda: lost.append("first"))  # fmt: skip
    last = BatchConsumer(broker.bootstrap, "t-last", topics.EMBEDDINGS_COMPUTED, events_pb2.EmbeddingComputed,
                         lambda rs: final.extend(r.message.input_id for r in rs), session_timeout_ms=6000, heartbeat_interval_ms=1000)  # fmt: skip

    def send(tag: str, n: int) -> None:
        for i in range(n):
            for _ in range(40):  # the caller's retry, as the outbox relay does
                try:
                    producer.send_and_wait(topics.INPUTS_INGESTED, f"a/{tag}{i}".encode(),
                                           events_pb2.InputIngested(app_id="a", input_id=f"{tag}{i}"), timeout=10)  # fmt: skip
                    break
                except Exception:  # noqa: BLE001 - UnknownProducerId, then the fatal error, then a new producer
                    time.sleep(0.25)
            else:
                raise AssertionError(f"{tag}{i} never published")

    def arrived(tag: str, n: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len({x for x in final if x.startswith(tag)}) < n:
            time.sleep(0.2)
        return len({x for x in final if x.startswith(tag)})

    try:
        topics.ensure_topics(broker.bootstrap)
        first.start()
        last.start()
        send("x", 24)
        assert arrived("x", 24) == 24
        broker.kill()
        broker.start()  # empty: no topics, records or committed offsets
        send("y", 24)
        assert arrived("y", 24) == 24
        assert producer.rebuilds == 1 and relay.rebuilds == 1 and rebuilt and "InitProducerId" in rebuilt[0]
        assert first.healthy and last.healthy
        assert lost  # the ingestion outbox hangs its re-announcement on this
    finally:
        first.stop()
        last.stop()
        producer.close(1)
        relay.close(1)
        broker.stop()
