"""The pixel facts the duplicate detectors compare, cut from one decode: the 6×6 tiny-image
descriptor (re-encodes, flips, colour shifts) and the 32×32 gray canvas (crops).

Ingestion computes them on the decode that validates an upload and stores them packed with the
input (1,169 bytes), so curation's health check reads them instead of fetching and decoding
every blob; curation computes them itself, with the same functions, for inputs stored before.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMB_SIZE = 6
CANVAS = 32
_VERSION = 1
_THUMB_BYTES = THUMB_SIZE * THUMB_SIZE * 4  # float32
PACKED_BYTES = 1 + _THUMB_BYTES + CANVAS * CANVAS

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def thumbnail(image: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """[2, size²] float32: the image's gray size×size thumbnail (box filter) with mean and scale
    removed, and the same of its mirror. Invariant to brightness/contrast changes and (through
    the mirror) to horizontal flips; JPEG artefacts average out."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32) @ _LUMA
    g = np.asarray(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).resize((size, size), Image.Resampling.BOX), np.float32)
    out = []
    for t in (g, g[:, ::-1]):
        v = (t - t.mean()).ravel()
        out.append(v / (np.linalg.norm(v) + 1e-6))
    return np.stack(out).astype(np.float32)


def canvas(image: np.ndarray) -> np.ndarray:
    """The 32×32 gray uint8 canvas of an RGB or gray uint8 image (what the crop check keeps)."""
    a = np.asarray(image, np.uint8)
    im = Image.fromarray(a if a.ndim == 2 else a[..., :3]).convert("L")
    return np.asarray(im.resize((CANVAS, CANVAS), Image.Resampling.BILINEAR), np.uint8)


def pack(image: np.ndarray) -> bytes:
    """Both signatures of an RGB uint8 image as stored bytes: a version byte, the descriptor's
    first row (the mirror row is its flip, so it is rebuilt, not stored), the canvas."""
    thumb = thumbnail(image)[0].astype("<f4")
    return bytes([_VERSION]) + thumb.tobytes() + canvas(image).tobytes()


def unpack(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(descriptor [2, 36] float32, canvas [32, 32] uint8) of :func:`pack`'s bytes; None for
    bytes of another length or version (the caller decodes the blob instead)."""
    if len(data) != PACKED_BYTES or data[0] != _VERSION:
        return None
    row = np.frombuffer(data, "<f4", THUMB_SIZE * THUMB_SIZE, 1).astype(np.float32)
    mirror = row.reshape(THUMB_SIZE, THUMB_SIZE)[:, ::-1].ravel()
    cvs = np.frombuffer(data, np.uint8, CANVAS * CANVAS, 1 + _THUMB_BYTES).reshape(CANVAS, CANVAS).copy()
    return np.stack([row, mirror]), cvs
