"""Per-image quality metrics from decoded pixels, and the issues they flag.

Every metric is computed on one decode (RGB uint8 [H, W, 3]); the heavy ones on the image
shrunk so its longer side is at most ``MAX_SIDE`` (blur and noise depend on scale, so they are
comparable between inputs only at a fixed scale).

- ``blur``: variance of the Laplacian of the gray image (low = blurry).
- ``brightness``: mean luma / 255; ``highlight``: 99th percentile of luma / 255 (an image with a
  dark background and a lit subject is not dark); ``contrast``: std of luma / 255.
- ``saturation``: mean HSV saturation (0 for gray).
- ``noise``: Immerkær's fast noise estimate (σ of the image minus its smooth part, in gray levels).
- ``aspect_ratio`` = width / height, ``width``, ``height``.
- ``grayscale``: the channels agree everywhere (within 2 levels).
- ``blank_fraction``: share of pixels within 8 gray levels of the most common level (1 = one flat colour).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

MAX_SIDE = 512
METRICS = ("blur", "brightness", "highlight", "contrast", "saturation", "noise", "aspect_ratio", "width", "height", "grayscale", "blank_fraction")

# Absolute thresholds for the flags that mean the same on any image set.
DARK_BELOW = 0.25  # highlight (99th percentile of luma)
BRIGHT_ABOVE = 0.92  # brightness (mean luma)
LOW_CONTRAST_BELOW = 0.04
BLANK_ABOVE = 0.97
TINY_SIDE_BELOW = 16
EXTREME_ASPECT = 4.0
# Blur is judged relative to the set: log(blur) this many robust σ (MAD) below the median.
BLUR_MAD_BELOW = 3.0


@dataclass(frozen=True)
class ImageQuality:
    blur: float
    brightness: float
    highlight: float
    contrast: float
    saturation: float
    noise: float
    aspect_ratio: float
    width: int
    height: int
    grayscale: bool
    blank_fraction: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, float]) -> ImageQuality:
        """Back from :meth:`to_dict` (as ingestion stores it with the input)."""
        return cls(
            blur=float(d["blur"]),
            brightness=float(d["brightness"]),
            highlight=float(d["highlight"]),
            contrast=float(d["contrast"]),
            saturation=float(d["saturation"]),
            noise=float(d["noise"]),
            aspect_ratio=float(d["aspect_ratio"]),
            width=int(d["width"]),
            height=int(d["height"]),
            grayscale=bool(d["grayscale"]),
            blank_fraction=float(d["blank_fraction"]),
        )


def _shrink(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return rgb
    from PIL import Image

    s = MAX_SIDE / max(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR))


def image_quality(rgb: np.ndarray, size: tuple[int, int] | None = None) -> ImageQuality:
    """Metrics of ``rgb``; ``size`` (width, height) is the source's upright size when ``rgb`` is
    a reduced decode (ingestion's JPEG draft decode), so resolution and aspect are the image's."""
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    a = a[..., :3].astype(np.uint8, copy=False)
    height, width = a.shape[:2] if size is None else (size[1], size[0])
    # Ingestion measures every upload, so each step below is the cheapest numpy form found
    # (float32 gray levels; separable second differences; colour spread in uint8).
    small = _shrink(a)
    gray = small.astype(np.float32) @ _LUMA
    if min(gray.shape) >= 3:
        dxx = gray[:, :-2] - 2 * gray[:, 1:-1] + gray[:, 2:]  # second difference along x, all rows
        dyy = gray[:-2, 1:-1] - 2 * gray[1:-1, 1:-1] + gray[2:, 1:-1]
        blur = float((dxx[1:-1] + dyy).var(dtype=np.float64))  # the 4-neighbour Laplacian
        # Immerkær's kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] is [1,-2,1] ⊗ [1,-2,1]: dxx's second
        # difference along y
        h, w = gray.shape
        immerkaer = dxx[:-2] - 2 * dxx[1:-1] + dxx[2:]
        noise = float(np.sqrt(np.pi / 2) / (6 * (w - 2) * (h - 2)) * np.abs(immerkaer).sum(dtype=np.float64))
    else:
        blur, noise = 0.0, 0.0
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    mx = np.maximum(np.maximum(r, g), b)
    spread = mx - np.minimum(np.minimum(r, g), b)  # uint8: mx >= mn, no wrap-around
    sat = spread.astype(np.float32) / np.maximum(mx, 1).astype(np.float32)  # 0 where mx is 0
    hist = np.bincount(np.clip(gray, 0, 255).astype(np.uint8).ravel(), minlength=256)
    # the 99th percentile of luma read off the histogram (to the gray level; a sort of every
    # pixel cost more than all the other metrics together)
    highlight = int(np.searchsorted(np.cumsum(hist), 0.99 * gray.size)) if gray.size else 0
    mode = int(hist.argmax())
    blank = float(hist[max(0, mode - 8) : mode + 9].sum() / max(1, gray.size))
    return ImageQuality(
        blur=blur,
        brightness=float(gray.mean(dtype=np.float64) / 255.0),
        highlight=highlight / 255.0,
        contrast=float(gray.std(dtype=np.float64) / 255.0),
        saturation=float(sat.mean(dtype=np.float64)),
        noise=noise,
        aspect_ratio=float(width / max(1, height)),
        width=int(width),
        height=int(height),
        grayscale=bool(spread.max() <= 2) if spread.size else True,
        blank_fraction=blank,
    )


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def flag_issues(metrics: Sequence[ImageQuality | Mapping[str, float]]) -> list[list[str]]:
    """Per image, the issues among: blank, dark, bright, low_contrast, blurry, tiny, extreme_aspect.

    ``blurry`` is relative to the set (the Laplacian variance scale depends on content and
    resolution): log blur more than ``BLUR_MAD_BELOW`` robust σ below the set's median, among
    images that are not blank (a blank image is also "blurry" but is reported as blank)."""
    rows = [m.to_dict() if isinstance(m, ImageQuality) else dict(m) for m in metrics]
    out: list[list[str]] = [[] for _ in rows]
    for i, m in enumerate(rows):
        if m["blank_fraction"] >= BLANK_ABOVE or m["contrast"] < 0.01:
            out[i].append("blank")
            continue
        if m["highlight"] < DARK_BELOW:
            out[i].append("dark")
        if m["brightness"] > BRIGHT_ABOVE:
            out[i].append("bright")
        if m["contrast"] < LOW_CONTRAST_BELOW:
            out[i].append("low_contrast")
        if min(m["width"], m["height"]) < TINY_SIDE_BELOW:
            out[i].append("tiny")
        ar = m["aspect_ratio"]
        if ar > EXTREME_ASPECT or ar < 1 / EXTREME_ASPECT:
            out[i].append("extreme_aspect")
    live = [i for i, m in enumerate(rows) if "blank" not in out[i]]
    if len(live) >= 5:
        lb = np.log1p(np.array([rows[i]["blur"] for i in live]))
        # blur scales with contrast squared: judge it on blur / contrast² so that a dark or
        # low-contrast image is not also called blurry
        con = np.array([max(rows[i]["contrast"], 1e-3) for i in live])
        lb = lb - np.log1p(con**2 * 255**2)
        med = np.median(lb)
        mad = 1.4826 * np.median(np.abs(lb - med)) or 1e-9
        for j, i in enumerate(live):
            if lb[j] < med - BLUR_MAD_BELOW * mad:
                out[i].append("blurry")
    return out


def histogram(values: Sequence[float], bins: int = 10) -> tuple[list[float], list[int]]:
    """(bin edges, counts) of one metric over a set."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return [], []
    counts, edges = np.histogram(v, bins=bins)
    return edges.tolist(), counts.tolist()


def buckets(values: Sequence[float], n: int = 4) -> list[str]:
    """Quantile bucket label per value (``q1``..``qn``, low to high): the slices of a metric."""
    v = np.asarray(values, np.float64)
    edges = np.quantile(v, np.linspace(0, 1, n + 1)[1:-1]) if len(v) else []
    return [f"q{int(np.searchsorted(edges, x, side='right')) + 1}" for x in v]
