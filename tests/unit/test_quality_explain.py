"""Grad-CAM through the backbone for a head on its embedding: the map's shape, range and
target, and the overlay PNG. The faithfulness figures (measured, not asserted: below the
issue's 2x on animal-mnist) are in docs/results/data_quality.md."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model():
    from firstlight.models import backbone

    return backbone.load_efficientnet()


def test_gradcam_map_and_overlay(model):
    from firstlight.curation.quality import explain

    rng = np.random.default_rng(0)
    W = rng.normal(size=(3, 1280)).astype(np.float32)
    b = np.zeros(3, np.float32)
    imgs = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    imgs[0, 20:60, 10:40] = 255  # a bright block
    sal, target = explain.gradcam(model, W, b, imgs)
    assert sal.shape == (2, 96, 96) and sal.dtype == np.float32
    assert float(sal.min()) >= 0.0 and float(sal.max()) <= 1.0 + 1e-6
    with torch.inference_mode():
        _, z = explain.head_logits(model, W, b, explain._prep(imgs, torch.device("cpu")))
    assert list(target) == z.argmax(1).tolist()
    _sal2, t2 = explain.gradcam(model, W, b, imgs, target=np.array([2, 2]))
    assert list(t2) == [2, 2]
    png = explain.overlay_png(imgs[0], sal[0])
    assert Image.open(io.BytesIO(png)).size == (96, 96)
    f = explain.faithfulness(model, W, b, imgs, grid=4)
    assert f.n == 2 and np.isfinite(f.drop_salient) and np.isfinite(f.drop_random)


def test_gradcam_plus_plus_and_blur_fill(model):
    from firstlight.curation.quality import explain

    rng = np.random.default_rng(1)
    W = rng.normal(size=(3, 1280)).astype(np.float32)
    b = np.zeros(3, np.float32)
    imgs = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    sal, _ = explain.gradcam(model, W, b, imgs, variant="gradcam++")
    assert sal.shape == (2, 64, 64) and float(sal.min()) >= 0.0 and float(sal.max()) <= 1.0 + 1e-6
    fills = explain._fills(imgs, "blur")
    assert fills.shape == imgs.shape and fills.std() < imgs.astype(np.float32).std()  # blur removes detail
    f = explain.faithfulness(model, W, b, imgs, fill="blur", variant="gradcam++", draws=2, smooth_random=True)
    assert f.n == 2 and np.isfinite(f.ratio)
    with pytest.raises(ValueError):
        explain.gradcam(model, W, b, imgs, variant="scorecam")
    with pytest.raises(ValueError):
        explain.faithfulness(model, W, b, imgs, fill="black")
