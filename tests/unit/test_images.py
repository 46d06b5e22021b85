import io

import numpy as np
import pytest
from PIL import Image

from firstlight.errors import InvalidArgument, ResourceExhausted
from firstlight.images import decode_image

LIMITS = dict(max_bytes=1_000_000, max_pixels=4_000_000)


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def rgb(w: int = 64, h: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_common_formats_decode_to_rgb(fmt: str) -> None:
    out = decode_image(encode(rgb(), fmt), **LIMITS)
    assert (out.width, out.height) == (64, 48)
    assert out.image.mode == "RGB"
    assert out.format == fmt


def test_grayscale_and_rgba_become_rgb() -> None:
    for mode in ("L", "RGBA", "P"):
        assert decode_image(encode(rgb().convert(mode), "PNG"), **LIMITS).image.mode == "RGB"


def test_empty_bytes() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        decode_image(b"", **LIMITS)


def test_not_an_image() -> None:
    with pytest.raises(InvalidArgument, match="not a recognised image"):
        decode_image(b"%PDF-1.4 definitely not an image" * 10, **LIMITS)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(fmt: str) -> None:
    data = encode(rgb(256, 256), fmt)
    with pytest.raises(InvalidArgument, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], **LIMITS)


def test_over_byte_limit() -> None:
    with pytest.raises(ResourceExhausted, match="over the limit"):
        decode_image(b"\x89PNG" + b"0" * 2_000_000, **LIMITS)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 10,000 x 10,000 black PNG: a few KB on the wire, 300 MB decoded.
    bomb = encode(Image.new("L", (10_000, 10_000)), "PNG")
    assert len(bomb) < LIMITS["max_bytes"]
    with pytest.raises(ResourceExhausted, match="pixels"):
        decode_image(bomb, **LIMITS)


def test_longest_side_limit() -> None:
    # 20,000 x 1: 20,000 pixels pass the pixel limit; the side limit refuses it before decoding.
    strip = encode(Image.new("L", (20_000, 1)), "PNG")
    assert decode_image(strip, **LIMITS).width == 20_000
    with pytest.raises(ResourceExhausted, match="per side"):
        decode_image(strip, **LIMITS, max_side=16_384)
