"""firstlight.media.decode: orientation, reduced JPEG decoding and the odd formats phones and
editors produce, generated here with Pillow from a bundled photo (scikit-image's chelsea)."""

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from firstlight import datasets
from firstlight.errors import InvalidArgument
from firstlight.images import decode_image
from firstlight.media.decode import decode_photo, model_decode_side, thumbnail

LIMITS = dict(max_bytes=50_000_000, max_pixels=40_000_000)

#: For each EXIF orientation, how the camera stored an upright scene (the inverse of what a
#: viewer applies; Pillow's ImageOps.exif_transpose is the viewer).
_STORE = {
    1: [],
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_90],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_270],
}


def chelsea() -> Image.Image:
    return Image.open(io.BytesIO(datasets.sample_photo("chelsea"))).convert("RGB")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def stored_with_orientation(upright: Image.Image, tag: int) -> Image.Image:
    img = upright
    for op in _STORE[tag]:
        img = img.transpose(op)
    return img


def exif_bytes(tag: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = tag
    return exif.tobytes()


@pytest.mark.parametrize("tag", range(1, 9))
def test_exif_orientation_gives_the_upright_pixels(tag: int) -> None:
    upright = chelsea()
    data = encode(stored_with_orientation(upright, tag), "PNG", exif=exif_bytes(tag))
    photo = decode_photo(data, **LIMITS)
    assert photo.orientation == tag
    assert photo.image.size == upright.size
    assert np.array_equal(np.asarray(photo.image), np.asarray(upright))


def test_rotated_jpeg_decoded_small_is_upright() -> None:
    upright = chelsea().resize((2000, 1330))
    data = encode(stored_with_orientation(upright, 6), "JPEG", quality=90, exif=exif_bytes(6))
    photo = decode_photo(data, min_side=model_decode_side(224), **LIMITS)
    assert (photo.width, photo.height) == (1330, 2000)  # stored sideways
    assert photo.reduction == 4 and photo.image.size == (500, 333)  # upright, 1/4 scale, >= 256
    ref = np.asarray(upright.resize(photo.image.size, Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.abs(np.asarray(photo.image, dtype=np.float32) - ref).mean() < 6


def test_draft_keeps_the_side_the_model_needs_and_other_formats_decode_full() -> None:
    big = chelsea().resize((1600, 1200))
    for size, reduction in ((224, 4), (160, 4), (320, 2), (512, 2)):
        photo = decode_photo(encode(big, "JPEG", quality=90), min_side=model_decode_side(size), **LIMITS)
        assert photo.reduction == reduction and min(photo.image.size) >= model_decode_side(size)
    png = encode(big, "PNG")
    assert decode_photo(png, min_side=256, **LIMITS).image.size == (1600, 1200)
    assert np.array_equal(np.asarray(decode_photo(png, **LIMITS).image), np.asarray(decode_image(png, **LIMITS).image))


def test_model_decode_side_matches_preprocess() -> None:
    from firstlight.models.preprocess import crop_box

    for size in (96, 160, 224, 256, 320):
        assert model_decode_side(size) == round(size * 256 / 224)
        # the preprocessing resizes a large image's shorter side to exactly that
        assert min(crop_box(4032, 3024, size)[:2]) == model_decode_side(size)


def test_cmyk_jpeg_becomes_rgb() -> None:
    img = chelsea()
    photo = decode_photo(encode(img.convert("CMYK"), "JPEG", quality=95), **LIMITS)
    assert photo.image.mode == "RGB"
    assert np.abs(np.asarray(photo.image, dtype=np.float32) - np.asarray(img, dtype=np.float32)).mean() < 8


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    grey = np.asarray(chelsea().convert("L"), dtype=np.uint16) * 257  # 0..65535
    data = encode(Image.fromarray(grey), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(decode_photo(data, **LIMITS).image)
    assert np.abs(out[..., 0].astype(int) - (grey // 257)).max() <= 1


def test_transparency_is_composited_over_white() -> None:
    img = chelsea().convert("RGBA")
    a = np.asarray(img).copy()
    a[:50, :, :3] = 0  # black pixels, fully transparent
    a[:50, :, 3] = 0
    for data in (encode(Image.fromarray(a), "PNG"), encode(Image.fromarray(a).convert("LA"), "PNG")):
        out = np.asarray(decode_photo(data, **LIMITS).image)
        assert (out[:50] == 255).all() and out[60:].mean() < 250
    pal = chelsea().convert("P")
    data = encode(pal, "PNG", transparency=int(np.asarray(pal)[0, 0]))
    assert (np.asarray(decode_photo(data, **LIMITS).image)[0, 0] == 255).all()


def test_webp_and_icc_profiles() -> None:
    img = chelsea()
    assert decode_photo(encode(img, "WEBP", quality=90), **LIMITS).format == "WEBP"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    plain = np.asarray(decode_photo(encode(img, "PNG"), **LIMITS).image)
    assert np.array_equal(np.asarray(decode_photo(encode(img, "PNG", icc_profile=srgb), **LIMITS).image), plain)
    # A broken profile is ignored (as browsers do), not a reason to refuse the photo.
    assert np.array_equal(np.asarray(decode_photo(encode(img, "PNG", icc_profile=b"not a profile"), **LIMITS).image), plain)


def test_refused_formats_say_why() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 100  # a header, no image
    with pytest.raises(InvalidArgument, match=r"corrupt or truncated .*a heic \(HEIF-family\) file"):
        decode_photo(heic, **LIMITS)
    floats = encode(Image.fromarray(np.random.default_rng(0).random((32, 32), dtype=np.float32)), "TIFF")
    with pytest.raises(InvalidArgument, match="floating-point"):
        decode_photo(floats, **LIMITS)
    data = encode(chelsea(), "JPEG")
    with pytest.raises(InvalidArgument, match="corrupt or truncated"):
        decode_photo(data[: len(data) // 2], min_side=64, **LIMITS)


def test_thumbnail_from_the_same_decode() -> None:
    photo = decode_photo(encode(chelsea().resize((1600, 1200)), "JPEG"), min_side=256, **LIMITS)
    assert thumbnail(photo, 192).size == (192, 144)


def test_preview_round_trip_gives_the_same_model_input() -> None:
    from firstlight.media.preview import covers, decode_preview, encode_preview, wants_preview
    from firstlight.models.preprocess import to_model_input

    photo = decode_photo(encode(chelsea().resize((2400, 1600)), "JPEG"), min_side=model_decode_side(224), **LIMITS)
    assert wants_preview(photo)
    back = decode_preview(encode_preview(photo))
    assert covers(back, 224) and not covers(back, 512)
    assert np.array_equal(to_model_input(back), to_model_input(photo.image))
    assert not wants_preview(decode_photo(encode(chelsea(), "PNG"), min_side=256, **LIMITS))
    for bad in (b"not npy", encode_preview(photo)[:100]):
        with pytest.raises(InvalidArgument, match="preview"):
            decode_preview(bad)
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(InvalidArgument, match="not an RGB image"):
        decode_preview(buf.getvalue())


def test_ingestion_check_refuses_what_the_decode_would() -> None:
    from firstlight.images import check_image

    floats = encode(Image.fromarray(np.random.default_rng(0).random((32, 32), dtype=np.float32)), "TIFF")
    with pytest.raises(InvalidArgument, match="floating-point"):
        check_image(floats, **LIMITS)
    assert check_image(encode(chelsea().convert("CMYK"), "JPEG"), **LIMITS).format == "JPEG"


def test_thumbnails_are_upright() -> None:
    from firstlight.gateway.media import make_thumbnail

    data = encode(stored_with_orientation(chelsea(), 6), "JPEG", exif=exif_bytes(6))
    assert Image.open(io.BytesIO(make_thumbnail(data, 192))).size == (192, 128)


def test_jpeg_reduction_from_the_header_matches_the_decoder() -> None:
    from firstlight.media.decode import jpeg_reduction

    for size in ((1600, 1200), (4032, 3024), (600, 500), (2100, 520), (300, 200)):
        photo = decode_photo(encode(chelsea().resize(size), "JPEG"), min_side=256, **LIMITS)
        assert jpeg_reduction(*size, 256) == photo.reduction
