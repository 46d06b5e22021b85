"""Small test images made in memory."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png(seed: int) -> bytes:
    """A 16x16 PNG of noise: a different image (and checksum) per seed."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()
