"""An image's EXIF orientation from its header alone, without decoding a pixel.

Used to find the stored photos that versions before the decode change embedded sideways or
mirrored (they ignored the tag; firstlight.media.decode applies it): those whose tag is 2-8.
The answer agrees with what :func:`firstlight.media.decode.exif_orientation` sees after a decode,
except for a PNG whose ``eXIf`` chunk comes after its pixels (the PNG spec puts it before them)."""

from __future__ import annotations

from PIL import Image

from firstlight.media.formats import open_image

#: Bytes of a blob read to find its orientation: a JPEG's EXIF segment (with its embedded
#: thumbnail) is at most 64 KiB and comes before the pixels with the other header segments (ICC
#: profile, MPF, tables). When they run past this the header is unreadable from the read, and the
#: whole blob is read (:func:`needs_whole_blob`): rare, and only costs I/O.
HEADER_BYTES = 128 * 1024

_ORIENTATION = 0x0112


def header_orientation(data: bytes) -> int | None:
    """The EXIF orientation (1-8; 1 when there is none or it is out of range, as the decode
    treats it) read from the header in ``data``, or None when the header cannot be read (not an
    image, or ``data`` cut before the header's end)."""
    try:
        with open_image(data) as img:
            if img.format == "PNG":
                # PngImageFile.getexif() decodes the pixels when no eXIf chunk came before them.
                raw = img.info.get("exif")
                if not raw:
                    return 1
                exif = Image.Exif()
                exif.load(raw)
                value = exif.get(_ORIENTATION, 1)
            else:
                value = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - Pillow raises many types on unreadable headers: "cannot tell"
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1  # a broken tag: the decode treats it as no orientation
    return value if 1 <= value <= 8 else 1


def needs_whole_blob(head: bytes, orientation: int | None) -> bool:
    """Whether a header read of ``HEADER_BYTES`` was too short to tell: unreadable, and the blob
    may go on past it."""
    return orientation is None and len(head) >= HEADER_BYTES


def is_rotated(orientation: int | None) -> bool:
    """A tag other than 1: the photo is stored turned or mirrored."""
    return orientation is not None and orientation != 1
