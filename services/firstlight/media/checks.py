"""The checks every decode of untrusted bytes starts with (size limits before any pixel is
decoded) and the one mapping of Pillow's failures to typed errors: firstlight.images and
firstlight.media.decode share them, so the same input gets the same verdict everywhere."""

from __future__ import annotations

import warnings

from PIL import Image, UnidentifiedImageError

from firstlight.errors import InvalidArgument, ResourceExhausted
from firstlight.media.formats import heif_available, heif_brand, open_image

# We enforce our own pixel limit before decoding; PIL's own bomb check would raise a
# different exception type (or only warn) depending on how far over the limit an image is.
Image.MAX_IMAGE_PIXELS = None


def _human_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def _open_checked(data: bytes, *, max_bytes: int, max_pixels: int, label: str, max_side: int) -> Image.Image:
    """Open ``data`` (header only) and apply the size limits, before any pixel is decoded."""
    if not data:
        raise InvalidArgument(f"{label} is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ResourceExhausted(f"{label} is {_human_bytes(len(data))}, over the limit of {_human_bytes(max_bytes)}")
    img = open_image(data)  # the header only: HEIF and AVIF give their size before any decode too
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"{label} has no pixels ({width}x{height})")
    if max_side and max(width, height) > max_side:
        raise ResourceExhausted(f"{label} is {width}x{height}, over the limit of {max_side:,} pixels per side")
    if width * height > max_pixels:
        raise ResourceExhausted(f"{label} is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}")
    return img


def _decoding(label: str, data: bytes, body):  # type: ignore[no-untyped-def]
    """Run ``body()`` mapping PIL's failures to InvalidArgument (the same verdicts everywhere)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return body()
    except (InvalidArgument, ResourceExhausted):
        raise
    except UnidentifiedImageError:
        brand = heif_brand(data)
        if brand is not None and not heif_available() and brand not in ("avif", "avis"):
            raise InvalidArgument(f"{label} is a HEIF image ({brand}) and this server has no HEIF decoder (pillow-heif); send JPEG, PNG or WebP") from None
        if brand is not None:  # the container says HEIF/AVIF but no decoder could read it
            raise InvalidArgument(
                f"{label} is corrupt or truncated (or in a coding no decoder here has): a {brand} (HEIF-family) file of {len(data)} bytes none could read"
            ) from None
        raise InvalidArgument(f"{label} is not a recognised image format ({len(data)} bytes)") from None
    # RuntimeError: Pillow's AVIF reader (libavif) raises it for undecodable data; EOFError: a
    # stream that ends early in some plugins (pillow-heif re-raises it).
    except (OSError, ValueError, SyntaxError, RuntimeError, EOFError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidArgument(f"{label} is corrupt or truncated: {exc}") from None
