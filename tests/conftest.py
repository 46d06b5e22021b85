"""Shared fixtures. Integration tests use one real local stack per session: a tansu Kafka
broker, the bundled tritonserver, and the four services as separate processes on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# One intra-op thread per Triton backbone instance (the stack runs one instance per core).
os.environ.setdefault("FIRSTLIGHT_TORCH_THREADS", "1")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator["LocalStack"]:  # type: ignore[name-defined]  # noqa: F821
    from firstlight.stack import LocalStack

    data_dir: Path = tmp_path_factory.mktemp("stack")
    # A small image limit lets the bad-input tests cross it without 20 MB payloads.
    s = LocalStack(
        data_dir,
        extra_env={
            "FIRSTLIGHT_MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
            # Vector-store outage switch for tests/integration/test_faults.py (absent: no fault).
            "FIRSTLIGHT_VECTOR_STORE_FAULT_FILE": str(data_dir / "faults" / "vector-store-down"),
        },
    )
    try:
        s.start()
    except Exception:
        for log in sorted((data_dir / "logs").glob("*.log")):
            print(f"==== {log.name}\n{log.read_text()[-3000:]}")
        s.stop()
        raise
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(stack):  # type: ignore[no-untyped-def]
    from firstlight.sdk import Firstlight

    a = stack.addresses
    with Firstlight.from_addresses(a, timeout_s=60) as c:
        yield c
