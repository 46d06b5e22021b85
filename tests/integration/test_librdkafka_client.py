"""A librdkafka-based client (confluent-kafka, librdkafka 2.16) on the local stack's broker
(issue 14, item 8): it submits an image on ``inputs.submit`` with an app key and reads the
input's ``inputs.indexed``. Debian's kcat (librdkafka 2.0.2) cannot parse the broker's
ApiVersions v3 response (docs/events.md names the minimum version)."""

from __future__ import annotations

import time
import uuid

import pytest

from firstlight import datasets
from firstlight.messaging import topics
from firstlight.sdk import Firstlight
from firstlight.v1 import common_pb2, events_pb2

pytestmark = pytest.mark.integration


def test_librdkafka_produces_submissions_and_consumes_indexed(stack, client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    confluent_kafka = pytest.importorskip("confluent_kafka", reason="missing tool: confluent-kafka (make setup)")
    app = "rdkafka"
    client.create_app(app, exist_ok=True)
    _, key = client.create_api_key(app, "librdkafka")
    input_id = f"rd-{uuid.uuid4().hex[:8]}"
    bootstrap = stack.addresses["kafka"]

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False})
    event = events_pb2.InputSubmitted(app_id=app, input=common_pb2.InputSpec(id=input_id, image_bytes=datasets.sample_photo("coffee")))
    delivered: list[object] = []
    producer.produce(
        topics.INPUTS_SUBMIT,
        key=topics.event_key(app, input_id),
        value=event.SerializeToString(),
        headers=[("authorization", f"Bearer {key}".encode()), ("message-type", b"firstlight.v1.InputSubmitted")],
        on_delivery=lambda err, msg: delivered.append(err or msg),
    )
    assert producer.flush(30) == 0
    assert len(delivered) == 1 and not isinstance(delivered[0], confluent_kafka.KafkaError), delivered

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"rdkafka-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",  # the broker's "latest" offsets are wrong (DESIGN.md)
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    try:
        consumer.subscribe([topics.INPUTS_INDEXED])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            indexed = events_pb2.InputIndexed.FromString(msg.value())
            if (indexed.app_id, indexed.input_id) == (app, input_id):
                assert msg.key() == topics.event_key(app, input_id)
                break
        else:
            pytest.fail(f"no inputs.indexed for {app}/{input_id} within 120 s")
    finally:
        consumer.close()
    assert client.get_input(app, input_id).id == input_id
