"""The fast forms in firstlight.media.image_metrics against their textbook definitions."""

from __future__ import annotations

import numpy as np
import pytest

from firstlight.media import image_metrics


def _correlate3(g: np.ndarray, k: np.ndarray) -> np.ndarray:
    h, w = g.shape
    return sum(k[dy, dx] * g[dy : dy + h - 2, dx : dx + w - 2] for dy in range(3) for dx in range(3))


@pytest.mark.parametrize("seed", range(3))
def test_blur_noise_saturation_match_the_3x3_kernels_and_hsv(seed: int) -> None:
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.integers(0, 256, (20, 26, 3)), np.ones((6, 6, 1)))  # blocks, then noise
    rgb = np.clip(smooth + rng.normal(0, 9, smooth.shape), 0, 255).astype(np.uint8)
    q = image_metrics.image_quality(rgb)
    gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    laplace = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)
    immerkaer = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], float)
    h, w = gray.shape
    assert q.blur == pytest.approx(_correlate3(gray, laplace).var(), rel=1e-5)
    assert q.noise == pytest.approx(np.sqrt(np.pi / 2) / (6 * (w - 2) * (h - 2)) * np.abs(_correlate3(gray, immerkaer)).sum(), rel=1e-5)
    f = rgb.astype(np.float64)
    mx, mn = f.max(-1), f.min(-1)
    assert q.saturation == pytest.approx(np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0).mean(), rel=1e-6)
    assert q.brightness == pytest.approx(gray.mean() / 255, rel=1e-5) and q.contrast == pytest.approx(gray.std() / 255, rel=1e-5)
    assert not q.grayscale and image_metrics.image_quality(np.repeat(rgb[..., :1], 3, axis=-1)).grayscale
