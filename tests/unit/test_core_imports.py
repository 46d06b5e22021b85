"""The service cores (and their ports) load no transport: no grpc, Kafka client, Qdrant client,
Triton client, SQLAlchemy, generated ``firstlight.v1`` code or ``firstlight.messaging``, not even
indirectly. Checked in a fresh interpreter, where nothing else has loaded them already."""

from __future__ import annotations

import json
import subprocess
import sys

CORES = [
    "firstlight.ingestion.core", "firstlight.ingestion.ports",
    "firstlight.search.core", "firstlight.search.ports", "firstlight.search.indexing",
    "firstlight.embedding.core", "firstlight.embedding.ports",
    "firstlight.inference.core", "firstlight.inference.ports", "firstlight.inference.registry",
    "firstlight.auth.core", "firstlight.auth.ports",
]  # fmt: skip
TRANSPORT = ("grpc", "confluent_kafka", "aiokafka", "qdrant_client", "tritonclient", "sqlalchemy", "firstlight.v1", "firstlight.messaging")

PROBE = f"""
import importlib, json, sys
for name in {CORES!r}:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if any(m == t or m.startswith(t + ".") for t in {TRANSPORT!r}))))
"""


def test_cores_load_no_transport() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
