"""Decode once (issue 17): ingestion's validating decode of a large JPEG is handed to the
embedding worker as a preview blob named in ``inputs.ingested``; the worker's model input from
it equals its own decode of the original; old events without a preview still embed."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.embedding.worker import EmbeddingWorker
from firstlight.images import decode_image
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.media.decode import model_decode_side
from firstlight.media.preview import BACKBONE_INPUT
from firstlight.models.preprocess import to_model_input
from firstlight.v1 import events_pb2


def photo_jpeg(size: tuple[int, int] = (1600, 1200), tag: int = 0) -> bytes:
    img = Image.open(io.BytesIO(datasets.sample_photo("coffee"))).convert("RGB").resize(size)
    buf = io.BytesIO()
    exif = Image.Exif()
    if tag:
        exif[0x0112] = tag
        img = img.transpose(Image.Transpose.ROTATE_90)
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture
def core(tmp_path: Path) -> Ingestion:
    ing = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}")), LocalBlobStore(tmp_path / "blobs"), ImageLimits())
    ing.create_app("app")
    return ing


def ingested(core: Ingestion) -> list[events_pb2.InputIngested]:
    return [events_pb2.InputIngested.FromString(e.value) for _, e in core.store.outbox_batch(1000) if e.topic == "inputs.ingested"]


def test_backbone_input_size_is_the_backbone_s() -> None:
    from firstlight.models import backbone

    assert BACKBONE_INPUT == backbone.IMAGE_SIZE


def test_large_jpeg_gets_a_preview_small_images_do_not(core: Ingestion) -> None:
    small = io.BytesIO()
    Image.new("RGB", (300, 200), "red").save(small, "JPEG")
    core.post_inputs("app", [NewInput(photo_jpeg(tag=6), id="big"), NewInput(small.getvalue(), id="small")])
    big, little = ingested(core)
    assert not little.preview_uri
    assert big.preview_uri.endswith("/.preview-big")
    worker = EmbeddingWorker.__new__(EmbeddingWorker)  # only its blob access is exercised
    worker.blobs = core.blobs
    pixels = worker._preview(big, BACKBONE_INPUT)
    assert pixels is not None and pixels.size == (400, 300)  # upright (stored sideways 1200×1600), 1/4 scale
    own = decode_image(core.blobs.get(big.blob_uri), max_bytes=1 << 30, max_pixels=1 << 30, min_side=model_decode_side(BACKBONE_INPUT)).image
    assert np.array_equal(to_model_input(pixels), to_model_input(own))
    assert worker._preview(big, 640) is None  # a model needing more resolution decodes the original
    # Another app's event cannot read this app's preview (tenancy), and a missing one falls back.
    assert worker._preview(events_pb2.InputIngested(app_id="other", input_id="big", preview_uri=big.preview_uri), BACKBONE_INPUT) is None
    assert worker._preview(events_pb2.InputIngested(app_id="app", input_id="big"), BACKBONE_INPUT) is None
    core.delete_inputs("app", ["big", "small"])
    assert not list((core.blobs.root / "app").iterdir())  # original and preview both gone


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_large_heic_and_avif_get_a_preview_too(core: Ingestion, fmt: str) -> None:
    """HEVC/AV1 have no reduced decode: ingestion's full decode, box-reduced, is what the worker
    embeds from, so a phone's HEIC is decoded once."""
    from firstlight.media.formats import heif_available

    heif_available()  # pillow-heif's encoder
    img = Image.open(io.BytesIO(datasets.sample_photo("coffee"))).convert("RGB").resize((1024, 768))
    buf = io.BytesIO()
    img.save(buf, fmt, quality=80, **({"speed": 10} if fmt == "AVIF" else {"enc_params": {"preset": "ultrafast"}}))
    core.post_inputs("app", [NewInput(buf.getvalue(), id="phone")])
    (event,) = ingested(core)
    assert event.preview_uri.endswith("/.preview-phone")
    worker = EmbeddingWorker.__new__(EmbeddingWorker)
    worker.blobs = core.blobs
    pixels = worker._preview(event, BACKBONE_INPUT)
    assert pixels is not None and pixels.size == (512, 384)  # 1/2: the shorter side still >= 256
    own = decode_image(core.blobs.get(event.blob_uri), max_bytes=1 << 30, max_pixels=1 << 30, min_side=model_decode_side(BACKBONE_INPUT)).image
    assert np.array_equal(to_model_input(pixels), to_model_input(own))
    row = core.get_input("app", "phone")
    assert (row.width, row.height, row.format) == (1024, 768, fmt)
