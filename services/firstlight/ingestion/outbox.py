"""Outbox relay: publishes events committed with the data they describe, in commit order,
and deletes them only after the broker acknowledged them (at-least-once, nothing lost if
the broker or this process dies in between).

A broker's acknowledgement is not the end of the story: a broker with memory storage (the local
stack's) that restarts forgets every record it held, including announcements no consumer had
read yet. So the relay also keeps each input it announced on ``inputs.ingested`` on a watch list
until the search service confirms on ``inputs.indexed`` that the input is searchable, and
announces again, from the store's current state, every input still unconfirmed past a deadline
(doubling per attempt, a bounded number of attempts). When it learns that the broker lost its
state (its producer hit a fatal error and was replaced, or a consumer saw its group's committed
offsets go back), every input relayed before that moment is due at once. Announcing twice is
harmless: the index upserts by a deterministic point id. See docs/reliability.md."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from firstlight.ingestion import events
from firstlight.ingestion.ports import Event
from firstlight.ingestion.store import MetadataStore, OutboxEvent, WatchRow, utcnow
from firstlight.messaging.bus import EventProducer
from firstlight.runtime.retry import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfirmPolicy:
    """When an announced input that search has not confirmed is announced again."""

    #: First deadline after the broker's ack; doubles with each attempt.
    deadline_s: float = 300.0
    #: The longest deadline.
    max_deadline_s: float = 3600.0
    #: Announcements after the first before the input is given up on (logged as an error).
    max_attempts: int = 8
    #: How often the relay looks for overdue inputs.
    check_interval_s: float = 5.0

    def due_at(self, attempts: int, now: datetime | None = None) -> datetime:
        delay = min(self.max_deadline_s, self.deadline_s * (2 ** max(0, attempts)))
        return (now or utcnow()) + timedelta(seconds=delay)


#: Builds fresh announcements of (app, input) pairs; returns them and the pairs that are gone.
Reannounce = Callable[[Sequence[tuple[str, str]], str], tuple[list[Event], list[tuple[str, str]]]]


class OutboxRelay:
    def __init__(
        self,
        store: MetadataStore,
        producer: EventProducer,
        batch: int = 256,
        *,
        reannounce: Reannounce | None = None,
        policy: ConfirmPolicy | None = None,
    ) -> None:
        self.store = store
        self.producer = producer
        self.batch = batch
        self.reannounce = reannounce
        self.policy = policy or ConfirmPolicy()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self.published = 0
        self.reannounced = 0
        self.given_up = 0
        self.last_error: str | None = None
        self._lost_at: datetime | None = None  # the broker lost its records before this moment
        self._next_check = 0.0

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

    def broker_lost(self, reason: str = "") -> None:
        """The broker lost what it held (called from a producer or consumer thread): every input
        relayed until now and not confirmed is announced again on the relay's next round."""
        log.warning("outbox relay: broker lost its state (%s): re-announcing unconfirmed inputs", reason or "unknown")
        self._lost_at = utcnow()
        self._next_check = 0.0
        self._wake.set()

    def publish_pending(self) -> int:
        """Publish one batch; returns how many were acknowledged."""
        rows = self.store.outbox_batch(self.batch)
        if not rows:
            return 0
        futures = [self.producer.send_raw(ev.topic, ev.key, ev.value, events.type_name(ev)) for _, ev in rows]
        self.producer.flush(timeout=30)  # don't wait out linger_ms per batch
        for future in futures:
            future.get(timeout=30)  # raises if the broker did not acknowledge
        watch = self._watched(ev for _, ev in rows) if self.reannounce is not None else []
        self.store.outbox_ack([seq for seq, _ in rows], watch, self.policy.due_at)
        self.published += len(rows)
        return len(rows)

    @staticmethod
    def _watched(rows: Iterable[OutboxEvent]) -> list[tuple[str, str, str]]:
        return [w for w in map(events.watched, rows) if w is not None]

    def confirm(self, confirmations: Sequence[tuple[str, str, str]]) -> int:
        """Search indexed these (app, input, model): stop watching them."""
        return self.store.index_confirmed(confirmations)

    def reannounce_overdue(self, now: datetime | None = None) -> int:
        """Announce again the watched inputs that are overdue; returns how many were enqueued."""
        if self.reannounce is None:
            return 0
        now = now or utcnow()
        lost_at, self._lost_at = self._lost_at, None
        if lost_at is not None:
            self.store.index_mark_due(lost_at, now)
        total = 0
        while True:
            rows = self.store.index_overdue(now, limit=500)
            if not rows:
                return total
            spent = [r for r in rows if r.attempts >= self.policy.max_attempts]
            if spent:
                self.given_up += len(spent)
                log.error(
                    "outbox relay: %d input(s) never confirmed indexed after %d announcements, given up: %s",
                    len(spent), self.policy.max_attempts + 1,
                    ", ".join(f"{r.app_id}/{r.input_id}" for r in spent[:5]),
                )  # fmt: skip
                self.store.index_forget([(r.app_id, r.input_id) for r in spent])
            retry: list[WatchRow] = [r for r in rows if r.attempts < self.policy.max_attempts]
            if not retry:
                continue
            again, gone = self.reannounce([(r.app_id, r.input_id) for r in retry], f"{int(now.timestamp())}")
            if gone:
                self.store.index_forget(gone)
            gone_set = set(gone)
            kept = [r for r in retry if (r.app_id, r.input_id) not in gone_set]
            self.store.index_requeue(kept, again, lambda attempts: self.policy.due_at(attempts, now))
            total += len(again)
            self.reannounced += len(again)
            log.warning(
                "outbox relay: %d input(s) not confirmed indexed in time, announced again (e.g. %s)",
                len(again), ", ".join(f"{r.app_id}/{r.input_id}" for r in kept[:3]),
            )  # fmt: skip
            if len(rows) < 500:
                return total

    def _run(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while not self._stop.is_set():
            try:
                # A short batch was the whole outbox at its SELECT: no second, empty one per
                # wake-up (a row committed since has called notify(), so the wait below
                # returns at once).
                while self.publish_pending() >= self.batch:
                    pass
                if time.monotonic() >= self._next_check:
                    self._next_check = time.monotonic() + self.policy.check_interval_s
                    if self.reannounce_overdue():
                        continue  # publish them now
                backoff.reset()
                self.last_error = None
                self._wake.wait(1.0)  # also polls, in case another replica wrote rows
                self._wake.clear()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive broker outages
                self.last_error = str(exc)
                delay = backoff.next()
                log.warning("outbox relay: %s; retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
