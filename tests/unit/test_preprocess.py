import numpy as np
import pytest
from PIL import Image

from firstlight.models.preprocess import batch_from_images, to_model_input


def gradient(w: int, h: int, mode: str = "RGB") -> Image.Image:
    """Distinct values per position so crops/resizes are checked exactly, not just by shape."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], axis=-1)
    return Image.fromarray(arr.astype(np.uint8)).convert(mode)


def expected(img: Image.Image, rw: int, rh: int, size: int = 224) -> np.ndarray:
    r = img.convert("RGB").resize((rw, rh), Image.Resampling.BILINEAR)
    left, top = (rw - size) // 2, (rh - size) // 2
    return np.asarray(r.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize(
    ("w", "h", "rw", "rh"),
    [
        (640, 480, 341, 256),  # landscape: shorter side (h) -> 256
        (480, 640, 256, 341),  # portrait
        (300, 300, 256, 256),  # square
        (100, 50, 512, 256),  # small images are upscaled
    ],
)
def test_resize_shorter_side_then_center_crop(w: int, h: int, rw: int, rh: int) -> None:
    img = gradient(w, h)
    out = to_model_input(img)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected(img, rw, rh))


def test_shorter_side_already_256_is_a_pure_center_crop() -> None:
    img = gradient(400, 256)
    arr = np.asarray(img)
    np.testing.assert_array_equal(to_model_input(img), arr[16:240, 88:312])


def test_center_crop_is_centred() -> None:
    # A white square in the middle of a black landscape image stays in the middle of the crop.
    arr = np.zeros((256, 512, 3), dtype=np.uint8)
    arr[118:138, 246:266] = 255
    out = to_model_input(Image.fromarray(arr))
    ys, xs = np.nonzero(out[..., 0] > 127)
    assert abs(ys.mean() - 111.5) < 1 and abs(xs.mean() - 111.5) < 1


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    out = to_model_input(gradient(320, 240, mode="RGB").convert(mode))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8


def test_extreme_aspect_ratio_still_covers_the_crop() -> None:
    assert to_model_input(gradient(2000, 10)).shape == (224, 224, 3)
    assert to_model_input(gradient(1, 1)).shape == (224, 224, 3)


def test_other_sizes_keep_the_256_over_224_ratio() -> None:
    img = gradient(640, 480)
    out = to_model_input(img, size=112)  # shorter side -> round(112 * 256 / 224) = 128
    assert out.shape == (112, 112, 3)
    np.testing.assert_array_equal(out, expected(img, 171, 128, size=112))


def test_batch_from_images() -> None:
    imgs = [gradient(640, 480), gradient(200, 300, "L")]
    batch = batch_from_images(imgs)
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[1], to_model_input(imgs[1]))
    assert batch_from_images([]).shape == (0, 224, 224, 3)
