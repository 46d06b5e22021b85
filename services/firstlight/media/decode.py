"""Decode an upload once, small, upright and in sRGB: the pixels the model and the thumbnail need.

Measured on a 12 MP JPEG (q90, 2.7 MB; docs/results/photos.md): Pillow's full decode + resize
to 256 px took 174 ms; Pillow's JPEG draft mode (libjpeg-turbo's DCT-domain 1/2, 1/4, 1/8
scaling) 28-32 ms; simplejpeg (a libjpeg-turbo binding wheel) at the same scale 26 ms and at
full size 42-51 ms. Draft mode is within noise of the fastest decoder and keeps one code path
for every format (EXIF, ICC, CMYK, MPO), so no second JPEG library is added.

HEIC/HEIF (pillow-heif: libheif + libde265) and AVIF (Pillow's own, libavif) have no reduced
decode: they are decoded in full, then box-reduced (``Image.reduce``) by the factor a JPEG's
draft would use, so the model input, the thumbnail and ingestion's stored preview are as small
as a JPEG's and the embedding worker does not decode the HEVC/AV1 stream a second time.

What this module guarantees for any accepted image:
* **orientation**: the EXIF orientation tag is applied (a phone photo stored sideways with
  tag 6 becomes upright before anything is embedded or thumbnailed). HEIF and AVIF store
  rotation and mirroring as ``irot``/``imir`` boxes, which win over any EXIF tag (the HEIF
  spec; browsers do the same): libheif applies them while decoding and pillow-heif resets the
  EXIF tag to 1, so nothing is rotated twice; Pillow's AVIF reader turns them into the EXIF
  tag (and overwrites a contradicting one), which the step above applies;
* **colour**: RGB 8-bit in sRGB. An embedded ICC profile (Display P3 from phones, Adobe RGB,
  CMYK press profiles) is converted to sRGB; an unreadable profile is ignored, as browsers do;
  CMYK without a profile uses Pillow's naive conversion; 16-bit greyscale is scaled (not
  clipped) to 8 bits (10/12-bit HEIF and AVIF colour come out of their decoders as 8 bits);
  transparency is composited over white (dropping alpha exposes whatever colour the
  transparent pixels happen to hold, often black). A HEIF colour space given only as ``nclx``
  code points (no ICC profile; e.g. Display P3) is converted to sRGB primaries when it is SDR
  with a D65 white, else read as is; Pillow's AVIF reader does not expose nclx, so an AVIF
  without an ICC profile is read as sRGB;
* **refused precisely**: floating-point images, HEIF-family files no decoder here reads
  (corrupt, truncated, or another coding such as VVC), and colour modes Pillow cannot convert,
  each with InvalidArgument naming the reason.

The size checks and error mapping are firstlight.media.checks' (shared with firstlight.images): the
same input gets the same verdict as before, only the decode is smaller. The size limits apply
to HEIF and AVIF before any pixel is decoded too (their headers give the size).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from firstlight.errors import InvalidArgument
from firstlight.media.checks import _decoding, _open_checked
from firstlight.media.thumbnail import shrink

#: The backbone's preprocessing resizes the shorter side to round(size * 256 / 224) before the
#: centre crop (firstlight.models.preprocess.to_model_input); decoding below that loses detail.
_RESIZE_RATIO = 256 / 224

#: Formats decoded small for the model: JPEG/MPO in the DCT domain (draft), HEIF and AVIF
#: (no reduced decode) in full, then box-reduced by the same factor.
REDUCED_FORMATS = frozenset({"JPEG", "MPO", "HEIF", "AVIF"})
_REDUCED_AFTER_DECODE = frozenset({"HEIF", "AVIF"})

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


def model_decode_side(image_size: int) -> int:
    """Shorter side a decode needs for a model input of ``image_size`` (256 for 224)."""
    return round(image_size * _RESIZE_RATIO)


@dataclass(frozen=True)
class Photo:
    image: Image.Image  # RGB, upright, sRGB, loaded; shorter side >= the min_side asked for when the source has it
    width: int  # of the stored image, as its header says (before orientation)
    height: int
    format: str
    reduction: int  # scale denominator used (JPEG's DCT scaling, HEIF/AVIF's box reduction): 1 (full), 2, 4 or 8
    orientation: int  # EXIF orientation applied (1 = none)


def draft_reduction(img: Image.Image, min_side: int) -> int:
    """Ask a JPEG's decoder for the largest DCT reduction that keeps both sides >= ``min_side``
    (before load); returns the reduction (1 when none applies, or for other formats)."""
    if min_side <= 0 or img.format not in ("JPEG", "MPO"):
        return 1
    width = img.size[0]
    img.draft(img.mode, (min_side, min_side))  # Pillow keeps both sides >= the size asked for
    return max(1, round(width / img.size[0]))


def jpeg_reduction(width: int, height: int, min_side: int) -> int:
    """The DCT reduction :func:`draft_reduction` will pick for a JPEG of this size (Pillow's rule:
    the largest of 8, 4, 2, 1 not above min(width, height) // min_side), from the header alone;
    also the box reduction a HEIF or AVIF of this size gets after its decode."""
    scale = min(width, height) // max(1, min_side)
    return next(a for a in (8, 4, 2, 1) if scale >= a or a == 1)


def exif_orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block: treated as no orientation
        return 1
    return value if 1 <= value <= 8 else 1


def upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (a no-op for 1 or none)."""
    if exif_orientation(img) == 1:
        return img
    return ImageOps.exif_transpose(img)


#: sRGB's (BT.709's) primaries and white (CIE xy).
_SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
_D65 = (0.3127, 0.3290)
#: nclx transfer characteristics of SDR pictures, decoded here with the sRGB curve: 13 is sRGB;
#: BT.709/601/2020 (1, 6, 14, 15) are camera curves that displays show much like it.
_SDR_TRANSFERS = {1, 6, 13, 14, 15}


def _rgb_to_xyz(primaries: tuple[tuple[float, float], ...], white: tuple[float, float]) -> np.ndarray:
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in primaries]).T  # columns: R, G, B
    w = np.array([white[0] / white[1], 1.0, (1 - white[0] - white[1]) / white[1]])
    return np.asarray(xyz * np.linalg.solve(xyz, w))


def _nclx_to_srgb(img: Image.Image) -> Image.Image:
    """An RGB HEIF whose colour space is given only as nclx code points (no ICC profile), e.g.
    Display P3 (primaries 12), converted to sRGB primaries. Unchanged for sRGB/BT.709 or
    unspecified primaries, HDR transfers (PQ, HLG: pillow-heif has already cut them to 8 bits)
    and a white point other than D65 (no chromatic adaptation here)."""
    nclx = img.info.get("nclx_profile")
    if not isinstance(nclx, dict) or img.mode != "RGB" or nclx.get("color_primaries") in (None, 1, 2):
        return img
    if nclx.get("transfer_characteristics") not in _SDR_TRANSFERS:
        return img
    try:
        primaries = tuple((float(nclx[f"color_primary_{c}_x"]), float(nclx[f"color_primary_{c}_y"])) for c in ("red", "green", "blue"))
        white = (float(nclx["color_primary_white_x"]), float(nclx["color_primary_white_y"]))
        if abs(white[0] - _D65[0]) > 2e-3 or abs(white[1] - _D65[1]) > 2e-3:
            return img
        m = np.linalg.solve(_rgb_to_xyz(_SRGB_PRIMARIES, _D65), _rgb_to_xyz(primaries, white))
    except (KeyError, TypeError, ValueError, ZeroDivisionError, np.linalg.LinAlgError):
        return img  # unusable code points: the pixels as they are, like an unreadable ICC profile
    if not np.all(np.isfinite(m)) or np.allclose(m, np.eye(3), atol=1e-3):
        return img
    levels = np.arange(256) / 255.0
    to_linear = np.where(levels <= 0.04045, levels / 12.92, ((levels + 0.055) / 1.055) ** 2.4).astype(np.float32)
    out = np.clip(to_linear[np.asarray(img)] @ m.T.astype(np.float32), 0.0, 1.0)
    # linear -> sRGB 8-bit through a 4096-step table (finer than 8 bits in the shadows)
    steps = np.linspace(0.0, 1.0, 4096)
    encode = np.round(255 * np.where(steps <= 0.0031308, steps * 12.92, 1.055 * steps ** (1 / 2.4) - 0.055)).astype(np.uint8)
    return Image.fromarray(encode[np.round(out * 4095).astype(np.int32)], "RGB")


def _to_srgb(img: Image.Image) -> Image.Image:
    """Convert RGB/CMYK with an embedded ICC profile to sRGB (a HEIF's nclx colour space when it
    has no profile); unchanged without either."""
    icc = img.info.get("icc_profile")
    if not icc and img.mode == "RGB":
        return _nclx_to_srgb(img)
    if not icc or img.mode not in ("RGB", "CMYK"):
        return img
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if img.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(source).lower().replace(" ", ""):
            return img  # already sRGB: skip the transform (most camera JPEGs)
        return ImageCms.profileToProfile(img, source, ImageCms.createProfile("sRGB"), outputMode="RGB")  # type: ignore[return-value]
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return img  # unreadable or unusable profile: use the pixels as they are


def check_mode(img: Image.Image, label: str = "image") -> None:
    """Refuse, at validation, a colour mode :func:`to_rgb` would refuse after a decode."""
    if img.mode == "F":
        raise InvalidArgument(f"{label} is a floating-point image (mode F); send 8- or 16-bit")
    if img.mode in ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "I", "1", "RGBa", "La") or img.mode in _SIXTEEN_BIT:
        return
    try:
        Image.new(img.mode, (1, 1)).convert("RGB")
    except ValueError:
        raise InvalidArgument(f"{label} has colour mode {img.mode}, which cannot be converted to RGB") from None


def to_rgb(img: Image.Image, label: str = "image") -> Image.Image:
    """Any accepted mode -> 8-bit RGB in sRGB (see the module docstring for each case)."""
    mode = img.mode
    if mode in ("RGB", "CMYK"):
        img = _to_srgb(img)
        return img if img.mode == "RGB" else img.convert("RGB")
    if mode in _SIXTEEN_BIT or mode == "I":
        a = np.asarray(img).astype(np.int64)
        # PNG's 16-bit greyscale reads as I;16 (or I): 0..65535 scaled, not clipped at 255.
        top = 65535 if mode in _SIXTEEN_BIT or a.max(initial=0) > 255 else 255
        if a.min(initial=0) < 0 or a.max(initial=0) > 65535:
            raise InvalidArgument(f"{label} is a 32-bit integer image with values outside 0..65535; send 8- or 16-bit")
        g = (a * 255 + top // 2) // top if top != 255 else a
        return Image.fromarray(g.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        raise InvalidArgument(f"{label} is a floating-point image (mode F); send 8- or 16-bit")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError:
        raise InvalidArgument(f"{label} has colour mode {mode}, which cannot be converted to RGB") from None


def decode_photo(data: bytes, *, max_bytes: int, max_pixels: int, min_side: int = 0, label: str = "image", max_side: int = 0) -> Photo:
    """Check ``data`` like firstlight.images.decode_image, then decode it once: for a JPEG at the
    smallest DCT scale whose shorter side is still >= ``min_side`` (0: full size), a HEIF or AVIF
    in full then reduced by the same factor; upright, RGB, sRGB. Raises InvalidArgument /
    ResourceExhausted."""

    def body() -> Photo:
        img = _open_checked(data, max_bytes=max_bytes, max_pixels=max_pixels, label=label, max_side=max_side)
        fmt, (width, height) = img.format or "UNKNOWN", img.size
        reduction = draft_reduction(img, min_side)
        img.load()  # raises on truncated or corrupt data
        if fmt in _REDUCED_AFTER_DECODE and min_side > 0:
            img, reduction = _reduced(img, jpeg_reduction(width, height, min_side))
        orientation = exif_orientation(img)
        rgb = to_rgb(upright(img) if orientation != 1 else img, label)
        return Photo(image=rgb, width=width, height=height, format=fmt, reduction=reduction, orientation=orientation)

    return _decoding(label, data, body)


def _reduced(img: Image.Image, factor: int) -> tuple[Image.Image, int]:
    """``img`` box-reduced by ``factor`` (its info, hence EXIF and ICC profile, kept); modes
    Image.reduce lacks (16-bit greyscale, palette) stay full size."""
    if factor <= 1 or img.mode not in ("L", "LA", "RGB", "RGBA", "I", "CMYK"):
        return img, 1
    small = img.reduce(factor)
    small.info = dict(img.info)
    return small, factor


def thumbnail(photo: Photo, px: int) -> Image.Image:
    """A copy at most ``px`` on its longer side, from the same decode as the model input."""
    return shrink(photo.image, px)
