"""Outbox relay: publishes events committed with the data they describe, in commit order,
and deletes them only after the broker acknowledged them (at-least-once, nothing lost if
the broker or this process dies in between)."""

from __future__ import annotations

import logging
import threading

from firstlight.ingestion.store import MetadataStore
from firstlight.messaging import topics
from firstlight.messaging.bus import EventProducer
from firstlight.runtime.retry import Backoff

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(self, store: MetadataStore, producer: EventProducer, batch: int = 256) -> None:
        self.store = store
        self.producer = producer
        self.batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self.published = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    @property
    def healthy(self) -> bool:
        return self._thread.is_alive()

    def publish_pending(self) -> int:
        """Publish one batch; returns how many were acknowledged."""
        rows = self.store.outbox_batch(self.batch)
        if not rows:
            return 0
        futures = [
            self.producer.send_raw(ev.topic, ev.key, ev.value, topics.TOPICS[ev.topic].message_type.DESCRIPTOR.full_name)
            for _, ev in rows
        ]
        self.producer.flush(timeout=30)  # don't wait out linger_ms per batch
        for future in futures:
            future.get(timeout=30)  # raises if the broker did not acknowledge
        self.store.outbox_ack([seq for seq, _ in rows])
        self.published += len(rows)
        return len(rows)

    def _run(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while not self._stop.is_set():
            try:
                while self.publish_pending():
                    pass
                backoff.reset()
                self.last_error = None
                self._wake.wait(1.0)  # also polls, in case another replica wrote rows
                self._wake.clear()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive broker outages
                self.last_error = str(exc)
                delay = backoff.next()
                log.warning("outbox relay: %s; retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
