"""Settings of a gateway under test: peers at addresses nothing listens on (the tests replace
the clients with fakes), blobs under the test's folder, a fixed session secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firstlight.config import GatewaySettings


def gateway_settings(tmp_path: Path, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "ingestion_addr": "x:1",
        "search_addr": "x:2",
        "inference_addr": "x:3",
        "training_addr": "x:4",
        "curation_addr": "x:5",
        "blob_url": f"file://{tmp_path}",
        "session_secret": "s" * 40,
    }
    return GatewaySettings(**{**values, **overrides})
