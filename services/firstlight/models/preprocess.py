"""Image geometry for the backbone: RGB, resize shorter side, center crop, uint8 HWC.

Decoding and validation of uploaded bytes happen in the services; normalisation to float happens
in the model (firstlight.models.backbone), so what travels to Triton is compact uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from firstlight.media.decode import model_decode_side
from firstlight.models.backbone import IMAGE_SIZE


def crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(resized width, resized height, left, top) of :func:`to_model_input` for an image of
    ``width``×``height``: the shorter side to round(size·256/224) (the ImageNet convention,
    256 then 224, scaled for other sizes), then the centre ``size``×``size`` crop."""
    scale = model_decode_side(size) / min(width, height)
    # max(size, ...): a very elongated image must still cover the crop on its short side.
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    return new_w, new_h, (new_w - size) // 2, (new_h - size) // 2


def to_model_input(img: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """RGB, shorter side resized to round(size*256/224) (bilinear), center crop -> uint8 [size,size,3]."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ValueError(f"empty image: {w}x{h}")
    new_w, new_h, left, top = crop_box(w, h, size)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    img = img.crop((left, top, left + size, top + size))
    out = np.asarray(img, dtype=np.uint8)
    if out.shape != (size, size, 3):  # defensive: PIL modes such as "RGBX" never reach here
        raise ValueError(f"unexpected crop shape {out.shape}")
    return out


def batch_from_images(images: Sequence[Image.Image], size: int = IMAGE_SIZE) -> np.ndarray:
    """Stack to_model_input() of each image -> uint8 [N,size,size,3] (N may be 0)."""
    batch = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        batch[i] = to_model_input(img, size)
    return batch
