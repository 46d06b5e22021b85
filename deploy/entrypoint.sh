#!/bin/sh
# Entrypoint of the Firstlight image: one image, six services.
#
#   <image> ingestion|embedding|search|inference|training|curation   run that service (python -m firstlight.<name>.main)
#   <image>                                          run $FIRSTLIGHT_SERVICE
#   <image> gateway                                  the HTTP API and Portal (python -m firstlight.gateway.main)
#   <image> healthcheck                              exit 0 iff the local gRPC health service says SERVING
#   <image> http-healthcheck                         exit 0 iff the gateway's /healthz answers 200
#   <image> <any other command> [args...]            exec it (e.g. `firstlight --help`, `sh`)
#
# `exec` keeps Python as PID 1, so SIGTERM reaches the service's graceful-shutdown handler.
set -eu

service="${1:-${FIRSTLIGHT_SERVICE:-}}"
[ "$#" -gt 0 ] && shift

case "$service" in
  ingestion|embedding|search|inference|training|curation|gateway)
    exec python -m "firstlight.${service}.main" "$@"
    ;;
  http-healthcheck)
    exec python -c "import sys,urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:${FIRSTLIGHT_HTTP_PORT:-8080}/healthz', timeout=3).status == 200 else 1)"
    ;;
  healthcheck)
    exec python - "${FIRSTLIGHT_GRPC_PORT:-50051}" <<'PY'
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

with grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}") as channel:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.RpcError as exc:
        sys.exit(f"health check failed: {exc.code().name}")
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
PY
    ;;
  "")
    echo "firstlight: name a service (ingestion, embedding, search, inference, training, curation) as the argument or in FIRSTLIGHT_SERVICE" >&2
    exit 64
    ;;
  *)
    exec "$service" "$@"
    ;;
esac
