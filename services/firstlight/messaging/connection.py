"""How every Kafka client connects: the TLS / SASL options of this process's principal.

Read from the environment (``FIRSTLIGHT_KAFKA_SECURITY_PROTOCOL`` and the TLS and SASL files and
user of config.KafkaClientSettings) each time a client is built, like the
event keys, so the producer, the consumers and the topic admin of a service all connect as the
same principal without every caller passing settings through. In a cluster each service has
its own certificate, hence its own ACLs (docs/security.md, k8s/components/kafka-mtls).
"""

from __future__ import annotations

from typing import Any

from firstlight.config import KafkaClientSettings


def client_options() -> dict[str, Any]:
    """kafka-python options for this process's Kafka principal ({} for PLAINTEXT)."""
    return KafkaClientSettings().kafka_client_options()
