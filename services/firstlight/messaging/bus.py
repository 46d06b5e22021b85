"""The event bus every service uses: a protobuf producer and an at-least-once batch consumer.

Delivery contract (see docs/events.md):
* Producers wait for acks="all" and retry; the producer is idempotent when the broker
  supports it, so retries do not duplicate records within a producer session.
* Consumers commit offsets only after the handler returned and dead letters were flushed.
  A crash or rebalance mid-batch therefore redelivers the batch (duplicates are possible,
  loss is not); handlers must be idempotent, keyed on EventHeader.idempotency_key.
* A record that cannot be parsed, or that the handler rejects with PoisonMessage, goes to
  "<topic>.dlq" as a DeadLetter and is never retried. A RetryableError (or any unexpected
  exception) retries the whole batch with exponential backoff, forever: nothing is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.producer.future import FutureRecordMetadata, RecordMetadata
from kafka.structs import OffsetAndMetadata

from firstlight.messaging import signing
from firstlight.messaging.connection import client_options
from firstlight.messaging.topics import INPUTS_SUBMIT, PREFIX, TOPICS, dlq, ensure_topics
from firstlight.runtime.retry import Backoff
from firstlight.v1 import events_pb2

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

CONTENT_TYPE = "application/x-protobuf"
H_CONTENT_TYPE = "content-type"
H_MESSAGE_TYPE = "message-type"
H_IDEMPOTENCY_KEY = "idempotency-key"

MAX_REQUEST_SIZE = 2 * 1024 * 1024  # events carry blob references; 2 MiB leaves headroom
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 10.0


class RetryableError(Exception):
    """A dependency is down (Triton, the vector store...): retry the whole batch later."""


class PoisonMessage(Exception):
    """Returned (not raised) by a handler for a record that can never succeed: it is
    dead-lettered with this message as the reason and not retried."""


def new_header(producer_name: str, idempotency_key: str | None = None) -> events_pb2.EventHeader:
    """An EventHeader stamped now; a fresh uuid4 key unless the caller has a stable one."""
    header = events_pb2.EventHeader(
        idempotency_key=idempotency_key or str(uuid.uuid4()),
        producer=producer_name,
    )
    header.event_time.GetCurrentTime()
    return header


def message_type_name(message: Message | type[Message]) -> str:
    return message.DESCRIPTOR.full_name  # e.g. "firstlight.v1.InputIngested"


def _idempotency_key_of(message: Message) -> str | None:
    # Every event has `EventHeader header = 1`; DeadLetter and foreign messages may not.
    if "header" in message.DESCRIPTOR.fields_by_name and message.HasField("header"):
        key = message.header.idempotency_key  # type: ignore[attr-defined]
        return str(key) if key else None
    return None


class EventProducer:
    """Publishes protobuf events with the standard headers. Thread-safe (KafkaProducer is)."""

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        *,
        idempotence: bool | None = None,
        linger_ms: int = 5,
        retries: int = 10,
        max_request_size: int = MAX_REQUEST_SIZE,
        compression_type: str | None = None,
        request_timeout_ms: int = 30_000,
        keys: signing.EventKeys | bool | None = True,
    ) -> None:
        # Every record is signed with the services' event key (FIRSTLIGHT_EVENT_KEYS, read from
        # the environment when ``keys`` is True; docs/security.md). None/False: unsigned.
        self._keys = signing.EventKeys.from_env() if keys is True else (keys or None)
        config: dict[str, Any] = dict(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            retries=retries,
            linger_ms=linger_ms,  # small batching window; latency matters more than throughput
            max_request_size=max_request_size,
            compression_type=compression_type,  # only gzip works with tansu
            request_timeout_ms=request_timeout_ms,
            max_in_flight_requests_per_connection=5,  # the most that keeps idempotent ordering
            **client_options(),  # TLS, and the service's own principal (messaging.connection)
        )
        # None = let kafka-python decide: it enables idempotence when the broker's ApiVersions
        # say >= 0.11 (tansu does, and InitProducerId works) and turns it off otherwise.
        if idempotence is not None:
            config["enable_idempotence"] = idempotence
        self.client_id = client_id
        self.bootstrap = bootstrap
        self._config = config
        self._lock = threading.Lock()
        self._producer = KafkaProducer(**config)
        self.idempotent: bool = bool(self._producer.config["enable_idempotence"])
        #: Times the client was replaced after a fatal error (a broker that lost its state).
        self.rebuilds = 0
        #: Called (with the reason) after each rebuild, e.g. to re-publish what the broker may have lost.
        self.on_rebuild: Callable[[str], None] | None = None
        log.debug("producer %s ready (idempotent=%s)", client_id, self.idempotent)

    # -- recovery from fatal errors -------------------------------------------------------
    @staticmethod
    def fatal_error(producer: KafkaProducer) -> BaseException | None:
        """The error that left ``producer`` unusable, or None. An idempotent producer whose
        broker forgot its producer id (a broker restarted with memory storage, a cluster that
        lost the partition leader's state) fails InitProducerId and stays in a fatal state:
        every later send is aborted with that error, forever. kafka-python exposes the state
        on its transaction manager only."""
        manager = getattr(producer, "_transaction_manager", None)
        if manager is not None and manager.has_fatal_error():
            return manager.last_error or RuntimeError("fatal producer error")
        return None

    def _live(self) -> KafkaProducer:
        """The current client, replaced by a new one (topics ensured first) if it went fatal."""
        producer = self._producer
        if self.fatal_error(producer) is None:
            return producer
        with self._lock:
            if self._producer is producer:  # not already replaced by another thread
                reason = str(self.fatal_error(producer))
                log.warning("producer %s: fatal error (%s); replacing the Kafka producer", self.client_id, reason)
                try:
                    producer.close(timeout=0)  # its batches were aborted with the fatal error already
                except Exception:
                    log.debug("closing the failed producer", exc_info=True)
                try:
                    # The broker may have lost its topics too: create them with their partition
                    # counts and configs before a send auto-creates them with the broker's defaults.
                    ensure_topics(self.bootstrap)
                except Exception as exc:  # noqa: BLE001 - the next send reports the outage
                    log.warning("producer %s: could not ensure topics: %s", self.client_id, exc)
                self._producer = KafkaProducer(**self._config)
                self.rebuilds += 1
                callback = self.on_rebuild
                if callback is not None:
                    try:
                        callback(reason)
                    except Exception:
                        log.exception("producer %s: on_rebuild hook failed", self.client_id)
            return self._producer

    def send(
        self,
        topic: str,
        key: bytes,
        message: Message,
        headers: Mapping[str, str] | None = None,
    ) -> FutureRecordMetadata:
        hdrs: dict[str, str] = {
            H_CONTENT_TYPE: CONTENT_TYPE,
            H_MESSAGE_TYPE: message_type_name(message),
        }
        if headers:
            hdrs.update(headers)
        if H_IDEMPOTENCY_KEY not in hdrs:
            hdrs[H_IDEMPOTENCY_KEY] = _idempotency_key_of(message) or str(uuid.uuid4())
        value = message.SerializeToString()
        if self._keys is not None:
            hdrs[signing.H_SIGNATURE] = signing.sign(self._keys, topic, key, hdrs[H_MESSAGE_TYPE], value)
        return self._live().send(
            topic,
            key=key,
            value=value,
            headers=[(k, v.encode()) for k, v in hdrs.items()],
        )

    def send_and_wait(
        self,
        topic: str,
        key: bytes,
        message: Message,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> RecordMetadata:
        future = self.send(topic, key, message, headers)
        self._producer.flush(timeout=timeout)  # do not wait out linger_ms
        return future.get(timeout=timeout)

    def send_raw(self, topic: str, key: bytes, value: bytes, message_type: str = "") -> FutureRecordMetadata:
        """Publish already-serialized event bytes (the ingestion outbox stores them so)."""
        hdrs = [(H_CONTENT_TYPE, CONTENT_TYPE.encode())]
        if message_type:
            hdrs.append((H_MESSAGE_TYPE, message_type.encode()))
        if self._keys is not None:  # signed when relayed, so a key rotation applies to the backlog too
            hdrs.append((signing.H_SIGNATURE, signing.sign(self._keys, topic, key, message_type, value).encode()))
        return self._live().send(topic, key=key, value=value, headers=hdrs)

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.close(timeout=timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ParsedRecord(Generic[M]):
    key: bytes | None
    message: M
    topic: str
    partition: int
    offset: int
    headers: dict[str, str] = field(default_factory=dict)
    #: The serialized message as received, for handlers that read a large field without building
    #: Python objects for it (firstlight.messaging.wire).
    value: bytes = b""


Outcome = PoisonMessage | None
Handler = Callable[[list[ParsedRecord[M]]], Sequence[Outcome] | None]


def _decode_headers(raw: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    return {k: (v or b"").decode("utf-8", errors="replace") for k, v in (raw or [])}


class _RebalanceListener(ConsumerRebalanceListener):
    """Rebalances only run while our thread is blocked in poll() (kafka-python fires these
    callbacks on its IO thread meanwhile), i.e. between batches, and every finished batch was
    committed synchronously before that. So at revocation nothing uncommitted has been
    acknowledged: a failed/rewound batch is simply redelivered to the partition's next owner."""

    def __init__(self, owner: BatchConsumer[Any]) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("%s: partitions revoked: %s", self._owner.name, sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner.assignment = {tp.partition for tp in assigned}
        # kafka-python keeps the in-memory position of a partition that stays assigned across a
        # rebalance. After a broker lost its log (memory storage restarted) that position points
        # past the new log's records, which would be skipped silently: positions are set from
        # the group's committed offsets after every assignment (see BatchConsumer._reposition).
        self._owner._reassigned.update(assigned)
        log.info("%s: partitions assigned: %s", self._owner.name, sorted(self._owner.assignment))


class BatchConsumer(Generic[M]):
    """Consumes one topic in a consumer group on a background thread, in batches.

    `handler(records)` returns None (all ok) or one outcome per record, in order: None for ok
    or a PoisonMessage to dead-letter that record. Raising RetryableError (or anything else)
    retries the batch after a backoff; the offsets are committed only after success.
    """

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topic: str,
        message_type: type[M],
        handler: Handler[M],
        *,
        max_batch: int = 32,
        poll_timeout_ms: int = 500,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
        max_poll_interval_ms: int = 300_000,
        producer: EventProducer | None = None,
        name: str | None = None,
        ensure: bool = True,
        unhealthy_after: int = 3,
        state_check_interval_s: float = 10.0,
        keys: signing.EventKeys | bool | None = True,
        max_age_s: float | None = None,
        on_broker_lost: Callable[[], None] | None = None,
    ) -> None:
        # Internal topics take only records signed with the services' event key (True: from
        # FIRSTLIGHT_EVENT_KEYS when set); unsigned, forged or stale ones are dead-lettered with
        # the reason. ``inputs.submit`` stays open: its records carry an API key instead.
        # ``max_age_s``: the freshness window (None: FIRSTLIGHT_EVENT_MAX_AGE_S, 7 days; 0: none,
        # for consumers that replay a topic from its start).
        keys = signing.EventKeys.from_env() if keys is True else (keys or None)
        self.keys = None if topic == INPUTS_SUBMIT else keys
        self.max_age_s = signing.max_age_from_env() if max_age_s is None else max_age_s
        self.bootstrap = bootstrap
        # Stacks that share a broker under different FIRSTLIGHT_TOPIC_PREFIXes must not share
        # consumer groups either: a group's other members would be assigned its partitions of
        # topics they do not read, and those partitions would go unconsumed.
        self.group_id = group_id if group_id.startswith(PREFIX) else PREFIX + group_id
        self.topic = topic
        self.dlq_topic = dlq(topic)
        self.message_type = message_type
        self.handler = handler
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.name = name or f"{group_id}:{topic}"
        self.ensure = ensure
        self.unhealthy_after = unhealthy_after
        self.state_check_interval_s = state_check_interval_s
        self._producer = producer
        self._owns_producer = producer is None
        #: Called when the group's committed offsets went back (the broker lost its records).
        self.on_broker_lost = on_broker_lost

        # Counters (written by the consumer thread only).
        self.processed = 0  # records the handler accepted
        self.dead_lettered = 0
        self.retries = 0  # batch retry rounds
        self.commits = 0
        self.last_error: str | None = None
        self.assignment: set[int] = set()

        self._consecutive_failures = 0  # failed batches in a row
        self._poll_failures = 0  # failed polls/connects in a row
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: KafkaConsumer | None = None
        self._committed: dict[TopicPartition, int] = {}  # what we last committed
        self._reassigned: set[TopicPartition] = set()  # assigned since the last poll returned
        self._next_state_check = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> BatchConsumer[M]:
        if self._thread and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"consumer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, join: bool = True, timeout: float | None = 30.0) -> None:
        """Ask the loop to exit. A batch whose handler already returned is still committed;
        one that is failing/backing off is not (it will be redelivered)."""
        self._stop.set()
        if join and self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: consumer thread did not stop within %ss", self.name, timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        """Running and not stuck failing (used by gRPC health checks)."""
        failures = max(self._consecutive_failures, self._poll_failures)
        return self.is_alive() and not self._stop.is_set() and failures < self.unhealthy_after

    def __enter__(self) -> BatchConsumer[M]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(_BACKOFF_START_S, _BACKOFF_MAX_S)  # exponential, jittered (runtime.retry)
        try:
            while not self._stop.is_set():
                try:
                    consumer = self._consumer or self._connect()
                    records = self._poll(consumer)
                    if self._reassigned:
                        self._reposition(consumer, records)
                        continue
                    if not records and self._broker_lost_state(consumer):
                        self._drop_consumer()
                        if self.on_broker_lost is not None:
                            self.on_broker_lost()
                        continue
                except Exception as e:  # noqa: BLE001 — broker unreachable, coordinator errors...
                    self._poll_failures += 1
                    self._fail(f"poll: {e!r}", exc_info=True)
                    self._drop_consumer()  # reconnect from committed offsets
                    self._stop.wait(backoff.next())
                    continue
                if self._poll_failures:
                    self._poll_failures = 0
                    if not self._consecutive_failures:
                        backoff.reset()
                if not records:
                    continue
                if self._process(consumer, records):
                    backoff.reset()
                else:
                    self.retries += 1
                    self._rewind(consumer, records)
                    delay = backoff.next()
                    log.info("%s: retrying %d records in %.1fs", self.name, len(records), delay)
                    self._stop.wait(delay)
        finally:
            self._drop_consumer()
            if self._owns_producer and self._producer is not None:
                self._producer.close()
                self._producer = None
            log.info(
                "%s: stopped (processed=%d dead_lettered=%d retries=%d commits=%d)",
                self.name, self.processed, self.dead_lettered, self.retries, self.commits,
            )  # fmt: skip

    def _connect(self) -> KafkaConsumer:
        if self.ensure:
            ensure_topics(self.bootstrap, [self.topic, self.dlq_topic])
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id=self.name,
            enable_auto_commit=False,
            # Never "latest": tansu reports wrong end offsets, and a new group must not skip
            # events published before it first joined.
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
            max_poll_records=self.max_batch,
            # Room for a full batch of embedding-sized records (~5 KB) from one partition in one
            # fetch; kafka-python's 1 MiB default caps a poll at ~200 of them.
            max_partition_fetch_bytes=max(1 << 20, self.max_batch * 8 * 1024),
            **client_options(),
        )
        consumer.subscribe([self.topic], listener=_RebalanceListener(self))
        self._consumer = consumer
        log.info("%s: subscribed to %s as group %s", self.name, self.topic, self.group_id)
        return consumer

    def _drop_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        self.assignment = set()
        self._committed.clear()
        if consumer is not None:
            try:
                consumer.close(autocommit=False)  # commits are ours alone
            except Exception:
                log.warning("%s: error closing consumer", self.name, exc_info=True)

    def _poll(self, consumer: KafkaConsumer) -> list[Any]:
        polled = consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_batch)
        return [r for tp in sorted(polled, key=lambda tp: tp.partition) for r in polled[tp]]

    def _process(self, consumer: KafkaConsumer, records: list[Any]) -> bool:
        """Handle one batch; True when it is finished (committed or commit attempted)."""
        parsed: list[ParsedRecord[M]] = []
        letters: list[tuple[Any, str]] = []
        for r in records:
            reason = self._check(r)
            if reason is not None:
                letters.append((r, reason))
                continue
            try:
                msg = self.message_type.FromString(r.value)
            except (DecodeError, ValueError, TypeError) as e:
                letters.append((r, f"cannot parse as {message_type_name(self.message_type)}: {e}"))
                continue
            parsed.append(ParsedRecord(r.key, msg, r.topic, r.partition, r.offset, _decode_headers(r.headers), r.value))

        ok = len(parsed)
        if parsed:
            try:
                outcomes = self.handler(parsed)
                if outcomes is not None:
                    outcomes = list(outcomes)
                    if len(outcomes) != len(parsed):
                        raise TypeError(f"handler returned {len(outcomes)} outcomes for {len(parsed)} records")
                    raw = {(r.partition, r.offset): r for r in records}
                    for p, outcome in zip(parsed, outcomes):
                        if isinstance(outcome, PoisonMessage):
                            letters.append((raw[(p.partition, p.offset)], f"rejected: {outcome}"))
                            ok -= 1
                        elif outcome is not None:
                            raise TypeError(f"handler outcome must be None or PoisonMessage, got {outcome!r}")
            except RetryableError as e:
                self._consecutive_failures += 1
                self._fail(f"retryable: {e}")
                return False
            except Exception as e:  # noqa: BLE001 — a bug or an unclassified failure: retry, never drop
                self._consecutive_failures += 1
                self._fail(f"handler error: {e!r}", exc_info=True)
                return False

        if letters:
            try:
                self._dead_letter(letters)
            except Exception as e:  # noqa: BLE001
                self._consecutive_failures += 1
                self._fail(f"dead-letter publish failed: {e!r}", exc_info=True)
                return False

        self.processed += ok
        self.dead_lettered += len(letters)
        self._consecutive_failures = 0
        self._commit(consumer, records)
        return True

    def _check(self, r: Any) -> str | None:
        if r.value is None:
            return "record has no value"
        headers = _decode_headers(r.headers)
        declared = headers.get(H_MESSAGE_TYPE)
        expected = message_type_name(self.message_type)
        if declared and declared != expected:
            return f"message-type header is {declared!r}, expected {expected!r}"
        if self.keys is not None:
            try:
                signing.verify(self.keys, r.topic, r.key, declared or "", r.value, headers.get(signing.H_SIGNATURE), max_age_s=self.max_age_s)
            except signing.BadSignature as exc:
                return str(exc)
        return None

    def _dead_letter(self, letters: list[tuple[Any, str]]) -> None:
        producer = self._producer
        if producer is None:
            producer = self._producer = EventProducer(self.bootstrap, f"{self.name}-dlq")
        failed_at = Timestamp()
        failed_at.GetCurrentTime()
        futures = []
        for r, reason in letters:
            log.warning("%s: dead-lettering %s[%d]@%d: %s", self.name, r.topic, r.partition, r.offset, reason)
            letter = events_pb2.DeadLetter(
                source_topic=r.topic,
                source_partition=r.partition,
                source_offset=r.offset,
                key=r.key or b"",
                value=r.value or b"",
                error=reason,
                consumer_group=self.group_id,
                failed_at=failed_at,
            )
            # Deterministic key: a redelivered batch re-publishes the same dead letter with
            # the same idempotency key, so DLQ readers can dedupe.
            idem = f"dlq:{self.group_id}:{r.topic}:{r.partition}:{r.offset}"
            futures.append(producer.send(self.dlq_topic, r.key or b"", letter, {H_IDEMPOTENCY_KEY: idem}))
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)  # raises if any send failed: then the batch is retried

    def _commit(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            nxt = r.offset + 1
            if tp not in offsets or offsets[tp].offset < nxt:
                offsets[tp] = OffsetAndMetadata(nxt, "", -1)
        try:
            consumer.commit(offsets)
            self.commits += 1
            self._committed.update((tp, om.offset) for tp, om in offsets.items())
        except Exception as e:  # noqa: BLE001
            # Typically a rebalance took the partitions away: the new owner redelivers from
            # the last commit (duplicates, never loss). If we still own them, the next
            # batch's commit covers these offsets too.
            self.last_error = f"commit: {e!r}"
            log.warning("%s: commit failed, records may be redelivered: %r", self.name, e)

    def _broker_lost_state(self, consumer: KafkaConsumer) -> bool:
        """True when the group's committed offsets went backwards (a memory:// broker
        restarted). tansu answers a fetch beyond the log end with an empty response instead
        of OFFSET_OUT_OF_RANGE, so without this check the consumer would sit past the end of
        the recreated partitions and silently skip every new record. Checked when idle."""
        now = time.monotonic()
        if not self._committed or now < self._next_state_check:
            return False
        self._next_state_check = now + self.state_check_interval_s
        owned = consumer.assignment()
        for tp, ours in list(self._committed.items()):
            if tp not in owned:
                continue
            theirs = consumer.committed(tp, timeout_ms=5000)
            if theirs is None or theirs < ours:
                log.warning(
                    "%s: committed offset of %s went back from %d to %s (broker lost its state?); "
                    "reconnecting from the broker's committed offsets",
                    self.name, tp, ours, theirs,
                )  # fmt: skip
                self.last_error = f"broker lost committed offsets of {tp.topic}[{tp.partition}]"
                return True
        return False

    def _reposition(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        """Partitions were (re)assigned during the last poll: put every newly assigned partition
        at the group's committed offset (the log's start if none), give the records of this poll
        back (not processed, not committed) and poll again. Between batches our position equals
        our last commit, so this only changes anything when the broker lost its log."""
        reassigned, self._reassigned = set(self._reassigned), set()
        self._rewind(consumer, records)
        owned = consumer.assignment()
        for tp in reassigned:
            if tp not in owned:
                continue
            committed = consumer.committed(tp, timeout_ms=5000)
            if committed is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
            ours = self._committed.get(tp)
            if ours is not None and (committed is None or committed < ours):
                log.warning(
                    "%s: committed offset of %s is %s, behind our last commit %d (the broker lost its log?): "
                    "reading from there", self.name, tp, committed, ours,
                )  # fmt: skip
                self._committed.pop(tp, None)
                if self.on_broker_lost is not None:
                    self.on_broker_lost()

    def _rewind(self, consumer: KafkaConsumer, records: list[Any]) -> None:
        """Seek each partition back to the batch's first offset so the batch is re-polled."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        for tp, offset in first.items():
            try:
                consumer.seek(tp, offset)
            except Exception as e:  # noqa: BLE001 — no longer assigned: the new owner starts at the commit
                log.info("%s: not rewinding %s: %r", self.name, tp, e)

    def _fail(self, message: str, exc_info: bool = False) -> None:
        self.last_error = message
        log.error("%s: %s", self.name, message, exc_info=exc_info)


def message_type_for(topic: str) -> type[Message]:
    """Payload type of a known topic (DLQs carry DeadLetter)."""
    return TOPICS[topic].message_type
