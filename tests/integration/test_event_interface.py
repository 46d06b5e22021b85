"""The Kafka topics are a public interface: an outside producer feeds images in through
`inputs.submit`, an outside consumer reads `embeddings.computed` and `inputs.indexed`."""

from __future__ import annotations

import pytest

from firstlight import datasets
from firstlight.messaging import topics
from firstlight.sdk import Firstlight
from firstlight.v1 import common_pb2, events_pb2

from .helpers import eventually
from .kafka_io import api_key_header, find_record, produce

pytestmark = pytest.mark.integration

APP = "integration"


def test_outside_producer_in_outside_consumer_out(stack, client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    client.create_app(APP)
    bootstrap = stack.addresses["kafka"]
    event = events_pb2.InputSubmitted(app_id=APP, input=common_pb2.InputSpec(image_bytes=datasets.sample_photo("astronaut"), concepts=["astronaut"]))
    event.header.idempotency_key = "camera-7/frame-000123"
    for _ in range(2):  # a retried submission must not create a second input
        produce(
            bootstrap,
            topics.INPUTS_SUBMIT,
            f"{APP}/camera-7-frame-000123".encode(),
            event.SerializeToString(),
            api_key_header(stack.admin_key),
        )

    indexed = find_record(bootstrap, topics.INPUTS_INDEXED, lambda r: events_pb2.InputIndexed.FromString(r.value).app_id == APP, timeout=120)
    input_id = events_pb2.InputIndexed.FromString(indexed.value).input_id
    embedding = find_record(bootstrap, topics.EMBEDDINGS_COMPUTED, lambda r: r.key == f"{APP}/{input_id}".encode())
    computed = events_pb2.EmbeddingComputed.FromString(embedding.value)
    assert len(computed.vector) == 1280 and list(computed.concepts) == ["astronaut"]
    assert dict(embedding.headers)["message-type"] == b"firstlight.v1.EmbeddingComputed"

    hits = client.search_by_image(APP, image=datasets.sample_photo("astronaut"), top_k=1).hits
    assert hits[0].input_id == input_id
    eventually(lambda: client.indexed_count(APP) == 1, timeout=30, what="one input")
    assert [i.id for i in client.list_inputs(APP)] == [input_id]
