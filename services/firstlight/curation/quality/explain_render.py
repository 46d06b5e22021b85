"""Pictures of an explanation (numpy + PIL, no torch): where the model's input lies in the
image, the raw saliency map placed back on the whole image (its own aspect), the overlay and
the grid of image | map | overlay per concept.

The backbone sees the center crop of the image resized so its shorter side is 256/224 of the
input size (``models.preprocess.to_model_input``): the map covers that crop only. Outside it
the overlay dims the image rather than invent saliency for pixels the model never saw."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from firstlight.models.preprocess import crop_box

#: Longest side of the pictures returned (enough to read, small enough for a JSON reply).
DISPLAY_PX = 448
#: Colour of saliency 0 … 1 (blue, cyan, yellow, red): a short jet-like ramp.
_RAMP = np.array([[0, 0, 160], [0, 200, 255], [255, 230, 0], [230, 20, 0]], np.float32)


def model_input_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the model's input in the image, as fractions of its width and
    height: the arithmetic of ``to_model_input`` (shorter side to round(size·256/224), the
    center ``size``×``size`` crop)."""
    new_w, new_h, left, top = crop_box(width, height, size)
    return left / new_w, top / new_h, (left + size) / new_w, (top + size) / new_h


def colorize(saliency: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] uint8 on the ramp."""
    s = np.clip(saliency, 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(s).astype(int).clip(0, len(_RAMP) - 2)
    t = (s - lo)[..., None]
    return (_RAMP[lo] * (1 - t) + _RAMP[lo + 1] * t).astype(np.uint8)


def display_image(image: Image.Image, max_px: int = DISPLAY_PX) -> np.ndarray:
    """The image, RGB, scaled down so its longer side is at most ``max_px`` (aspect kept)."""
    img = image.convert("RGB")
    scale = min(1.0, max_px / max(img.size))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def place(raw_map: np.ndarray, box: tuple[float, float, float, float], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(saliency [height, width] float32, inside [height, width] bool): the raw map upsampled
    bilinearly onto ``box`` of an image of that size, 0 and False outside it."""
    x0, y0 = round(box[0] * width), round(box[1] * height)
    x1, y1 = max(x0 + 1, round(box[2] * width)), max(y0 + 1, round(box[3] * height))
    up = Image.fromarray(np.asarray(raw_map, np.float32), mode="F").resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
    sal = np.zeros((height, width), np.float32)
    inside = np.zeros((height, width), bool)
    sal[y0:y1, x0:x1] = np.clip(np.asarray(up), 0.0, 1.0)
    inside[y0:y1, x0:x1] = True
    return sal, inside


def overlay(image: np.ndarray, saliency: np.ndarray, inside: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """The coloured map over the image, as opaque as the area is salient (alpha·saliency: the
    image stays readable where nothing is); outside the model's input the image is dimmed."""
    a = (alpha * saliency)[..., None]
    out = (1 - a) * image.astype(np.float32) + a * colorize(saliency).astype(np.float32)
    out[~inside] *= 0.35
    return np.clip(out, 0, 255).astype(np.uint8)


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=3)  # 6x faster than optimize=True, 3 % larger
    return buf.getvalue()


def map_picture(saliency: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The coloured map alone, grey outside the model's input."""
    out = colorize(saliency)
    out[~inside] = (200, 200, 200)
    return out


def grid_png(image: np.ndarray, rows: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], tile_px: int = 224) -> bytes:
    """One PNG, a row per concept: image | map | overlay, each scaled to ``tile_px`` high, with
    the row's caption (e.g. "cat 0.93") above. ``rows``: (caption, saliency, inside, overlay)."""
    h, w = image.shape[:2]
    tw = max(1, round(w * tile_px / h))
    caption_px, pad = 18, 6
    sheet = Image.new("RGB", (3 * tw + 4 * pad, len(rows) * (tile_px + caption_px + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (caption, sal, inside, over) in enumerate(rows):
        top = pad + r * (tile_px + caption_px + pad)
        draw.text((pad, top + 2), caption, fill=(20, 20, 20))
        for c, tile in enumerate((image, map_picture(sal, inside), over)):
            sheet.paste(Image.fromarray(tile).resize((tw, tile_px), Image.Resampling.BILINEAR), (pad + c * (tw + pad), top + caption_px))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", compress_level=3)  # 6x faster than optimize=True, 3 % larger
    return buf.getvalue()
