"""Who writes and who reads each topic: the source of the broker ACLs.

Each service connects to Kafka as its own principal (its certificate's CN is the service name:
docs/security.md, k8s/components/kafka-mtls), and the broker lets a principal do exactly what
this table says: write the topics it produces and the dead-letter topics of the topics it
consumes, read the topics it consumes in its own consumer groups. Two tests keep the three in
step: tests/unit/test_kafka_access.py (this table against the code's producers and
BatchConsumers) and tests/unit/test_k8s_manifests.py (the k8s ACLs against this table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from firstlight.messaging import topics


class Access(NamedTuple):
    #: Services that publish the topic (outside integrations publish ``inputs.submit``).
    producers: tuple[str, ...]
    #: service -> its consumer group; a group ending in "*" is a prefix (inference gives each
    #: replica a group of its own, so every replica replays ``model.version.ready``).
    consumers: dict[str, str]


ACCESS: dict[str, Access] = {
    topics.INPUTS_SUBMIT: Access((), {"ingestion": "ingestion"}),
    topics.INPUTS_INGESTED: Access(("ingestion",), {"embedding": "embedding"}),
    topics.EMBEDDINGS_COMPUTED: Access(("embedding",), {"search": "search"}),
    topics.INPUTS_INDEXED: Access(("search",), {"ingestion": "ingestion-indexed"}),
    topics.ANNOTATIONS_CHANGED: Access(("ingestion",), {"search": "search-labels", "curation": "curation-labels"}),
    topics.INPUTS_DELETED: Access(("ingestion",), {"search": "search-deletions"}),
    topics.EMBEDDING_MODEL_CHANGED: Access(("ingestion",), {"search": "search-embedding-models"}),
    topics.MODEL_VERSION_READY: Access(("training",), {"inference": "inference-registry-*"}),
    topics.TRAINING_PROGRESS: Access(("training",), {}),
    topics.PREDICTIONS_MADE: Access(("inference",), {"curation": "curation-predictions"}),
    topics.LABELING_QUEUE: Access(("curation",), {}),
    topics.DRIFT_ALERT: Access(("curation",), {}),
}


@dataclass
class ServiceAcl:
    """What one service's principal may do on the broker."""

    write: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    group_prefixes: set[str] = field(default_factory=set)


def service_acls(prefix: str = topics.PREFIX) -> dict[str, ServiceAcl]:
    """Per service: the topics it writes and reads, its consumer groups (literal and prefixed).
    Names carry ``prefix`` (FIRSTLIGHT_TOPIC_PREFIX: topics and groups alike, see BatchConsumer)."""

    def name(topic: str) -> str:
        return prefix + topic[len(topics.PREFIX) :]

    out: dict[str, ServiceAcl] = {}
    for topic, access in ACCESS.items():
        for service in access.producers:
            out.setdefault(service, ServiceAcl()).write.add(name(topic))
        for service, group in access.consumers.items():
            acl = out.setdefault(service, ServiceAcl())
            acl.read.add(name(topic))
            acl.write.add(name(topics.dlq(topic)))  # its dead letters
            if group.endswith("*"):
                acl.group_prefixes.add(prefix + group[:-1])
            else:
                acl.groups.add(prefix + group)
    return out


def topics_of(service: str) -> list[str]:
    """The topics ``service`` reads or writes (its dead-letter topics included): the ones it makes
    sure exist at start-up, all of which its principal may describe."""
    acl = service_acls().get(service, ServiceAcl())
    return sorted(acl.read | acl.write)
