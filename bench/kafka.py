"""Sustained event throughput on the stack's broker: N ``EmbeddingComputed`` events (1,280 floats,
~5 KB each) produced to a fresh topic with ``EventProducer`` and consumed with ``BatchConsumer``
(parse, handler, synchronous commit per batch), against a raw kafka-python ``KafkaProducer`` /
``KafkaConsumer`` pair moving the same serialized bytes over the same broker.

Both producers use the same durability settings as ``EventProducer`` (acks=all, linger 5 ms), so
the ratio is the cost of the bus wrapper (headers, protobuf parse, per-batch commits), not of a
weaker guarantee. The consumer is joined to its group before the first event is produced.

Lag is counted in-process (produced minus consumed, sampled every 50 ms) — never from the
broker's end offsets, which tansu reports wrongly (see docs / DESIGN notes).
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from bench.common import Row
from firstlight.messaging.bus import BatchConsumer, EventProducer, new_header
from firstlight.messaging.topics import INPUT_PARTITIONS, ensure_topics
from firstlight.v1 import events_pb2

DIM = 1280


def events(n: int, seed: int = 0) -> list[events_pb2.EmbeddingComputed]:
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal((min(n, 256), DIM)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return [
        events_pb2.EmbeddingComputed(
            header=new_header("bench", f"kafka-bench:{i}"), app_id="kbench", input_id=str(i), model="bench", vector=vec[i % len(vec)].tolist()
        )
        for i in range(n)
    ]


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.target = 0

    def add(self, k: int) -> None:
        with self.lock:
            self.n += k
            if self.n >= self.target:
                self.done.set()


def _lag_sampler(acked: Counter, consumed: Counter, stop: threading.Event, out: list[int]) -> threading.Thread:
    def sample() -> None:
        while not stop.wait(0.05):
            out.append(acked.n - consumed.n)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    return t


def _measure(produce_one, flush, consumed: Counter, msgs: list, timeout_s: float) -> dict:  # type: ignore[no-untyped-def]
    """``produce_one`` returns a kafka-python future: lag = acknowledged by the broker minus
    handed to the consumer's handler, both counted here."""
    acked = Counter()
    acked.target = len(msgs)
    lags: list[int] = []
    stop = threading.Event()
    sampler = _lag_sampler(acked, consumed, stop, lags)
    start = time.perf_counter()
    for i, m in enumerate(msgs):
        produce_one(i, m).add_callback(lambda _: acked.add(1))
    flush()
    produce_s = time.perf_counter() - start
    finished = consumed.done.wait(timeout_s)
    total_s = time.perf_counter() - start
    stop.set()
    sampler.join()
    n = len(msgs)
    return {
        "events": n,
        "acked": acked.n,
        "consumed": consumed.n,
        "complete": finished,
        "produce_s": produce_s,
        "produce_events_per_s": n / produce_s,
        "end_to_end_s": total_s,
        "end_to_end_events_per_s": consumed.n / total_s,
        "drain_after_produce_s": total_s - produce_s,
        "max_lag_events": max(lags) if lags else 0,
        "mean_lag_events": float(np.mean(lags)) if lags else 0.0,
    }


def _wait_assigned(check, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("consumer never got its partitions")
        time.sleep(0.05)


def run_bus(bootstrap: str, msgs: list, timeout_s: float) -> dict:
    topic = f"bench.kafka.bus.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], default_partitions=INPUT_PARTITIONS)
    consumed = Counter()
    consumed.target = len(msgs)

    def handler(records):  # type: ignore[no-untyped-def]
        consumed.add(len(records))
        return None

    consumer = BatchConsumer(
        bootstrap, f"bench-bus-{uuid.uuid4().hex[:6]}", topic, events_pb2.EmbeddingComputed, handler,
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    consumer.start()
    producer = EventProducer(bootstrap, "bench-bus")
    try:
        _wait_assigned(lambda: len(consumer.assignment) == INPUT_PARTITIONS)
        r = _measure(lambda i, m: producer.send(topic, f"kbench/{i}".encode(), m), lambda: producer.flush(timeout=300), consumed, msgs, timeout_s)
    finally:
        producer.close()
        consumer.stop()
    r.update(commits=consumer.commits, batch=consumer.max_batch)
    return r


def run_raw(bootstrap: str, msgs: list, timeout_s: float, **producer_config) -> dict:
    topic = f"bench.kafka.raw.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], default_partitions=INPUT_PARTITIONS)
    consumed = Counter()
    consumed.target = len(msgs)
    stop = threading.Event()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )

    def loop() -> None:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=200)
            n = sum(len(v) for v in polled.values())
            if n:
                consumed.add(n)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    config = dict(acks="all", linger_ms=5, max_request_size=2 * 1024 * 1024)
    config.update(producer_config)
    producer = KafkaProducer(bootstrap_servers=bootstrap, **config)
    try:
        _wait_assigned(lambda: len(consumer.assignment()) == INPUT_PARTITIONS)
        r = _measure(
            lambda i, m: producer.send(topic, key=f"kbench/{i}".encode(), value=m.SerializeToString()),
            lambda: producer.flush(timeout=300),
            consumed,
            msgs,
            timeout_s,
        )
    finally:
        stop.set()
        thread.join()
        consumer.close()
        producer.close()
    return r


def run(bootstrap: str, quick: bool = False, log=print) -> dict:  # type: ignore[no-untyped-def]
    n = 3_000 if quick else 10_000
    msgs = events(n)
    size = len(msgs[0].SerializeToString())
    timeout_s = 300.0
    raw = run_raw(bootstrap, msgs, timeout_s)
    log(f"  raw kafka-python: produce {raw['produce_events_per_s']:,.0f} ev/s, end-to-end {raw['end_to_end_events_per_s']:,.0f} ev/s")
    bus = run_bus(bootstrap, msgs, timeout_s)
    log(f"  EventProducer/BatchConsumer: produce {bus['produce_events_per_s']:,.0f} ev/s, end-to-end {bus['end_to_end_events_per_s']:,.0f} ev/s")
    rows = [
        Row(
            f"Kafka produce, {n:,} × {size / 1024:.1f} KB events",
            f"EventProducer {bus['produce_events_per_s']:,.0f} ev/s ({bus['produce_events_per_s'] * size / 1e6:.1f} MB/s)",
            f"raw KafkaProducer {raw['produce_events_per_s']:,.0f} ev/s",
            f"{bus['produce_events_per_s'] / raw['produce_events_per_s']:.2f}×",
        ),
        Row(
            "Kafka produce → consume (sustained)",
            f"bus {bus['end_to_end_events_per_s']:,.0f} ev/s, max lag {bus['max_lag_events']:,} ev, drain {bus['drain_after_produce_s']:.1f}s",
            f"raw {raw['end_to_end_events_per_s']:,.0f} ev/s, max lag {raw['max_lag_events']:,} ev",
            f"{bus['end_to_end_events_per_s'] / raw['end_to_end_events_per_s']:.2f}×",
        ),
    ]
    return {"event_bytes": size, "bus": bus, "raw": raw, "rows": [r.as_dict() for r in rows]}
