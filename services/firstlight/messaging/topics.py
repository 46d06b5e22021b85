"""Topic names, their payload types and partition counts, and idempotent topic creation.

Names get an optional prefix from the environment (`FIRSTLIGHT_TOPIC_PREFIX`, for example
"dev."), so several stacks can share one broker. It is read once at import time so the
constants stay plain strings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import NamedTuple

from google.protobuf.message import Message

from firstlight.v1 import events_pb2

log = logging.getLogger(__name__)

TOPIC_PREFIX_ENV = "FIRSTLIGHT_TOPIC_PREFIX"
PREFIX: str = os.environ.get(TOPIC_PREFIX_ENV, "")

DLQ_SUFFIX = ".dlq"
# Per-input topics are keyed by "<app_id>/<input_id>"; the partition count is the most
# consumers of one group that can work in parallel, so it is the scale-out unit.
INPUT_PARTITIONS = 6
# DLQs are low-volume and read by operators in order.
DLQ_PARTITIONS = 1


def topic_name(base: str, prefix: str | None = None) -> str:
    return f"{PREFIX if prefix is None else prefix}{base}"


INPUTS_SUBMIT = topic_name("inputs.submit")
INPUTS_INGESTED = topic_name("inputs.ingested")
EMBEDDINGS_COMPUTED = topic_name("embeddings.computed")
INPUTS_INDEXED = topic_name("inputs.indexed")
ANNOTATIONS_CHANGED = topic_name("annotations.changed")
INPUTS_DELETED = topic_name("inputs.deleted")
MODEL_VERSION_READY = topic_name("model.version.ready")
PREDICTIONS_MADE = topic_name("predictions.made")
LABELING_QUEUE = topic_name("labeling.queue")
DRIFT_ALERT = topic_name("drift.alert")
TRAINING_PROGRESS = topic_name("training.progress")
EMBEDDING_MODEL_CHANGED = topic_name("app.embedding_model.changed")


def dlq(topic: str) -> str:
    """Dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


class TopicSpec(NamedTuple):
    message_type: type[Message]
    partitions: int
    description: str
    #: Topic configs set at creation (an existing topic keeps its own: alter it by hand).
    configs: dict[str, str] | None = None


_BASE: dict[str, TopicSpec] = {
    INPUTS_SUBMIT: TopicSpec(events_pb2.InputSubmitted, INPUT_PARTITIONS, "An outside integration asks to ingest an image."),
    INPUTS_INGESTED: TopicSpec(events_pb2.InputIngested, INPUT_PARTITIONS, "Input stored durably; waits to be embedded."),
    EMBEDDINGS_COMPUTED: TopicSpec(events_pb2.EmbeddingComputed, INPUT_PARTITIONS, "An input's image embedding."),
    INPUTS_INDEXED: TopicSpec(events_pb2.InputIndexed, INPUT_PARTITIONS, "An input became searchable."),
    ANNOTATIONS_CHANGED: TopicSpec(events_pb2.AnnotationsChanged, INPUT_PARTITIONS, "An input's labels or split changed (full state)."),
    INPUTS_DELETED: TopicSpec(events_pb2.InputsDeleted, INPUT_PARTITIONS, "Inputs removed; drop them from every index."),
    # One partition: versions of all models in one total order, replayed by every inference
    # replica at start to rebuild its registry of servable versions.
    # Kept forever (retention.ms=-1): a replica started next year must still learn every version.
    MODEL_VERSION_READY: TopicSpec(events_pb2.ModelVersionReady, 1, "A trained model version is in the model repository.", {"retention.ms": "-1"}),
    PREDICTIONS_MADE: TopicSpec(events_pb2.PredictionMade, INPUT_PARTITIONS, "An app model's prediction for one image, with its uncertainty."),
    LABELING_QUEUE: TopicSpec(events_pb2.LabelingQueued, INPUT_PARTITIONS, "An uncertain input was put on the app's labeling queue."),
    # Rare, read in order by alerting integrations.
    DRIFT_ALERT: TopicSpec(events_pb2.DriftAlert, 1, "An app model's recent traffic drifted from its training set."),
    # Keyed by "<app_id>": an app's switches stay in order.
    EMBEDDING_MODEL_CHANGED: TopicSpec(
        events_pb2.EmbeddingModelChanged, INPUT_PARTITIONS, "An app switched its image-embedding model; its inputs are re-embedded."
    ),
    # Keyed by "<app_id>/<job_id>": a job's rows stay in order. Low volume (one row per epoch).
    TRAINING_PROGRESS: TopicSpec(events_pb2.TrainingProgressed, 1, "A deep training job finished an epoch (loss, lr, metrics, ETA) or ended."),
}

TOPICS: dict[str, TopicSpec] = {
    **_BASE,
    **{dlq(name): TopicSpec(events_pb2.DeadLetter, DLQ_PARTITIONS, f"Rejected events of {name}, with the reason.") for name in _BASE},
}


def event_key(app_id: str, input_id: str = "") -> bytes:
    """Record key: "<app_id>/<input_id>", or "<app_id>" for app-wide events.

    Keying by input keeps all events of one input on one partition, hence in order.
    """
    if not app_id:
        raise ValueError("app_id is required for an event key")
    return (f"{app_id}/{input_id}" if input_id else app_id).encode()


def ensure_topics(
    bootstrap: str,
    names: Iterable[str] | None = None,
    *,
    default_partitions: int = 1,
    timeout_ms: int = 30_000,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created.

    Idempotent and safe to race: TopicAlreadyExists from a concurrent creator is ignored.
    `names` defaults to every topic in TOPICS; names not in TOPICS get `default_partitions`.
    Creating explicitly matters because the broker auto-creates unknown topics on first
    produce with a single partition, which would silently cap consumer parallelism.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import ClusterAuthorizationFailedError, TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code

    wanted = list(dict.fromkeys(TOPICS if names is None else names))
    if not wanted:
        return []
    from firstlight.messaging.connection import client_options

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="firstlight-topics",
        request_timeout_ms=timeout_ms,
        **client_options(),
    )
    try:
        existing = set(admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if not missing:
            return []
        request = {
            n: {
                "num_partitions": TOPICS[n].partitions if n in TOPICS else default_partitions,
                "replication_factor": 1,
                **({"configs": TOPICS[n].configs} if n in TOPICS and TOPICS[n].configs else {}),
            }
            for n in missing
        }
        result = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
        created: list[str] = []
        for t in result["topics"]:
            err = for_code(t["error_code"])
            if t["error_code"] == 0:
                created.append(t["name"])
            elif err is TopicAlreadyExistsError:
                log.debug("topic %s created concurrently", t["name"])
            elif err in (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                # With broker ACLs a service may only read and write its own topics; the topics are
                # created by the cluster's setup job (python -m firstlight.messaging.topics as admin).
                log.warning("not allowed to create topic %s (broker ACLs): it must be created by the setup job", t["name"])
            else:
                raise err(f"creating topic {t['name']}: {t.get('error_message')}")
        if created:
            admin.wait_for_topics(created, timeout_ms=timeout_ms)
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        admin.close()


def main() -> None:
    """``python -m firstlight.messaging.topics``: create every topic with its partitions and
    configs (the cluster's setup job runs this as the admin principal, before the ACLs that
    leave the services no right to create topics)."""
    from firstlight.config import CommonSettings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = CommonSettings()
    created = ensure_topics(settings.kafka_bootstrap, default_partitions=INPUT_PARTITIONS)
    print(f"{len(TOPICS)} topics; created {len(created)}: {', '.join(created) or 'none'}")


if __name__ == "__main__":
    main()
