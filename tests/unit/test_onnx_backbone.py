"""ONNX Runtime backbone == torch backbone (the runtime check), and the decode checks that need
the model: a photo stored sideways with an EXIF tag embeds like the upright one."""

import io

import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.media.decode import decode_photo, model_decode_side
from firstlight.models import backbone
from firstlight.models.onnx_backbone import OrtBackbone, cached_onnx, onnx_file_name
from firstlight.models.preprocess import batch_from_images, to_model_input

LIMITS = dict(max_bytes=50_000_000, max_pixels=40_000_000)


@pytest.fixture(scope="module")
def models(tmp_path_factory):  # type: ignore[no-untyped-def]
    backbone.configure_torch_threads(1)
    path = cached_onnx(tmp_path_factory.mktemp("onnx"))
    return backbone.load_efficientnet(), OrtBackbone(path, threads=1)


def photos() -> list[Image.Image]:
    return [Image.open(io.BytesIO(datasets.sample_photo(n))).convert("RGB") for n in datasets.SAMPLE_PHOTOS]


def test_ort_matches_torch_on_the_same_input_tensor(models) -> None:  # type: ignore[no-untyped-def]
    torch_model, ort_model = models
    rng = np.random.default_rng(0)
    real = batch_from_images(photos())
    for batch in (real, rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8), real[:1]):
        e_t, p_t = backbone.embed_and_classify(torch_model, batch)
        e_o, p_o = ort_model.embed_and_classify(batch)
        assert e_o.shape == e_t.shape and p_o.shape == p_t.shape and e_o.dtype == np.float32
        assert np.abs(e_o - e_t).max() < 1e-5
        assert np.abs(p_o - p_t).max() < 1e-5
        assert (p_o.argmax(1) == p_t.argmax(1)).all()


def test_chunked_batches_give_the_same_rows(models) -> None:  # type: ignore[no-untyped-def]
    _, ort_model = models
    batch = np.random.default_rng(1).integers(0, 256, (11, 224, 224, 3), dtype=np.uint8)
    whole = ort_model.embed_and_classify(batch, max_chunk=None)[0]
    chunked = ort_model.embed_and_classify(batch, max_chunk=4)[0]
    assert np.abs(whole - chunked).max() < 1e-5


def test_export_is_cached_by_a_service_built_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = onnx_file_name()
    assert name.startswith(backbone.BACKBONE_VERSION) and name.endswith(".opset17.onnx") and "/" not in name
    first = cached_onnx(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cached_onnx(tmp_path) == first and first.stat().st_mtime_ns == stamp  # not exported twice
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]


def test_exif_rotated_photo_embeds_like_the_upright_one(models) -> None:  # type: ignore[no-untyped-def]
    _, ort_model = models
    upright = photos()[0].resize((1200, 800))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": stored rotated 90° counter-clockwise
    buf = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=92, exif=exif.tobytes())
    side = model_decode_side(224)
    as_stored = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")  # what ignoring the tag sees
    vectors = ort_model.embed_and_classify(
        np.stack([
            to_model_input(upright),
            to_model_input(decode_photo(buf.getvalue(), min_side=side, **LIMITS).image),
            to_model_input(as_stored),
        ])
    )[0]  # fmt: skip
    upright_cos, sideways_cos = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert upright_cos > 0.99
    assert upright_cos - sideways_cos > 0.05
