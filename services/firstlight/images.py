"""Decoding and validating untrusted image bytes. Pure: raises typed errors only.

Every entry point that accepts image bytes (PostInputs, StreamInputs, the ``inputs.submit``
topic, Predict, EmbedImages, SearchByImage) goes through :func:`decode_image`, so the same
input gets the same verdict everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from firstlight.errors import InvalidArgument, ResourceExhausted
from firstlight.media.checks import _decoding, _human_bytes, _open_checked
from firstlight.media.decode import check_mode, decode_photo
from firstlight.media.formats import open_image

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


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, label: str = "image", max_side: int = 0, min_side: int = 0) -> DecodedImage:
    """Decode ``data`` into an upright sRGB RGB image or raise InvalidArgument / ResourceExhausted.
    With ``min_side``, a JPEG is decoded at the smallest DCT scale that keeps its shorter side
    >= ``min_side`` (firstlight.media.decode: ~6x less CPU on a 12 MP photo)."""
    photo = decode_photo(data, max_bytes=max_bytes, max_pixels=max_pixels, min_side=min_side, label=label, max_side=max_side)
    return DecodedImage(image=photo.image, width=photo.width, height=photo.height, format=photo.format)


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str


#: JPEGs are checked decoded at 1/8 scale (libjpeg's DCT scaling): every coefficient is still
#: entropy-decoded, so truncated or corrupt data fails as in a full decode, with 1/64 of the memory.
DRAFT_SCALE = 8


def check_image(data: bytes, *, max_bytes: int, max_pixels: int, label: str = "image", max_side: int = 0) -> ImageInfo:
    """Validate ``data`` as :func:`decode_image` does without keeping the pixels (ingestion
    stores the original bytes): size, format, and a complete decode — of a JPEG at 1/8 scale."""

    def body() -> ImageInfo:
        img = _open_checked(data, max_bytes=max_bytes, max_pixels=max_pixels, label=label, max_side=max_side)
        fmt, (width, height) = img.format or "UNKNOWN", img.size
        if fmt in ("JPEG", "MPO"):
            img.draft(img.mode, (max(1, width // DRAFT_SCALE), max(1, height // DRAFT_SCALE)))
        img.load()  # raises on truncated or corrupt data
        check_mode(img, label)  # the embedding worker could not use it: refused here, by name
        img.close()
        return ImageInfo(width, height, fmt)

    return _decoding(label, data, body)


def decode_memory(width: int, height: int, fmt: str) -> int:
    """Bytes :func:`check_image` holds while it decodes such an image (RGBA worst case)."""
    pixels = width * height
    if fmt in ("JPEG", "MPO"):
        pixels = max(1, width // DRAFT_SCALE) * max(1, height // DRAFT_SCALE)
    return pixels * 4 + (1 << 20)


def image_header(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, format) from the header alone; None if it cannot be read (the full check
    reports why)."""
    try:
        with open_image(data) as img:
            return img.size[0], img.size[1], img.format or "UNKNOWN"
    except Exception:  # noqa: BLE001 - any unreadable header: check_image gives the verdict
        return None


class DecodeBudget:
    """Bounds the memory concurrent image checks hold (ingestion's burst of large uploads):
    a check waits until its estimated bytes fit in ``budget_bytes`` (one check larger than the
    budget runs alone), at most ``wait_s``, then fails with RESOURCE_EXHAUSTED. When the last
    check of a burst ends, freed heap goes back to the OS (glibc ``malloc_trim``): without it
    a burst left the process hundreds of MB above its baseline."""

    def __init__(self, budget_bytes: int, wait_s: float = 30.0, trim: bool = True) -> None:
        import threading

        self.budget_bytes = budget_bytes
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0
        self._cond = threading.Condition()
        self._trim = _malloc_trim() if trim else None

    def acquire(self, weight: int, label: str = "image") -> int:
        import time

        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while self.in_use and self.in_use + weight > self.budget_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResourceExhausted(
                        f"{label}: the server is decoding {_human_bytes(self.in_use)} of images (budget {_human_bytes(self.budget_bytes)}); retry shortly"
                    )
                self._cond.wait(left)
            self.in_use += weight
            self.peak = max(self.peak, self.in_use)
        return weight

    def release(self, weight: int) -> None:
        with self._cond:
            self.in_use -= weight
            idle = self.in_use == 0
            self._cond.notify_all()
        if idle and self._trim is not None:
            self._trim(0)


def _malloc_trim():  # type: ignore[no-untyped-def]
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def decode_batch(images: Sequence[bytes], limits: ImageLimits, label: str = "image", min_side: int = 0) -> list[Image.Image]:
    """Decode a request's images, each checked like :func:`decode_image` (at ``min_side``), the
    count checked against ``limits.max_batch_size``."""
    if not images:
        raise InvalidArgument("no images given")
    if len(images) > limits.max_batch_size:
        raise ResourceExhausted(f"{len(images)} images, over the limit of {limits.max_batch_size}")
    return [
        decode_image(
            data, max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels, label=f"{label} {n}",
            max_side=limits.max_image_side, min_side=min_side,
        ).image
        for n, data in enumerate(images)
    ]  # fmt: skip
