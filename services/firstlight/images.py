"""Decoding and validating untrusted image bytes. Pure: raises typed errors only.

Every entry point that accepts image bytes (PostInputs, StreamInputs, the ``inputs.submit``
topic, Predict, EmbedImages, SearchByImage) goes through :func:`decode_image`, so the same
input gets the same verdict everywhere."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from firstlight.errors import InvalidArgument, ResourceExhausted

if TYPE_CHECKING:
    from firstlight.config import ImageLimits

# We enforce our own pixel limit before decoding; PIL's own bomb check would raise a
# different exception type (or only warn) depending on how far over the limit an image is.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, fully loaded
    width: int
    height: int
    format: str


def _human_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, label: str = "image", max_side: int = 0) -> DecodedImage:
    """Decode ``data`` into an RGB image or raise InvalidArgument / ResourceExhausted."""
    if not data:
        raise InvalidArgument(f"{label} is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ResourceExhausted(
            f"{label} is {_human_bytes(len(data))}, over the limit of {_human_bytes(max_bytes)}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "UNKNOWN"
            width, height = img.size
            if width <= 0 or height <= 0:
                raise InvalidArgument(f"{label} has no pixels ({width}x{height})")
            if max_side and max(width, height) > max_side:
                raise ResourceExhausted(f"{label} is {width}x{height}, over the limit of {max_side:,} pixels per side")
            if width * height > max_pixels:
                raise ResourceExhausted(
                    f"{label} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
                )
            img.load()  # raises on truncated or corrupt data
            rgb = img.convert("RGB")
    except (InvalidArgument, ResourceExhausted):
        raise
    except UnidentifiedImageError:
        raise InvalidArgument(f"{label} is not a recognised image format ({len(data)} bytes)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(f"{label} is corrupt or truncated: {exc}") from None
    return DecodedImage(image=rgb, width=width, height=height, format=fmt)


def decode_batch(images: Sequence[bytes], limits: ImageLimits, label: str = "image") -> list[Image.Image]:
    """Decode a request's images, each checked like :func:`decode_image`, the count checked
    against ``limits.max_batch_size``."""
    if not images:
        raise InvalidArgument("no images given")
    if len(images) > limits.max_batch_size:
        raise ResourceExhausted(f"{len(images)} images, over the limit of {limits.max_batch_size}")
    return [
        decode_image(
            data, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels, label=f"{label} {n}", max_side=limits.max_image_side
        ).image
        for n, data in enumerate(images)
    ]
