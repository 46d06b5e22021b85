#!/bin/sh
# Certificates for Kafka with mutual TLS (k8s/components/kafka-mtls, docs/security.md): a CA,
# the broker's certificate and one client certificate per principal (CN = the principal the
# broker's ACLs name). Writes PEM files (keys PKCS#8, owner-only) into DIR; with --apply it also
# creates the kubernetes.io/tls Secrets (tls.crt, tls.key, ca.crt) in NAMESPACE with kubectl.
#
#   scripts/kafka-mtls-certs.sh DIR [--apply NAMESPACE]
#
# Keep DIR/ca.key offline (it issues certificates the broker trusts). Certificates last 825 days;
# re-run with the same DIR to renew: the CA is kept, the leaves are re-issued.
set -eu
dir="${1:?usage: $0 DIR [--apply NAMESPACE]}"
apply_ns=""
if [ "${2:-}" = "--apply" ]; then apply_ns="${3:?--apply needs a namespace}"; fi
PRINCIPALS="ingestion embedding search inference training curation firstlight-admin"
umask 077
mkdir -p "$dir"

if [ ! -f "$dir/ca.key" ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=firstlight-kafka-ca" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.crt"
fi

# issue NAME SAN EXTENDED_KEY_USAGE
issue() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$1.key"   # PKCS#8 PEM
  openssl req -new -key "$dir/$1.key" -subj "/CN=$1" -out "$dir/$1.csr"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s' "$3" "$2" > "$dir/$1.ext"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$dir/$1.ext" -out "$dir/$1.crt" 2>/dev/null
  rm -f "$dir/$1.csr" "$dir/$1.ext"
}

# The broker: its Service names, the pod's stable name, and localhost (KRaft's controller
# connection, also TLS); serverAuth and clientAuth (it is a client of its own listeners: User:kafka).
issue kafka "subjectAltName=DNS:kafka,DNS:kafka.firstlight.svc,DNS:kafka.firstlight.svc.cluster.local,DNS:kafka-0.kafka-headless,DNS:kafka-0.kafka-headless.firstlight.svc.cluster.local,DNS:localhost,IP:127.0.0.1" "serverAuth,clientAuth"
for p in $PRINCIPALS; do issue "$p" "" "clientAuth"; done

if [ -n "$apply_ns" ]; then
  secret() {  # NAME CERT_BASENAME
    kubectl -n "$apply_ns" create secret generic "$1" --type=kubernetes.io/tls \
      --from-file=tls.crt="$dir/$2.crt" --from-file=tls.key="$dir/$2.key" --from-file=ca.crt="$dir/ca.crt" \
      --dry-run=client -o yaml | kubectl apply -f -
  }
  secret kafka-broker-tls kafka
  for p in $PRINCIPALS; do secret "kafka-client-$p" "$p"; done
fi
echo "certificates in $dir: kafka (broker) and $PRINCIPALS"
