"""An outside Kafka producer/consumer, as an integration would use (plain kafka-python)."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, KafkaProducer


def produce(bootstrap: str, topic: str, key: bytes, value: bytes, headers: dict[str, str] | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        hdrs = [(k, v.encode()) for k, v in (headers or {}).items()]
        producer.send(topic, key=key, value=value, headers=hdrs).get(timeout=30)
    finally:
        producer.close()


def _reader(bootstrap: str, topic: str) -> KafkaConsumer:
    """A consumer in a fresh group reading ``topic`` from the beginning (never commits)."""
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )


def find_record(bootstrap: str, topic: str, match, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """First record of ``topic`` (read from the beginning) for which ``match(record)`` is true."""
    consumer = _reader(bootstrap, topic)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if match(record):
                        return record
        raise AssertionError(f"no matching record on {topic} within {timeout:.0f}s")
    finally:
        consumer.close()


def api_key_header(key: str) -> dict[str, str]:
    """Record headers that authenticate an ``inputs.submit`` event (docs/security.md)."""
    return {"authorization": f"Bearer {key}"}


def find_records_by_key(bootstrap: str, topic: str, keys: set[bytes], timeout: float = 90.0) -> dict[bytes, object]:
    """The first record of ``topic`` for each of ``keys``, with one consumer (one group join)."""
    consumer = _reader(bootstrap, topic)
    found: dict[bytes, object] = {}
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < len(keys):
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.key in keys and record.key not in found:
                        found[record.key] = record
        return found
    finally:
        consumer.close()


def produce_many(bootstrap: str, records: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]]) -> None:
    """Produce (topic, key, value, headers) records; a None value is a tombstone."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=8 * 1024 * 1024)
    try:
        futures = [producer.send(t, key=k, value=v, headers=h) for t, k, v, h in records]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close()
