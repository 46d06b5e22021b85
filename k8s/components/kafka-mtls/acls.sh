#!/bin/bash
# The broker ACLs of the Firstlight principals (k8s/components/kafka-mtls; run by the Job
# kafka-setup as User:firstlight-admin, a super user). Exactly what each service produces and
# consumes: firstlight.messaging.access, which tests/unit/test_kafka_access.py checks against the
# code and tests/unit/test_k8s_manifests.py against the lines below. Write and Read imply
# Describe. Idempotent: adding an ACL that exists changes nothing.
set -euo pipefail
umask 077
# kafka-acls.sh reads a PEM key store as one file: the key and its chain.
cat /etc/firstlight/kafka/tls.key /etc/firstlight/kafka/tls.crt > /tmp/admin.pem
cat > /tmp/admin.properties <<PROPS
security.protocol=SSL
ssl.keystore.type=PEM
ssl.keystore.location=/tmp/admin.pem
ssl.truststore.type=PEM
ssl.truststore.location=/etc/firstlight/kafka/ca.crt
PROPS
acl() { /opt/kafka/bin/kafka-acls.sh --bootstrap-server "$FIRSTLIGHT_KAFKA_BOOTSTRAP" --command-config /tmp/admin.properties --add "$@"; }

acl --allow-principal User:ingestion --operation Write --topic annotations.changed --topic app.embedding_model.changed --topic inputs.deleted --topic inputs.indexed.dlq --topic inputs.ingested --topic inputs.submit.dlq
acl --allow-principal User:ingestion --operation Read --topic inputs.indexed --topic inputs.submit
acl --allow-principal User:ingestion --operation Read --group ingestion --group ingestion-indexed
acl --allow-principal User:embedding --operation Write --topic embeddings.computed --topic inputs.ingested.dlq
acl --allow-principal User:embedding --operation Read --topic inputs.ingested
acl --allow-principal User:embedding --operation Read --group embedding
acl --allow-principal User:search --operation Write --topic annotations.changed.dlq --topic app.embedding_model.changed.dlq --topic embeddings.computed.dlq --topic inputs.deleted.dlq --topic inputs.indexed
acl --allow-principal User:search --operation Read --topic annotations.changed --topic app.embedding_model.changed --topic embeddings.computed --topic inputs.deleted
acl --allow-principal User:search --operation Read --group search --group search-deletions --group search-embedding-models --group search-labels
acl --allow-principal User:inference --operation Write --topic model.version.ready.dlq --topic predictions.made
acl --allow-principal User:inference --operation Read --topic model.version.ready
# One consumer group per inference replica (each replays model.version.ready): a prefix.
acl --allow-principal User:inference --operation Read --resource-pattern-type prefixed --group inference-registry-
acl --allow-principal User:training --operation Write --topic model.version.ready --topic training.progress
acl --allow-principal User:curation --operation Write --topic annotations.changed.dlq --topic drift.alert --topic labeling.queue --topic predictions.made.dlq
acl --allow-principal User:curation --operation Read --topic annotations.changed --topic predictions.made
acl --allow-principal User:curation --operation Read --group curation-labels --group curation-predictions
