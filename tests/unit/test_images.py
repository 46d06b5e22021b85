import io
from pathlib import Path

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


# -- ingestion's check without keeping pixels (issue 14, item 6) -----------------------------------

CORPUS = sorted((Path(__file__).parents[1] / "corpus" / "bad_inputs").iterdir())


def _verdict(fn, data: bytes):  # type: ignore[no-untyped-def]
    try:
        out = fn(data, max_bytes=2 << 20, max_pixels=40_000_000, label="x", max_side=16_384)
        return ("ok", out.width, out.height, out.format)
    except Exception as exc:  # noqa: BLE001
        return (type(exc).__name__,)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_check_image_gives_decode_images_verdict(path: Path) -> None:
    from firstlight.images import check_image

    data = path.read_bytes()
    assert _verdict(check_image, data) == _verdict(decode_image, data)


def test_check_image_on_large_jpegs_and_truncation() -> None:
    from firstlight.images import check_image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    assert check_image(data, max_bytes=8 << 20, max_pixels=40_000_000) == check_image(data, max_bytes=8 << 20, max_pixels=40_000_000)
    info = check_image(data, max_bytes=8 << 20, max_pixels=40_000_000)
    assert (info.width, info.height, info.format) == (1600, 1200, "JPEG")
    for cut in (len(data) // 2, len(data) - 200):
        with pytest.raises(InvalidArgument, match="truncated|corrupt"):  # noqa: RUF043
            check_image(data[:cut], max_bytes=8 << 20, max_pixels=40_000_000)


def test_decode_budget_bounds_concurrent_memory() -> None:
    import threading
    import time

    from firstlight.images import DecodeBudget, decode_memory

    assert decode_memory(8000, 5000, "JPEG") < decode_memory(8000, 5000, "PNG") // 40  # 1/64 of the pixels, + 1 MiB
    trims: list[int] = []
    budget = DecodeBudget(100, wait_s=0.2, trim=False)
    budget._trim = trims.append  # type: ignore[assignment]
    first = budget.acquire(60)
    with pytest.raises(ResourceExhausted, match="retry"):
        budget.acquire(60)  # would exceed the budget: waits, then gives up
    released = threading.Timer(0.05, budget.release, args=(first,))
    released.start()
    started = time.monotonic()
    second = budget.acquire(60)  # admitted once the first is released
    assert time.monotonic() - started < 0.2 and trims == [0]  # the burst's end trimmed the heap
    budget.release(second)
    big = budget.acquire(1000)  # larger than the budget: runs alone
    assert budget.in_use == 1000 and budget.peak == 1000
    budget.release(big)
