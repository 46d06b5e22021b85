"""The ingestion outbox's confirmation rule (docs/reliability.md, "What a broker restart loses"):
an input announced on ``inputs.ingested`` stays on a watch list until search confirms it on
``inputs.indexed``; one still unconfirmed past its deadline (doubling per attempt) is announced
again from the store's current state; after a broker loss everything relayed before it is due at
once; deleted inputs are dropped; attempts are bounded. Real SQLite store, fake producer."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.outbox import ConfirmPolicy, OutboxRelay
from firstlight.ingestion.store import MetadataStore, make_engine, utcnow
from firstlight.messaging import topics
from firstlight.v1 import events_pb2


class Done:
    def get(self, timeout: float | None = None) -> None:
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send_raw(self, topic: str, key: bytes, value: bytes, message_type: str = "") -> Done:
        self.sent.append((topic, key, value))
        return Done()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def announced(self) -> list[str]:
        return [events_pb2.InputIngested.FromString(v).input_id for t, _, v in self.sent if t == topics.INPUTS_INGESTED]


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


POLICY = ConfirmPolicy(deadline_s=60, max_deadline_s=1000, max_attempts=2)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Ingestion, OutboxRelay, FakeProducer]:
    store = MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}"))
    core = Ingestion(store, LocalBlobStore(tmp_path / "blobs"), ImageLimits())
    core.create_app("app")
    producer = FakeProducer()
    relay = OutboxRelay(store, producer, reannounce=core.reannouncements, policy=POLICY)  # type: ignore[arg-type]
    core.post_inputs("app", [NewInput(png(i), id=f"i{i}", concepts=["cat"]) for i in range(4)])
    while relay.publish_pending():
        pass
    return core, relay, producer


def test_relayed_inputs_are_watched_until_confirmed(setup) -> None:  # type: ignore[no-untyped-def]
    core, relay, producer = setup
    assert producer.announced() == ["i0", "i1", "i2", "i3"]
    assert core.store.index_watch_size() == 4
    # A vector of another model does not confirm an announcement for a named model, but the base
    # backbone's announcement ("") is confirmed by whatever search indexed.
    assert relay.confirm([("app", "i0", "efficientnet-lite0-57934424.v1"), ("app", "i1", "x"), ("other", "i2", "")]) == 2
    assert core.store.index_watch_size() == 2
    # Nothing is due before the deadline.
    assert relay.reannounce_overdue(utcnow() + timedelta(seconds=59)) == 0


def test_unconfirmed_past_deadline_are_announced_again_from_current_state(setup) -> None:  # type: ignore[no-untyped-def]
    core, relay, producer = setup
    relay.confirm([("app", "i0", ""), ("app", "i1", "")])
    core.annotate("app", [("i2", ["dog"], ["cat"], 0)])  # labels changed since the first announcement
    core.delete_inputs("app", ["i3"])  # gone: dropped from the watch, not announced
    while relay.publish_pending():
        pass
    producer.sent.clear()

    later = utcnow() + timedelta(seconds=61)
    assert relay.reannounce_overdue(later) == 1
    while relay.publish_pending():
        pass
    [(topic, key, value)] = producer.sent
    event = events_pb2.InputIngested.FromString(value)
    assert (topic, key, event.input_id, list(event.concepts)) == (topics.INPUTS_INGESTED, b"app/i2", "i2", ["dog"])
    assert event.label_revision == 2
    assert core.store.index_watch_size() == 1  # i2, watched again

    # The deadline doubled: 2 x 60 s from the re-announcement's ack.
    [row] = core.store.index_overdue(utcnow() + timedelta(days=1))
    assert row.attempts == 1 and row.due_at - row.relayed_at >= timedelta(seconds=119)
    assert relay.reannounce_overdue(utcnow() + timedelta(seconds=100)) == 0

    # Bounded: after max_attempts re-announcements the input is given up on (and logged).
    assert relay.reannounce_overdue(utcnow() + timedelta(seconds=1000)) == 1
    while relay.publish_pending():
        pass
    assert relay.reannounce_overdue(utcnow() + timedelta(seconds=5000)) == 0
    assert relay.given_up == 1 and core.store.index_watch_size() == 0


def test_broker_loss_makes_everything_relayed_before_it_due_now(setup) -> None:  # type: ignore[no-untyped-def]
    core, relay, producer = setup
    relay.confirm([("app", "i0", "")])
    producer.sent.clear()
    relay.broker_lost("test")
    core.post_inputs("app", [NewInput(png(9), id="late")])  # relayed after the loss: not due yet
    assert relay.reannounce_overdue() == 3
    while relay.publish_pending():
        pass
    assert sorted(producer.announced()) == ["i1", "i2", "i3", "late"]
    # Each re-announcement is a new logical event (a new idempotency key).
    keys = {events_pb2.InputIngested.FromString(v).header.idempotency_key for _, _, v in producer.sent}
    assert len(keys) == 4


def test_a_relay_without_the_rule_watches_nothing(tmp_path: Path) -> None:
    store = MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}"))
    core = Ingestion(store, LocalBlobStore(tmp_path / "blobs"), ImageLimits())
    core.create_app("app")
    relay = OutboxRelay(store, FakeProducer())  # type: ignore[arg-type]
    core.post_inputs("app", [NewInput(png(1), id="a")])
    assert relay.publish_pending() == 1
    assert store.index_watch_size() == 0 and relay.reannounce_overdue() == 0
