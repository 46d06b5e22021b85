"""The upgrade path for photos stored with an EXIF orientation (docs/results/photos.md, "Decode
equivalence"), through the real stack: an app whose rotated photo carries the vector an older
version computed (sideways pixels) gets it replaced by ``ReembedInputs(only_rotated)`` with the
embedding of the upright photo, and nothing else is touched."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.messaging import topics
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.v1 import events_pb2, search_pb2

from .helpers import eventually
from .kafka_io import find_record, produce

pytestmark = pytest.mark.integration

APP = "reembed"


def png(pixels: Image.Image) -> bytes:
    buf = io.BytesIO()
    pixels.save(buf, "PNG")
    return buf.getvalue()


def jpeg(pixels: Image.Image, orientation: int = 0) -> bytes:
    buf = io.BytesIO()
    extra = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    pixels.save(buf, "JPEG", quality=92, **extra)
    return buf.getvalue()


def vectors(client: Firstlight, ids: list[str]) -> dict[str, np.ndarray]:
    resp = client.search.GetVectors(search_pb2.GetVectorsRequest(app_id=APP, input_ids=ids), timeout=30)
    return {v.input_id: np.asarray(v.vector, dtype=np.float64) for v in resp.vectors}


def cosine(a: np.ndarray, b: np.ndarray | list[float]) -> float:
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_rotated_photos_are_reembedded_upright(stack, client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    cat = Image.open(io.BytesIO(datasets.sample_photo("chelsea"))).convert("RGB")
    # A phone's photo: the sensor's pixels stored turned, with tag 6 saying "turn 90° clockwise".
    sideways = cat.transpose(Image.Transpose.ROTATE_90)
    turned = jpeg(sideways, 6)
    upright = jpeg(Image.open(io.BytesIO(datasets.sample_photo("coffee"))).convert("RGB"), 1)
    client.create_app(APP)
    astronaut = Image.open(io.BytesIO(datasets.sample_photo("astronaut"))).convert("RGB")
    report = client.upload(APP, [UploadItem(turned, id="turned"), UploadItem(upright, id="upright"), UploadItem(png(astronaut), id="plain")])
    assert not report.failures
    client.wait_indexed(APP, 3, timeout=120)

    fresh_upright, fresh_sideways = client.embed_images([turned, jpeg(sideways)])  # what the decode gives now; what old versions saw
    assert cosine(vectors(client, ["turned"])["turned"], fresh_upright) > 0.999  # uploads today are embedded upright
    moved = cosine(np.asarray(fresh_upright), fresh_sideways)
    assert moved < 0.99  # turning the photo moves its embedding far more than any decode difference

    # The index as an older version left it: the sideways vector under the input's point (an
    # embeddings.computed record as the embedding service signs it, of the same generation).
    bootstrap = stack.addresses["kafka"]
    record = find_record(bootstrap, topics.EMBEDDINGS_COMPUTED, lambda r: r.key == topics.event_key(APP, "turned"), timeout=60)
    legacy = events_pb2.EmbeddingComputed.FromString(record.value)
    legacy.header.idempotency_key = f"legacy-{uuid.uuid4().hex}"
    del legacy.vector[:]
    legacy.vector.extend(fresh_sideways)
    headers = {"content-type": "application/x-protobuf", "message-type": "firstlight.v1.EmbeddingComputed"}
    produce(bootstrap, topics.EMBEDDINGS_COMPUTED, record.key, legacy.SerializeToString(), headers, sign_with=stack.event_keys)
    eventually(lambda: cosine(vectors(client, ["turned"])["turned"], fresh_sideways) > 0.999, timeout=60, what="the legacy vector indexed")
    before = vectors(client, ["turned", "upright", "plain"])

    done = client.reembed(APP, only_rotated=True, page_size=2)  # two pages
    assert done.queued_ids == ["turned"] and done.scanned == done.total == 3 and not done.unreadable_ids
    client.wait_reindexed(APP, timeout=120)
    after = vectors(client, ["turned", "upright", "plain"])  # the backlog drained: search has indexed it
    assert cosine(after["turned"], fresh_upright) > 0.999 and cosine(after["turned"], fresh_sideways) == pytest.approx(moved, abs=1e-3)
    for other in ("upright", "plain"):
        assert np.array_equal(after[other], before[other])

    # Again, by id: the same point is replaced, nothing is added.
    assert client.reembed(APP, ["turned"]).queued_ids == ["turned"]
    client.wait_reindexed(APP, timeout=120)
    hits = client.search_by_image(APP, input_id="turned", top_k=10).hits
    assert sorted(h.input_id for h in hits) == ["plain", "turned", "upright"] and client.indexed_count(APP) == 3

    for bad, code in (
        (dict(ids=["turned"], only_rotated=True), "INVALID_ARGUMENT"),
        (dict(ids=["nope"]), "NOT_FOUND"),
        (dict(ids=["bad/id"]), "INVALID_ARGUMENT"),
    ):
        with pytest.raises(FirstlightError) as refused:
            client.reembed(APP, **bad)  # type: ignore[arg-type]
        assert refused.value.code.name == code
