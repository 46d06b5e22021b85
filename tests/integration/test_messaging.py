"""The Kafka layer against a real tansu broker process (no mocks)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from firstlight.messaging import (
    TOPICS,
    BatchConsumer,
    BrokerError,
    EventProducer,
    LocalBroker,
    ParsedRecord,
    PoisonMessage,
    RetryableError,
    dlq,
    ensure_topics,
    event_key,
    new_header,
)
from firstlight.messaging.bus import H_CONTENT_TYPE, H_IDEMPOTENCY_KEY, H_MESSAGE_TYPE
from firstlight.v1 import events_pb2

pytestmark = pytest.mark.integration

# Group joins on tansu take about session_timeout/2; keep them short so the module is fast.
FAST_GROUP = dict(session_timeout_ms=3000, heartbeat_interval_ms=500, poll_timeout_ms=200)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    log_file = tmp_path_factory.mktemp("tansu") / "broker.log"
    with LocalBroker(log_file=log_file, stop_timeout_s=2) as b:
        yield b


@pytest.fixture(scope="module")
def producer(broker: LocalBroker) -> Iterator[EventProducer]:
    with EventProducer(broker.bootstrap, "test-producer") as p:
        yield p


def new_topic(broker: LocalBroker, partitions: int = 1) -> str:
    name = f"test.{uuid.uuid4().hex[:10]}"
    # Unknown names get `default_partitions`; DLQs get 1 like the real ones.
    assert ensure_topics(broker.bootstrap, [name], default_partitions=partitions) == [name]
    assert ensure_topics(broker.bootstrap, [dlq(name)]) == [dlq(name)]
    return name


def wait_until(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ingested(app_id: str, input_id: str, **kw: Any) -> events_pb2.InputIngested:
    return events_pb2.InputIngested(header=new_header("test"), app_id=app_id, input_id=input_id, blob_uri=f"blob://{input_id}", **kw)


def read_dlq(broker: LocalBroker, topic: str, n: int, timeout: float = 15.0) -> list[events_pb2.DeadLetter]:
    """Read the first n dead letters with a group-less consumer (no join wait)."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    tp = TopicPartition(dlq(topic), 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)  # not seek_to_beginning/end: tansu's ListOffsets is unreliable
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=200).values():
                out.extend(recs)
    finally:
        consumer.close(autocommit=False)
    assert len(out) >= n, f"only {len(out)} dead letters in {dlq(topic)}"
    for r in out:
        assert dict(r.headers)[H_MESSAGE_TYPE] == b"firstlight.v1.DeadLetter"
    return [events_pb2.DeadLetter.FromString(r.value) for r in out]


def committed(broker: LocalBroker, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items() if om.offset >= 0}


def consumer_for(
    broker: LocalBroker,
    topic: str,
    handler: Callable[[list[ParsedRecord[Any]]], Any],
    producer: EventProducer,
    group: str | None = None,
    **kw: Any,
) -> BatchConsumer[events_pb2.InputIngested]:
    return BatchConsumer(
        broker.bootstrap,
        group or f"g-{uuid.uuid4().hex[:8]}",
        topic,
        events_pb2.InputIngested,
        handler,
        producer=producer,
        **{**FAST_GROUP, **kw},
    )


# -- round trip ---------------------------------------------------------------------------


def test_keyed_round_trip_with_headers(broker: LocalBroker, producer: EventProducer) -> None:
    topic = new_topic(broker, partitions=6)
    events = [ingested("app1", f"in{i}", concepts=["cat"], label_revision=i) for i in range(6)]
    metas = [producer.send_and_wait(topic, event_key("app1", e.input_id), e, {"trace-id": f"t{i}"}) for i, e in enumerate(events)]
    # Same key -> same partition, in order.
    again = producer.send_and_wait(topic, event_key("app1", "in0"), ingested("app1", "in0", label_revision=99))
    assert again.partition == metas[0].partition and again.offset > metas[0].offset
    assert producer.idempotent  # tansu supports InitProducerId

    seen: list[ParsedRecord[events_pb2.InputIngested]] = []
    c = consumer_for(broker, topic, seen.extend, producer, group="roundtrip").start()
    try:
        wait_until(lambda: len(seen) == 7, what="7 records")
        wait_until(lambda: c.commits >= 1, what="a commit")
    finally:
        c.stop()
    assert c.processed == 7 and c.dead_lettered == 0 and c.retries == 0 and c.last_error is None

    by_input = {}
    for r in seen:
        by_input.setdefault(r.message.input_id, []).append(r)
    for i, (e, m) in enumerate(zip(events, metas)):
        r = by_input[e.input_id][0]
        assert r.message == e
        assert r.key == b"app1/" + e.input_id.encode()
        assert (r.topic, r.partition, r.offset) == (topic, m.partition, m.offset)
        assert r.headers[H_CONTENT_TYPE] == "application/x-protobuf"
        assert r.headers[H_MESSAGE_TYPE] == "firstlight.v1.InputIngested"
        assert r.headers[H_IDEMPOTENCY_KEY] == e.header.idempotency_key
        assert r.headers["trace-id"] == f"t{i}"
    assert [r.message.label_revision for r in by_input["in0"]] == [0, 99]
    # Committed = last offset + 1 on every partition that had data.
    expected: dict[int, int] = {}
    for m in [*metas, again]:
        expected[m.partition] = max(expected.get(m.partition, 0), m.offset + 1)
    assert committed(broker, "roundtrip") == expected


# -- dead letters -------------------------------------------------------------------------


def test_malformed_record_goes_to_dlq_and_processing_continues(broker: LocalBroker, producer: EventProducer) -> None:
    topic = new_topic(broker)
    raw = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        producer.send_and_wait(topic, b"app/ok1", ingested("app", "ok1"))
        raw.send(topic, key=b"app/bad", value=b"\xff\xff\xff\xffgarbage").get(10)
        # Parses fine as bytes, but is the wrong event type for this topic.
        producer.send_and_wait(topic, b"app/wrong", events_pb2.InputIndexed(app_id="app", input_id="x"))
        producer.send_and_wait(topic, b"app/ok2", ingested("app", "ok2"))
    finally:
        raw.close()

    seen: list[str] = []
    c = consumer_for(broker, topic, lambda rs: seen.extend(r.message.input_id for r in rs), producer).start()
    try:
        wait_until(lambda: c.processed == 2 and c.dead_lettered == 2 and c.commits >= 1, what="batch done")
    finally:
        c.stop()
    assert seen == ["ok1", "ok2"]
    assert c.retries == 0

    letters = sorted(read_dlq(broker, topic, 2), key=lambda d: d.source_offset)
    bad, wrong = letters
    assert (bad.source_topic, bad.source_partition, bad.source_offset) == (topic, 0, 1)
    assert bad.key == b"app/bad" and bad.value == b"\xff\xff\xff\xffgarbage"
    assert "cannot parse as firstlight.v1.InputIngested" in bad.error
    assert bad.consumer_group == c.group_id and bad.failed_at.seconds > 0
    assert wrong.source_offset == 2 and "firstlight.v1.InputIndexed" in wrong.error
    assert committed(broker, c.group_id) == {0: 4}


def test_handler_poison_message_goes_to_dlq(broker: LocalBroker, producer: EventProducer) -> None:
    topic = new_topic(broker)
    for i, app in enumerate(["app", "", "app"]):  # the second one has no app_id
        producer.send(topic, b"k%d" % i, ingested(app, f"in{i}"))
    producer.flush(10)

    def handler(records: list[ParsedRecord[events_pb2.InputIngested]]) -> list[PoisonMessage | None]:
        return [None if r.message.app_id else PoisonMessage("missing app_id") for r in records]

    c = consumer_for(broker, topic, handler, producer).start()
    try:
        wait_until(lambda: c.processed + c.dead_lettered == 3 and c.commits >= 1, what="3 outcomes")
    finally:
        c.stop()
    assert (c.processed, c.dead_lettered, c.retries) == (2, 1, 0)
    (letter,) = read_dlq(broker, topic, 1)
    assert letter.source_offset == 1 and letter.key == b"k1"
    assert letter.error == "rejected: missing app_id"
    assert events_pb2.InputIngested.FromString(letter.value).input_id == "in1"
    assert committed(broker, c.group_id) == {0: 3}  # poison is not retried


# -- retries ------------------------------------------------------------------------------


def _flaky(failures: list[Exception]) -> tuple[Callable[..., None], list[tuple[float, list[int]]], Counter[int]]:
    """A handler that raises the given exceptions on its first calls, then succeeds."""
    calls: list[tuple[float, list[int]]] = []
    succeeded: Counter[int] = Counter()

    def handler(records: list[ParsedRecord[Any]]) -> None:
        calls.append((time.monotonic(), [r.offset for r in records]))
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        succeeded.update(r.offset for r in records)

    return handler, calls, succeeded


def test_retryable_error_retries_batch_until_success(broker: LocalBroker, producer: EventProducer) -> None:
    topic = new_topic(broker)
    for i in range(5):
        producer.send(topic, b"app/%d" % i, ingested("app", f"in{i}"))
    producer.flush(10)

    handler, calls, succeeded = _flaky([RetryableError("triton down"), RetryableError("still down")])
    c = consumer_for(broker, topic, handler, producer).start()
    try:
        wait_until(lambda: sum(succeeded.values()) >= 5 and c.commits >= 1, what="success")
        assert c.healthy  # two failures in a row stay under unhealthy_after=3
    finally:
        c.stop()

    assert set(succeeded) == set(range(5)) and max(succeeded.values()) == 1  # nothing lost or doubled
    # The failed batch was redelivered from its first offset each time.
    assert calls[0][1] == calls[1][1] == calls[2][1] == [0, 1, 2, 3, 4]
    assert c.retries == 2 and c.commits == 1 and c.processed == 5
    assert c.last_error == "retryable: still down"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
    # Exponential backoff with equal jitter (runtime.retry.Backoff): 0.25-0.5 s, then 0.5-1 s.
    assert gaps[0] >= 0.2 and gaps[1] >= 0.45, gaps
    assert committed(broker, c.group_id) == {0: 5}


def test_unexpected_handler_exception_is_retried_not_dropped(broker: LocalBroker, producer: EventProducer) -> None:
    topic = new_topic(broker)
    producer.send_and_wait(topic, b"app/0", ingested("app", "in0"))

    handler, calls, succeeded = _flaky([ValueError("bug")])
    c = consumer_for(broker, topic, handler, producer).start()
    try:
        wait_until(lambda: succeeded[0] == 1 and c.commits == 1, what="success after bug")
    finally:
        c.stop()
    assert len(calls) == 2 and c.retries == 1 and c.dead_lettered == 0
    assert c.is_alive() is False and "ValueError('bug')" in (c.last_error or "")


# -- at-least-once across a crash -----------------------------------------------------------


def test_at_least_once_across_consumer_restart(broker: LocalBroker, producer: EventProducer) -> None:
    topic = new_topic(broker, partitions=6)
    total = 60
    for i in range(total):
        producer.send(topic, event_key("app", f"in{i}"), ingested("app", f"in{i}"))
    producer.flush(10)
    group = f"alo-{uuid.uuid4().hex[:6]}"

    handled: Counter[tuple[int, int]] = Counter()  # side effects, as a real service would do
    in_flight: set[tuple[int, int]] = set()
    crashed = threading.Event()

    def crashing(records: list[ParsedRecord[Any]]) -> None:
        ids = [(r.partition, r.offset) for r in records]
        if sum(handled.values()) >= 20:
            # Half-done batch, then the process "dies": side effects happened, no commit.
            handled.update(ids[: len(ids) // 2 + 1])
            in_flight.update(ids)
            crashed.set()
            raise RetryableError("simulated crash")
        handled.update(ids)

    a = consumer_for(broker, topic, crashing, producer, group=group, max_batch=10).start()
    try:
        wait_until(crashed.is_set, what="first consumer to crash")
    finally:
        a.stop()
    assert not a.is_alive() and a.commits >= 2 and not a.healthy
    committed_a = committed(broker, group)
    assert sum(committed_a.values()) == a.processed < total

    def ok(records: list[ParsedRecord[Any]]) -> None:
        handled.update((r.partition, r.offset) for r in records)

    b = consumer_for(broker, topic, ok, producer, group=group, max_batch=10).start()
    try:
        wait_until(lambda: len(handled) == total, what="every record handled")
        wait_until(lambda: sum(committed(broker, group).values()) == total, what="all committed")
    finally:
        b.stop()

    duplicates = {k: n - 1 for k, n in handled.items() if n > 1}
    print(f"at-least-once: {total} records, {sum(duplicates.values())} duplicate deliveries")
    assert len(handled) == total  # none lost
    assert duplicates and set(duplicates) <= in_flight  # only the uncommitted batch came back
    assert a.processed + b.processed == total


def test_rebalance_when_a_second_consumer_joins_loses_nothing(broker: LocalBroker, producer: EventProducer) -> None:
    topic = new_topic(broker, partitions=6)
    total = 240
    group = f"rb-{uuid.uuid4().hex[:6]}"
    handled: Counter[tuple[int, int]] = Counter()
    lock = threading.Lock()
    joined = threading.Event()

    def slow(records: list[ParsedRecord[Any]]) -> None:
        if not joined.is_set():
            time.sleep(0.1)  # leave work for the second consumer (>= 6 s alone) until it joins
        with lock:
            handled.update((r.partition, r.offset) for r in records)

    for i in range(total):
        producer.send(topic, event_key("app", f"in{i}"), ingested("app", f"in{i}"))
    producer.flush(10)
    a = consumer_for(broker, topic, slow, producer, group=group, max_batch=4).start()
    b = None
    try:
        wait_until(lambda: len(handled) >= 8, what="first consumer to start")
        b = consumer_for(broker, topic, slow, producer, group=group, max_batch=4).start()
        wait_until(lambda: bool(b and b.assignment), what="second consumer to get partitions")
        joined.set()
        wait_until(lambda: len(a.assignment) + len(b.assignment) == 6, what="partitions split")
        wait_until(lambda: len(handled) == total, timeout=30, what="every record handled")
        wait_until(lambda: sum(committed(broker, group).values()) == total, what="all committed")
    finally:
        a.stop()
        if b is not None:
            b.stop()
    assert b.processed > 0, "second consumer never got partitions"
    assert a.processed + b.processed == sum(handled.values()) >= total


# -- topics -------------------------------------------------------------------------------


def test_ensure_topics_is_idempotent(broker: LocalBroker) -> None:
    first = ensure_topics(broker.bootstrap)
    assert set(first) <= set(TOPICS)
    assert ensure_topics(broker.bootstrap) == []

    # Concurrent creators race on the same new names: both succeed, one creates.
    names = [f"race.{uuid.uuid4().hex[:8]}" for _ in range(3)]
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_topics(broker.bootstrap, names, default_partitions=2))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and sorted(results[0] + results[1]) == sorted(names)

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        parts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([*TOPICS, *names])}
    finally:
        admin.close()
    assert parts == {**{n: s.partitions for n, s in TOPICS.items()}, **dict.fromkeys(names, 2)}
    assert parts["inputs.ingested"] == 6 and parts["inputs.ingested.dlq"] == 1


def test_event_key() -> None:
    assert event_key("a1", "i1") == b"a1/i1"
    assert event_key("a1") == b"a1"
    with pytest.raises(ValueError):
        event_key("")


# -- broker process -------------------------------------------------------------------------


def test_broker_restart_keeps_port_memory_storage_loses_data(tmp_path: Path) -> None:
    with LocalBroker(log_file=tmp_path / "b.log", stop_timeout_s=2) as b:
        port, pid = b.port, b.pid
        ensure_topics(b.bootstrap, ["keep.me"])
        with EventProducer(b.bootstrap, "restart") as p:
            p.send_and_wait("keep.me", b"k", ingested("app", "in0"))
        # (close clients first: tansu's SIGTERM waits for open connections)

        b.restart()
        assert b.port == port and b.bootstrap == f"127.0.0.1:{port}" and b.pid != pid and b.is_running()
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            assert "keep.me" not in admin.list_topics()  # memory:// is volatile
        finally:
            admin.close()
        assert ensure_topics(b.bootstrap, ["keep.me"]) == ["keep.me"]  # usable again
    assert not b.is_running()


def test_consumer_survives_broker_restart(tmp_path: Path) -> None:
    """The consumer thread reconnects and rejoins by itself. With memory:// the group, its
    offsets and the topics are gone: the consumer notices its committed offsets went back and
    starts over from the new broker's earliest offsets instead of waiting past the log end."""
    with LocalBroker(log_file=tmp_path / "b.log", stop_timeout_s=1) as b:
        topic = f"test.{uuid.uuid4().hex[:10]}"
        seen: list[str] = []
        c = BatchConsumer(
            b.bootstrap, "survivor", topic, events_pb2.InputIngested,
            lambda rs: seen.extend(r.message.input_id for r in rs), state_check_interval_s=0.5, **FAST_GROUP,
        )  # fmt: skip
        c.start()
        try:
            with EventProducer(b.bootstrap, "before") as p:
                for i in range(12):
                    p.send(topic, event_key("app", f"before{i}"), ingested("app", f"before{i}"))
            wait_until(lambda: len(seen) == 12, what="records before restart")

            b.restart()  # the consumer is still connected: SIGTERM then SIGKILL after 1 s
            ensure_topics(b.bootstrap, [topic], default_partitions=6)
            with EventProducer(b.bootstrap, "after") as p:
                for i in range(12):
                    p.send(topic, event_key("app", f"after{i}"), ingested("app", f"after{i}"))
            after = {f"after{i}" for i in range(12)}
            wait_until(lambda: after <= set(seen), what="records produced after the restart")
            assert c.is_alive()
            wait_until(lambda: c.healthy, what="consumer healthy again")
        finally:
            c.stop()


def test_broker_unsupported_storage_fails_with_log_tail(tmp_path: Path) -> None:
    # This tansu build only has the dynostore engine: memory:// and s3://.
    b = LocalBroker(storage=f"file://{tmp_path}/data/", log_file=tmp_path / "b.log")
    with pytest.raises(BrokerError, match="UnsupportedStorageUrl"):
        b.start()
    assert not b.is_running()


def test_broker_module_main_runs_in_foreground_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firstlight.messaging.broker", "--port", "0", "--log-file", str(tmp_path / "b.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = ""
        deadline = time.monotonic() + 30
        while "broker ready" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "broker main exited early"
        assert "broker ready: 127.0.0.1:" in line
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
