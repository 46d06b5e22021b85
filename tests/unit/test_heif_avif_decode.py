"""HEIC/HEIF (pillow-heif) and AVIF (Pillow's own) through firstlight.media.decode: the colours,
the reduced decode, orientation applied exactly once, alpha, 16-bit, profiles, corrupt files and
the size limits before any decode. The files are encoded here from a bundled photo."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from test_photo_decode import LIMITS, chelsea, encode, exif_bytes, stored_with_orientation

from firstlight.errors import InvalidArgument, ResourceExhausted
from firstlight.images import check_image, image_header
from firstlight.media.decode import decode_photo, jpeg_reduction, model_decode_side
from firstlight.media.formats import heif_available, open_image

FORMATS = ["HEIF", "AVIF"]


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    heif_available()  # registers pillow-heif's encoder too
    # The fastest encodes (x265's ultrafast preset is ~10x its default): these tests judge the decode.
    if fmt == "AVIF":
        kw.setdefault("speed", 10)
    else:
        kw.setdefault("enc_params", {"preset": "ultrafast"})
    return encode(img, fmt, quality=kw.pop("quality", 90), **kw)


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


@pytest.mark.parametrize("fmt", FORMATS)
def test_decodes_to_the_source_size_and_colours_full_and_reduced(fmt: str) -> None:
    src = chelsea().resize((1200, 800))
    data = save(src, fmt)
    full = decode_photo(data, **LIMITS)
    assert (full.format, full.image.size, full.reduction, full.image.mode) == (fmt, (1200, 800), 1, "RGB")
    assert mean_diff(full.image, src) < 4
    assert np.abs(np.asarray(full.image, dtype=np.float32).mean((0, 1)) - np.asarray(src, dtype=np.float32).mean((0, 1))).max() < 2
    # Reduced like a JPEG's draft would be (800 // 256 = 3 -> 1/2): the model input and the preview.
    small = decode_photo(data, min_side=model_decode_side(224), **LIMITS)
    assert small.reduction == jpeg_reduction(1200, 800, 256) == 2 and small.image.size == (600, 400)
    assert (small.width, small.height) == (1200, 800)
    assert mean_diff(small.image, src.reduce(2)) < 4


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tag", [3, 6, 8])
def test_rotated_phone_photo_comes_out_upright_once(fmt: str, tag: int) -> None:
    """The encoders turn the EXIF tag into irot/imir boxes; the file keeps the EXIF tag as well
    (as iPhones write it). Applying both would turn a portrait photo sideways again."""
    upright = chelsea()
    data = save(stored_with_orientation(upright, tag), fmt, exif=exif_bytes(tag))
    jpeg = decode_photo(encode(stored_with_orientation(upright, tag), "JPEG", quality=95, exif=exif_bytes(tag)), **LIMITS)
    for min_side in (0, 128):
        photo = decode_photo(data, min_side=min_side, **LIMITS)
        ref = upright if photo.reduction == 1 else upright.reduce(photo.reduction)
        assert photo.image.size == ref.size
        # reduced: an odd side groups pixels differently before and after a rotation; a wrong
        # orientation differs by ~40
        assert mean_diff(photo.image, ref) < (4 if photo.reduction == 1 else 8)
    assert mean_diff(decode_photo(data, **LIMITS).image, jpeg.image) < 4  # the same pixels as the JPEG path
    if fmt == "HEIF":
        assert open_image(data).info["original_orientation"] == tag  # the EXIF tag was there, and ignored


@pytest.mark.parametrize("fmt", FORMATS)
def test_transparency_is_composited_over_white(fmt: str) -> None:
    a = np.asarray(chelsea().convert("RGBA")).copy()
    a[:64, :, :3] = 0  # black pixels, fully transparent
    a[:64, :, 3] = 0
    data = save(Image.fromarray(a), fmt, quality=100)
    assert open_image(data).mode == "RGBA"
    out = np.asarray(decode_photo(data, **LIMITS).image)
    assert out[4:60].mean() > 245 and out[70:].mean() < 230


def test_sixteen_bit_grey_heif_is_scaled_not_clipped_and_grey_avif_decodes() -> None:
    grey = np.asarray(chelsea().convert("L"), dtype=np.uint16) * 257  # 0..65535
    data = save(Image.fromarray(grey), "HEIF", quality=100)
    assert open_image(data).mode == "I;16"
    out = np.asarray(decode_photo(data, **LIMITS).image, dtype=np.float32)
    assert np.abs(out[..., 0] - grey / 257).mean() < 3
    avif = decode_photo(save(chelsea().convert("L"), "AVIF"), **LIMITS).image
    assert avif.mode == "RGB" and mean_diff(avif, chelsea().convert("L").convert("RGB")) < 4


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_icc_profile_is_read(fmt: str) -> None:
    img = chelsea()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = save(img, fmt, icc_profile=srgb)
    assert open_image(data).info.get("icc_profile")
    assert mean_diff(decode_photo(data, **LIMITS).image, decode_photo(save(img, fmt), **LIMITS).image) < 1


def test_a_display_p3_heif_without_icc_profile_is_converted_to_srgb() -> None:
    """Colour given only as nclx code points (primaries 12: Display P3, sRGB curve, D65)."""
    p3 = {"color_primaries": 12, "transfer_characteristics": 13, "matrix_coefficients": 6, "full_range_flag": 1}
    colour = np.array([200, 100, 50])
    data = save(Image.new("RGB", (64, 64), tuple(int(c) for c in colour)), "HEIF", quality=100, nclx_profile=p3)
    assert open_image(data).info["nclx_profile"]["color_primaries"] == 12 and not open_image(data).info.get("icc_profile")
    # the published P3-D65 -> sRGB matrix on linear light
    m = np.array([[1.2249401, -0.2249404, 0.0], [-0.0420569, 1.0420571, 0.0], [-0.0196376, -0.0786361, 1.0982735]])
    v = colour / 255
    lin = m @ np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    want = 255 * np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.clip(lin, 0, 1) ** (1 / 2.4) - 0.055)
    got = np.asarray(decode_photo(data, **LIMITS).image, dtype=np.float64).mean((0, 1))
    assert np.abs(got - want).max() < 3 and np.abs(got - colour).max() > 10  # converted, and not a no-op
    srgb = save(Image.new("RGB", (64, 64), tuple(int(c) for c in colour)), "HEIF", quality=100)  # nclx primaries 1
    assert np.abs(np.asarray(decode_photo(srgb, **LIMITS).image, dtype=np.float64).mean((0, 1)) - colour).max() < 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_and_truncated_files_are_refused_precisely(fmt: str) -> None:
    data = save(chelsea(), fmt)
    broken = data[:64] + bytes(len(data) - 64)  # the header's start, then zeros
    for bad in (data[: len(data) // 2], data[:40], broken, data[:12] + b"\xff" * 200):
        for check in (decode_photo, check_image):
            with pytest.raises(InvalidArgument, match="corrupt or truncated"):
                check(bad, **LIMITS)
    # Intact boxes, zeroed coded data: refused at the decode (libavif raises a RuntimeError, which
    # escaped as a crash before it was mapped).
    start = data.index(b"mdat") + 4
    with pytest.raises(InvalidArgument, match=r"corrupt or truncated: .*(decode|NAL)"):
        decode_photo(data[:start] + bytes(len(data) - start), **LIMITS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_size_limits_apply_before_any_pixel_is_decoded(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = save(chelsea(), fmt)
    assert image_header(data) == (451, 300, fmt)
    cls = type(open_image(data))

    def no_decode(self):  # type: ignore[no-untyped-def]
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(cls, "load", no_decode)
    with pytest.raises(ResourceExhausted, match="451x300 = 135,300 pixels, over the limit of 100,000"):
        decode_photo(data, max_bytes=LIMITS["max_bytes"], max_pixels=100_000)
    with pytest.raises(ResourceExhausted, match="per side"):
        decode_photo(data, **LIMITS, max_side=400)


def test_thumbnails_content_types_and_folder_walk(tmp_path: Path) -> None:
    from firstlight.gateway.media import content_type, make_thumbnail
    from firstlight.sdk import folder_items

    heic = save(stored_with_orientation(chelsea(), 6), "HEIF", exif=exif_bytes(6))
    assert Image.open(io.BytesIO(make_thumbnail(heic, 192))).size == (192, 128)  # upright
    assert (content_type("HEIF"), content_type("AVIF")) == ("image/heif", "image/avif")
    (tmp_path / "cat").mkdir()
    for name in ("cat/a.HEIC", "cat/b.heif", "c.avif", "d.hif", "notes.txt"):
        (tmp_path / name).write_bytes(heic)
    assert sorted(i.metadata["filename"] for i in folder_items(tmp_path)) == ["c.avif", "cat/a.HEIC", "cat/b.heif", "d.hif"]


def test_the_portal_gets_a_jpeg_of_a_heic_and_other_formats_as_uploaded(tmp_path: Path) -> None:
    from firstlight.blobstore import LocalBlobStore
    from firstlight.gateway.media import Media

    blobs = LocalBlobStore(tmp_path)
    heic = save(stored_with_orientation(chelsea(), 6), "HEIF", exif=exif_bytes(6))
    avif = save(chelsea(), "AVIF")
    media = Media(blobs)
    data, ctype = media.for_browser("app", blobs.put("app", "h", heic), "sha-h", "HEIF")
    assert ctype == "image/jpeg" and Image.open(io.BytesIO(data)).size == (451, 300)  # upright
    assert media.for_browser("app", "blob:app/gone", "sha-h", "HEIF")[0] == data  # kept, not decoded again
    assert media.for_browser("app", blobs.put("app", "a", avif), "sha-a", "AVIF") == (avif, "image/avif")


def test_every_decode_path_opens_through_the_registered_opener() -> None:
    """A bare Image.open would not read HEIC in a process where nothing registered pillow-heif yet."""
    root = Path(__file__).resolve().parents[2] / "services" / "firstlight"
    allowed = {"media/formats.py", "training/deep/detector.py"}  # the detector reopens a PNG it wrote
    bare = [str(p.relative_to(root)) for p in root.rglob("*.py") if "Image.open(" in p.read_text() and str(p.relative_to(root)) not in allowed]
    assert not bare, f"use firstlight.media.formats.open_image in {bare}"
