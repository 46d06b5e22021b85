"""Consumer groups follow FIRSTLIGHT_TOPIC_PREFIX: stacks sharing a broker under different
prefixes must not join each other's groups (a member of another stack's group is assigned
partitions of topics it never reads, and they stop being consumed)."""

from firstlight.messaging import bus
from firstlight.v1 import events_pb2


def _consumer(group: str) -> bus.BatchConsumer:
    return bus.BatchConsumer("127.0.0.1:1", group, "t", events_pb2.InputIngested, lambda records: [], ensure=False, keys=None)


def test_group_ids_take_the_topic_prefix(monkeypatch):
    assert _consumer("ingestion").group_id == "ingestion"  # no prefix: unchanged
    monkeypatch.setattr(bus, "PREFIX", "tls.")
    assert _consumer("ingestion").group_id == "tls.ingestion"
    assert _consumer("tls.ingestion").group_id == "tls.ingestion"  # not prefixed twice
