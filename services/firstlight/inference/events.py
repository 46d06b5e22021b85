"""The inference service's events on the wire: the one place that builds their protobufs and
picks their topics and keys. :class:`PredictionEvents` is the core's observer of app-model
predictions (``predictions.made``, read by curation)."""

from __future__ import annotations

import logging

import numpy as np

from firstlight.inference.core import Observed, uncertainty
from firstlight.messaging import topics
from firstlight.messaging.bus import EventProducer, new_header
from firstlight.v1 import common_pb2, events_pb2

log = logging.getLogger(__name__)
TOP_CONCEPTS = 5


def prediction_events(seen: Observed) -> list[events_pb2.PredictionMade]:
    """One ``predictions.made`` event per image of an app-model Predict call."""
    margin, entropy, least = uncertainty(seen.probabilities)
    out = []
    for n, (input_id, row) in enumerate(zip(seen.input_ids, seen.probabilities)):
        order = [int(i) for i in (-row).argsort(kind="stable")[:TOP_CONCEPTS]]
        out.append(
            events_pb2.PredictionMade(
                header=new_header("inference"),
                app_id=seen.app_id,
                model_id=seen.model.id,
                model_version=seen.model.version,
                input_id=input_id,
                top_concepts=[common_pb2.ScoredConcept(name=seen.model.concepts[i], score=float(row[i])) for i in order],
                uncertainty=events_pb2.Uncertainty(margin=float(margin[n]), entropy=float(entropy[n]), least_confidence=float(least[n])),
                predicted_index=order[0],
                concept_count=len(row),
                embedding=np.asarray(seen.embeddings[n], dtype=np.float32).tolist(),
            )
        )
    return out


class PredictionEvents:
    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def __call__(self, seen: Observed) -> None:
        # Fire and forget: a prediction is answered whether or not curation hears of it (the
        # producer retries on its own; a lost event costs a labeling candidate, not a result).
        for ev in prediction_events(seen):
            future = self.producer.send(topics.PREDICTIONS_MADE, topics.event_key(ev.app_id, ev.input_id), ev)
            future.add_errback(lambda exc: log.warning("predictions.made not published: %s", exc))
