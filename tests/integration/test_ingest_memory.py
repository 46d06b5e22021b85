"""Ingestion's memory after a burst of large uploads (issue 14, item 6), through the real gRPC
server (bench.ingest_memory: its own broker and ingestion process, no Triton): 30 concurrent
40 MP JPEG uploads peaked at 2.0 GB and left 731 MB (9× the baseline) before the fix."""

from __future__ import annotations

import pytest

from bench import ingest_memory

pytestmark = pytest.mark.integration


def test_memory_after_a_burst_of_40_megapixel_uploads() -> None:
    result = ingest_memory.run(uploads=30, after_s=5, log=lambda *_: None)
    assert result["ok"] == 30, result
    assert result["peak_mb"] < 1024, result  # measured 283 MB (was 2,012)
    assert result["after_5s_mb"] < 2 * result["baseline_mb"], result  # measured 1.5x (was 9x)
