"""Opening image bytes with every decoder this product ships: Pillow's own formats (AVIF among
them since Pillow 11) and HEIC/HEIF (every iPhone photo) through pillow-heif, a wheel with
libheif + libde265 inside.

pillow-heif is a Pillow plugin: registered once per process, it serves every ``Image.open``.
Registration is lazy (the import costs ~60 ms, and a process that never opens an image should
not pay it) and happens here only, in :func:`open_image`, which every decode path calls.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

from PIL import Image

#: ISO-BMFF brands of the HEIF family (the ``ftyp`` box at offset 4): HEIC stills and
#: sequences, generic HEIF (mif1/msf1) and AVIF.
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"avif", b"avis"}

_lock = threading.Lock()
_heif: bool | None = None  # None: not tried yet; False: the wheel is missing


def heif_brand(data: bytes) -> str | None:
    """The HEIF-family brand of ``data`` ('heic', 'avif', 'mif1', ...), or None."""
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        return data[8:12].decode("ascii")
    return None


def heif_available() -> bool:
    """Register pillow-heif's opener (once per process); False when the wheel is missing."""
    global _heif
    if _heif is None:
        with _lock:
            if _heif is None:
                try:
                    import pillow_heif
                except ImportError:
                    _heif = False
                else:
                    # The image's own pixels only: never an encoder's embedded thumbnail (a
                    # draft() would pick one), and no depth or auxiliary images parsed.
                    pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
                    _heif = True
    return _heif


def open_image(data: bytes | Path) -> Image.Image:
    """``Image.open`` (header only, lazy) with the HEIF decoder registered."""
    heif_available()
    return Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
