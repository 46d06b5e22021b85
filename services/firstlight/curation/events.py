"""Kafka side of stream curation: ``predictions.made`` and ``annotations.changed`` handlers
for :class:`~firstlight.messaging.bus.BatchConsumer` (malformed events → PoisonMessage → DLQ;
effects durable and published before the batch is committed), and the events curation emits
(``labeling.queue``, ``drift.alert``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from firstlight.curation.ports import LabelState
from firstlight.curation.stream import Prediction, QueuedItem, Rounds, StreamCuration, StreamDrift, StreamDriftReport
from firstlight.domain import validation
from firstlight.errors import FirstlightError
from firstlight.messaging import topics
from firstlight.messaging.bus import EventProducer, ParsedRecord, PoisonMessage, RetryableError, new_header
from firstlight.v1 import events_pb2

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT_S = 30.0


def parse_prediction(ev: events_pb2.PredictionMade) -> Prediction | PoisonMessage:
    if not (ev.app_id and ev.model_id and ev.model_version):
        return PoisonMessage("PredictionMade lacks app_id, model_id or model_version")
    if not ev.top_concepts:
        return PoisonMessage("PredictionMade has no top_concepts")
    u = ev.uncertainty
    values = {"margin": u.margin, "entropy": u.entropy, "least_confidence": u.least_confidence}
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values.values()):
        return PoisonMessage(f"PredictionMade uncertainty out of [0, 1]: {values}")
    try:
        validation.app_id(ev.app_id)
        if ev.input_id:
            validation.input_id(ev.input_id)
    except FirstlightError as exc:
        return PoisonMessage(f"PredictionMade: {exc}")
    embedding = np.asarray(ev.embedding, dtype=np.float32) if len(ev.embedding) else None
    if embedding is not None and not np.isfinite(embedding).all():
        return PoisonMessage("PredictionMade embedding is not finite")
    return Prediction(
        ev.app_id, ev.model_id, ev.model_version, ev.input_id, values, ev.top_concepts[0].name, int(ev.predicted_index), embedding,
        key=ev.header.idempotency_key,
    )  # fmt: skip


def queued_event(item: QueuedItem) -> events_pb2.LabelingQueued:
    return events_pb2.LabelingQueued(
        header=new_header("curation", f"{item.app_id}/{item.input_id}:queued"),
        app_id=item.app_id,
        input_id=item.input_id,
        model_id=item.model_id,
        model_version=item.model_version,
        score=item.score,
        strategy=item.strategy,
        predicted_concept=item.predicted,
    )


def drift_event(r: StreamDriftReport) -> events_pb2.DriftAlert:
    return events_pb2.DriftAlert(
        header=new_header("curation"),
        app_id=r.app_id,
        model_id=r.model_id,
        model_version=r.model_version,
        p_value=r.report.p_value,
        psi=r.report.psi,
        centroid_distance=r.report.centroid_distance,
        window_size=r.window,
        reference_count=r.reference_count,
    )


class StreamHandlers:
    def __init__(self, stream: StreamCuration, rounds: Rounds, drift: StreamDrift, producer: EventProducer) -> None:
        self.stream = stream
        self.rounds = rounds
        self.drift = drift
        self.producer = producer

    def _publish(self, sends: Sequence[tuple[str, bytes, object]]) -> None:
        try:
            futures = [self.producer.send(topic, key, msg) for topic, key, msg in sends]  # type: ignore[arg-type]
            self.producer.flush(PUBLISH_TIMEOUT_S)
            for f in futures:
                f.get(timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:
            raise RetryableError(f"publishing curation events failed: {exc}") from exc

    def on_predictions(self, records: list[ParsedRecord[events_pb2.PredictionMade]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = []
        good: list[Prediction] = []
        for r in records:
            parsed = parse_prediction(r.message)
            if isinstance(parsed, PoisonMessage):
                outcomes.append(parsed)
            else:
                outcomes.append(None)
                good.append(parsed)
        items = self.stream.screen(good)  # durable first; redelivery republishes unacknowledged items
        self._publish([(topics.LABELING_QUEUE, topics.event_key(i.app_id, i.input_id), queued_event(i)) for i in items])
        self.stream.mark_published(items)
        alerts = self.drift.observe(good)
        if alerts:
            self._publish([(topics.DRIFT_ALERT, topics.event_key(a.app_id), drift_event(a)) for a in alerts])
            for a in alerts:
                log.warning("drift alert: %s/%s v%s p=%.4f psi=%.3f", a.app_id, a.model_id, a.model_version, a.report.p_value, a.report.psi)
        return outcomes

    def on_annotations(self, records: list[ParsedRecord[events_pb2.AnnotationsChanged]]) -> list[PoisonMessage | None]:
        outcomes: list[PoisonMessage | None] = []
        changes = []
        states: list[tuple[str, LabelState]] = []
        for r in records:
            ev = r.message
            if not (ev.app_id and ev.input_id):
                outcomes.append(PoisonMessage("AnnotationsChanged lacks app_id or input_id"))
                continue
            outcomes.append(None)
            changes.append((ev.app_id, ev.input_id, list(ev.concepts)))
            states.append((ev.app_id, LabelState(ev.input_id, tuple(ev.concepts), int(ev.split), int(ev.label_revision))))
        self.stream.record_label_states(states)
        for app_id in self.stream.on_labels(changes):
            self.rounds.maybe_start(app_id)
        return outcomes
