"""An outside Kafka producer/consumer, as an integration would use (plain kafka-python)."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, KafkaProducer


def signed(
    event_keys: str, topic: str, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]] | None = None, now_ms: int | None = None
) -> list[tuple[str, bytes]]:
    """``headers`` plus the signature a service would add with the stack's event keys
    (``stack.event_keys``): what a trusted producer (or an insider holding the key) sends."""
    from firstlight.messaging import signing

    declared = dict(headers or []).get("message-type", b"").decode()
    header = signing.sign(signing.EventKeys.parse(event_keys), topic, key, declared, value or b"", now_ms=now_ms)
    return [*(headers or []), (signing.H_SIGNATURE, header.encode())]


def produce(bootstrap: str, topic: str, key: bytes, value: bytes, headers: dict[str, str] | None = None, sign_with: str = "") -> None:
    """Produce one record; ``sign_with``: the stack's event keys, to sign it as a service would."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        hdrs = [(k, v.encode()) for k, v in (headers or {}).items()]
        if sign_with:
            hdrs = signed(sign_with, topic, key, value, hdrs)
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
