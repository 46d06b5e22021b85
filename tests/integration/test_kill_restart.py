"""At-least-once with no loss: kill (SIGKILL) the embedding and then the search service in the
middle of a 1,000-image upload, start them again, and every accepted input becomes searchable
exactly once."""

from __future__ import annotations

import threading

import pytest

from firstlight import datasets
from firstlight.sdk import Firstlight, UploadItem, UploadReport

from .helpers import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "chaos"
N_PER_CLASS = 100  # 1,000 images


def test_kill_embedding_and_search_mid_upload(stack, client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    client.create_app(APP)
    items = [UploadItem(data, [name], id=i) for i, name, data in datasets.animal_mnist(N_PER_CLASS, seed=7)]
    assert len(items) == 1000
    result: dict[str, UploadReport] = {}
    uploader = threading.Thread(target=lambda: result.setdefault("report", client.upload(APP, items, chunk=100)))
    uploader.start()

    eventually(lambda: client.indexed_count(APP) >= 100, timeout=180, what="first 100 indexed")
    stack.kill_service("embedding")  # SIGKILL: no graceful shutdown, in-flight batch uncommitted
    stack.start_service("embedding")
    eventually(lambda: client.indexed_count(APP) >= 400, timeout=240, what="400 indexed after embedding restart")
    stack.kill_service("search")
    stack.start_service("search")
    uploader.join(timeout=300)

    report = result["report"]
    assert not report.failures and len(report.input_ids) == 1000
    client.wait_indexed(APP, 1000, timeout=400)
    # Exactly once in effect: redelivered events upserted the same deterministic points.
    assert client.indexed_count(APP) == 1000
    for item in items[::97]:
        hits = client.search_by_image(APP, input_id=item.id, top_k=1).hits
        assert hits[0].input_id == item.id and list(hits[0].concepts) == item.concepts
