"""The broker-ACL table (messaging.access) is what the code does: read from each service's source,
the topics it publishes (every ``topics.<NAME>`` it names outside a BatchConsumer) and the topics
and groups its BatchConsumers read must be exactly the table's, so the k8s ACLs made from the
table (tests/unit/test_k8s_manifests.py) cannot drift from the code. Also: the Kafka client
options a principal connects with."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from firstlight import config
from firstlight.messaging import topics
from firstlight.messaging.access import ACCESS, service_acls
from firstlight.stack import SERVICES

SRC = Path(topics.__file__).resolve().parents[1]
TOPIC_NAMES = {name for name in dir(topics) if name.isupper() and isinstance(getattr(topics, name), str) and getattr(topics, name) in topics.TOPICS}
SETTINGS = {"embedding": config.EmbeddingSettings, "search": config.SearchSettings}


def _group(node: ast.expr, service: str) -> str:
    """A consumer group expression as a string ("*" ends a prefix: an f-string's variable part)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        fixed = ""
        for part in node.values:
            if not isinstance(part, ast.Constant):
                return fixed + "*"
            fixed += str(part.value)
        return fixed
    if isinstance(node, ast.Attribute) and node.attr == "consumer_group":
        return str(SETTINGS[service].model_fields["consumer_group"].default)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _group(node.left, service) + _group(node.right, service)
    raise AssertionError(f"{service}: cannot read the consumer group {ast.unparse(node)}")


def _uses(service: str) -> tuple[set[str], dict[str, str]]:
    """(topics it publishes, {topic it consumes: group}) as its source says."""
    produced: set[str] = set()
    consumed: dict[str, str] = {}
    for path in (SRC / service).rglob("*.py"):
        tree = ast.parse(path.read_text())
        in_consumer: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "BatchConsumer":
                group, topic = node.args[1], node.args[2]
                assert isinstance(topic, ast.Attribute) and topic.attr in TOPIC_NAMES, f"{path}: {ast.unparse(topic)}"
                consumed[getattr(topics, topic.attr)] = _group(group, service)
                in_consumer.add(id(topic))
        for node in ast.walk(tree):
            named = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "topics"
            if named and node.attr in TOPIC_NAMES and id(node) not in in_consumer:  # type: ignore[attr-defined]
                produced.add(getattr(topics, node.attr))  # type: ignore[attr-defined]
    return produced, consumed


@pytest.mark.parametrize("service", SERVICES)
def test_access_table_is_what_the_code_produces_and_consumes(service: str) -> None:
    produced, consumed = _uses(service)
    table_produced = {t for t, a in ACCESS.items() if service in a.producers}
    table_consumed = {t: a.consumers[service] for t, a in ACCESS.items() if service in a.consumers}
    assert consumed == table_consumed, f"{service} consumes {consumed}, the ACL table says {table_consumed}"
    # A topic a service only names because it consumes it (a comparison, a docstring) is fine.
    assert produced - set(consumed) == table_produced, f"{service} publishes {produced - set(consumed)}, the table says {table_produced}"


def test_every_topic_is_in_the_table_and_acls_follow_it() -> None:
    assert set(ACCESS) == {t for t in topics.TOPICS if not t.endswith(topics.DLQ_SUFFIX)}
    acls = service_acls(prefix="p.")
    assert set(acls) == set(SERVICES)
    search = acls["search"]
    assert "p.inputs.indexed" in search.write and "p.embeddings.computed.dlq" in search.write  # its output, its dead letters
    assert search.read == {"p.embeddings.computed", "p.annotations.changed", "p.inputs.deleted", "p.app.embedding_model.changed"}
    assert acls["inference"].group_prefixes == {"p.inference-registry-"} and not acls["inference"].groups
    assert acls["training"].read == set() and acls["training"].write == {"p.model.version.ready", "p.training.progress"}


def test_kafka_client_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in __import__("os").environ if v.startswith("FIRSTLIGHT_KAFKA_")]:
        monkeypatch.delenv(var)
    assert config.KafkaClientSettings().kafka_client_options() == {}
    mtls = config.KafkaClientSettings(
        kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "ca.crt", kafka_ssl_certfile=tmp_path / "tls.crt", kafka_ssl_keyfile=tmp_path / "tls.key"
    )
    assert mtls.kafka_client_options() == {
        "security_protocol": "SSL", "ssl_check_hostname": True,
        "ssl_cafile": str(tmp_path / "ca.crt"), "ssl_certfile": str(tmp_path / "tls.crt"), "ssl_keyfile": str(tmp_path / "tls.key"),
    }  # fmt: skip
    scram = config.KafkaClientSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="search", kafka_sasl_password="pw")
    assert scram.kafka_client_options()["sasl_mechanism"] == "SCRAM-SHA-512"
    with pytest.raises(ValidationError, match="go together"):
        config.KafkaClientSettings(kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "tls.crt")
    with pytest.raises(ValidationError, match="set it to SSL"):
        config.KafkaClientSettings(kafka_ssl_cafile=tmp_path / "ca.crt")
    with pytest.raises(ValidationError, match="SASL_SSL needs"):
        config.KafkaClientSettings(kafka_security_protocol="SASL_SSL")
