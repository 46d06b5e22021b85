"""Issue 15's boundaries, checked by what an import loads: the curation process loads no other
service's code (it talks to them through firstlight.clients), and its core loads no transport."""

from __future__ import annotations

import subprocess
import sys

TRANSPORT = ("grpc", "confluent_kafka", "aiokafka", "kafka", "qdrant_client", "tritonclient")
# (firstlight.hosting.keys is loaded by every service: the shared runtime's interceptor uses its key model)
SERVICES = ("training", "inference", "ingestion", "search", "embedding", "gateway")


def _loaded(module: str) -> list[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    return out.split()


def test_the_curation_process_loads_no_other_services_code() -> None:
    loaded = _loaded("firstlight.curation.main")
    assert not [m for m in loaded if m.split(".")[:2] in [["firstlight", s] for s in SERVICES]]


def test_the_curation_core_loads_no_transport() -> None:
    loaded = _loaded("firstlight.curation.core, firstlight.curation.stream, firstlight.curation.ports")
    assert not [m for m in loaded if m.split(".")[0] in TRANSPORT or m.startswith("firstlight.v1")]
