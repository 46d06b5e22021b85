"""Generates the hostile-input corpus in ``tests/corpus/bad_inputs/``.

    python tests/corpus/make_bad_inputs.py          # (re)writes the small, committed files

Small files are committed (each under 8 KiB, deterministic: rerunning reproduces them byte for
byte). The large ones -- a 100-megapixel image and a decompression bomb -- are written at test
time by :func:`write_large` into a temporary folder, never committed.

Every file is named ``<case>.<ext>``; ``EXPECTED`` says what every image entry point
(PostInputs, StreamInputs, Predict, SearchByImage, EmbedImages) must answer for it, with words
the status message must contain. The corpus test (tests/integration/test_bad_input.py) reads it.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "bad_inputs"

#: case -> (status name, words in the message). "OK" = accepted (odd but valid images).
EXPECTED: dict[str, tuple[str, str]] = {
    "zero_bytes": ("INVALID_ARGUMENT", "empty"),
    "truncated_jpeg": ("INVALID_ARGUMENT", "truncated"),
    "truncated_png": ("INVALID_ARGUMENT", "truncated"),
    "header_only_png": ("INVALID_ARGUMENT", ""),
    "corrupt_png_crc": ("INVALID_ARGUMENT", "corrupt"),
    "zero_by_zero_png": ("INVALID_ARGUMENT", ""),
    "text_file": ("INVALID_ARGUMENT", "not a recognised image"),
    "pdf_document": ("INVALID_ARGUMENT", "not a recognised image"),
    "html_page": ("INVALID_ARGUMENT", "not a recognised image"),
    "svg_image": ("INVALID_ARGUMENT", "not a recognised image"),
    "random_bytes": ("INVALID_ARGUMENT", "not a recognised image"),
    "gif_magic_only": ("INVALID_ARGUMENT", ""),
    "png_claims_100k_by_100k": ("RESOURCE_EXHAUSTED", "pixels"),
    "jpeg_claims_65k_by_65k": ("RESOURCE_EXHAUSTED", "pixels"),
    # Valid, if unusual: accepted everywhere (first frame, converted to RGB).
    "animated_gif": ("OK", ""),
    "one_pixel_png": ("OK", ""),
    "grayscale_16bit_png": ("OK", ""),
    "cmyk_jpeg": ("OK", ""),
    "palette_with_alpha_png": ("OK", ""),
    "extreme_aspect_png": ("OK", ""),
    # Written at test time (write_large).
    "hundred_megapixel_png": ("RESOURCE_EXHAUSTED", "pixels"),
    "decompression_bomb_png": ("RESOURCE_EXHAUSTED", "pixels"),
}
LARGE = {"hundred_megapixel_png", "decompression_bomb_png"}

#: Concept names for PostInputs / PostAnnotations: (name, status, words).
CONCEPT_NAMES: list[tuple[str, str, str]] = [
    ("猫 ünïcødé 🐈", "OK", ""),
    ("اللغة العربية", "OK", ""),
    ("x" * 1000, "INVALID_ARGUMENT", "characters"),
    ("", "INVALID_ARGUMENT", "empty"),
    ("   ", "INVALID_ARGUMENT", "empty"),
    ("bad\x00name", "INVALID_ARGUMENT", "control"),
    ("line\nbreak", "INVALID_ARGUMENT", "control"),
    ("\u202eright-to-left override", "INVALID_ARGUMENT", "control"),
]


def _png(array: np.ndarray, **kw) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG", **kw)
    return buf.getvalue()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR says width x height (8-bit RGB), with ``idat`` as its only data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat or zlib.compress(b"\x00" * 16)) + _chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 frame header is patched to claim width x height."""
    buf = io.BytesIO()
    Image.fromarray(_noise(16, 16, 5)).save(buf, "JPEG", quality=80)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def small_cases() -> dict[str, tuple[str, bytes]]:
    """case -> (extension, bytes) of every committed file."""
    jpeg = io.BytesIO()
    Image.fromarray(_noise(64, 64, 1)).save(jpeg, "JPEG", quality=90)
    png = _png(_noise(40, 40, 2))
    header_only = png[: png.index(b"IDAT") - 4]
    bad_crc = bytearray(png)
    bad_crc[png.index(b"IDAT") + 10] ^= 0xFF  # flips a data byte: zlib/CRC mismatch
    frames = [Image.fromarray(_noise(24, 24, s)) for s in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    cmyk = io.BytesIO()
    Image.fromarray(_noise(20, 20, 4)).convert("CMYK").save(cmyk, "JPEG")
    gray16 = io.BytesIO()
    Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).save(gray16, "PNG")
    palette = Image.fromarray(_noise(16, 16, 6)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.info["transparency"] = 0
    pal = io.BytesIO()
    palette.save(pal, "PNG")
    return {
        "zero_bytes": ("bin", b""),
        "truncated_jpeg": ("jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2]),
        "truncated_png": ("png", png[: len(png) // 2]),
        "header_only_png": ("png", header_only),
        "corrupt_png_crc": ("png", bytes(bad_crc)),
        "zero_by_zero_png": ("png", _png_with_header(0, 0)),
        "text_file": ("txt", b"just some text, not an image\n" * 10),
        "pdf_document": (
            "pdf",
            b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n",
        ),
        "html_page": ("html", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>\n"),
        "svg_image": ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>\n'),
        "random_bytes": ("bin", np.random.default_rng(7).integers(0, 256, 2048, dtype=np.uint8).tobytes()),
        "gif_magic_only": ("gif", b"GIF89a"),
        "png_claims_100k_by_100k": ("png", _png_with_header(100_000, 100_000)),
        "jpeg_claims_65k_by_65k": ("jpg", _jpeg_claiming(65_000, 65_000)),
        "animated_gif": ("gif", gif.getvalue()),
        "one_pixel_png": ("png", _png(_noise(1, 1, 3))),
        "grayscale_16bit_png": ("png", gray16.getvalue()),
        "cmyk_jpeg": ("jpg", cmyk.getvalue()),
        "palette_with_alpha_png": ("png", pal.getvalue()),
        "extreme_aspect_png": ("png", _png(np.zeros((1, 2000, 3), np.uint8))),
    }


def write_small(folder: Path = CORPUS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for case, (ext, data) in small_cases().items():
        path = folder / f"{case}.{ext}"
        path.write_bytes(data)
        written.append(path)
    return written


def flat_png(width: int, height: int, bit_depth: int = 8, value: int = 0) -> bytes:
    """A valid greyscale PNG of one flat value, compressed row block by row block (never the
    whole raster in memory): the cheap way to make huge-but-small-file images."""
    row = b"\x00" + bytes([value]) * ((width * bit_depth + 7) // 8)  # filter type 0 + pixels
    block = 256
    z = zlib.compressobj(9)
    parts = [z.compress(row * block) for _ in range(height // block)]
    parts += [z.compress(row * (height % block)), z.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def write_large(folder: Path) -> list[Path]:
    """The two big cases, into ``folder`` (a temporary directory at test time)."""
    folder.mkdir(parents=True, exist_ok=True)
    # 10,000 x 10,000 = 100 MP: ~100 KB of PNG, 300 MB once decoded to RGB.
    big = folder / "hundred_megapixel_png.png"
    big.write_bytes(flat_png(10_000, 10_000, 8, 128))
    # 30,000 x 30,000 at 1 bit per pixel: ~110 KB of file, 900 MP, 2.7 GB as RGB.
    bomb = folder / "decompression_bomb_png.png"
    bomb.write_bytes(flat_png(30_000, 30_000, 1, 0))
    return [big, bomb]


def load(folder: Path = CORPUS, large_folder: Path | None = None) -> dict[str, bytes]:
    """case -> bytes, for every case in EXPECTED that exists in the folders given."""
    out: dict[str, bytes] = {}
    for path in sorted(folder.iterdir()) + (sorted(large_folder.iterdir()) if large_folder else []):
        case = path.name.split(".")[0]
        if case in EXPECTED:
            out[case] = path.read_bytes()
    return out


if __name__ == "__main__":
    for p in write_small(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS):
        print(f"{p.stat().st_size:>7} {p}")
