"""Crop-robust near-duplicate signature: is one image a crop (rescaled) of the other?

A crop moves every pixel, so neither the embedding (cosine of a crop of a 28-px silhouette to its
source is often below the near-duplicate threshold) nor the 6×6 tiny-image descriptor (compared
in place) finds it. Here each image becomes a 32×32 gray canvas; its *views* are area-resampled
16×16 crops of it (scales 0.84–0.96 of each side, 5×5 positions: 125 views) and its *signature*
the 16×16 of the whole canvas, each with mean and contrast removed. Two images are crops of one
another when a view of one correlates with the other's signature at ``CROP_MIN`` or more.

Only embedding-neighbour pairs are compared (``candidate_cosine``), so the cost is one batch of
views per image (two matrix products per 256 images, no Python per-pixel loop) and a 125×256 by
256 product per candidate pair. Area resampling (each output pixel the coverage-weighted mean of
the input it spans) rather than point sampling: a view then matches the crop a resize made, where
bilinear point samples alias on the silhouettes' hard edges.

bench/data_quality.py (animal-mnist, 3 seeds): planted crops score ≥ 0.993 (10th percentile),
unrelated images of the same class at most 0.985 (random pairs); among each original's 10
pixel-nearest others (the hardest pairs there are) 2-4 of ~30,000 pairs reach 0.99, none 0.993.
Hence ``CROP_MIN`` = 0.99."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from firstlight.curation.quality.neighbors import Neighbors
from firstlight.media.pixel_signature import CANVAS  # shared with ingestion, which stores them
from firstlight.media.pixel_signature import canvas as canvas

SIGNATURE = 16
SCALES = (0.84, 0.87, 0.90, 0.93, 0.96)
POSITIONS = 5  # per axis
CROP_MIN = 0.99
#: Embedding cosine of a candidate pair: planted crops of 28-px silhouettes sit at 0.72-0.87
#: (bench/data_quality.py), below the thumbnail rule's 0.8; the crop match itself is strict.
CANDIDATE_COSINE = 0.7
_CHUNK = 256


def _area_matrix(lo: float, hi: float, n_in: int = CANVAS, n_out: int = SIGNATURE) -> np.ndarray:
    """(n_out, n_in): output j is the coverage-weighted mean of the input over its span of
    [lo, hi) cut in n_out equal parts."""
    w = (hi - lo) / n_out
    edges = np.arange(n_in + 1, dtype=np.float64)
    starts = lo + w * np.arange(n_out)[:, None]
    cov = np.clip(np.minimum(edges[None, 1:], starts + w) - np.maximum(edges[None, :-1], starts), 0.0, None)
    return (cov / w).astype(np.float32)


def _view_matrices() -> tuple[np.ndarray, np.ndarray]:
    rows, cols = [], []
    for f in SCALES:
        for yi in range(POSITIONS):
            for xi in range(POSITIONS):
                x, y = (1 - f) * xi / (POSITIONS - 1) * CANVAS, (1 - f) * yi / (POSITIONS - 1) * CANVAS
                rows.append(_area_matrix(y, y + f * CANVAS))
                cols.append(_area_matrix(x, x + f * CANVAS))
    return np.stack(rows), np.stack(cols)  # (V, S, C) each


_ROWS, _COLS = _view_matrices()
_FULL = _area_matrix(0.0, float(CANVAS))


def _normalize(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(-1, keepdims=True)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 1e-6)  # a flat image correlates with nothing


def signatures(canvases: np.ndarray) -> np.ndarray:
    """(n, 256): each whole canvas at 16×16, mean and contrast removed."""
    g = np.asarray(canvases, np.float32)
    return _normalize((_FULL[None] @ g @ _FULL.T[None]).reshape(len(g), -1))


def views(canvases: np.ndarray) -> np.ndarray:
    """(n, 125, 256): the crops of each canvas at 16×16, mean and contrast removed."""
    g = np.asarray(canvases, np.float32)
    out = np.matmul(_ROWS[None], g[:, None]) @ np.swapaxes(_COLS, 1, 2)[None]
    return _normalize(out.reshape(len(g), len(_ROWS), -1))


def crop_pairs(
    nb: Neighbors,
    canvases: np.ndarray,
    candidate_cosine: float = CANDIDATE_COSINE,
    crop_min: float = CROP_MIN,
    group_of: Sequence[str] | None = None,
) -> list[tuple[int, int, float]]:
    """(i, j, embedding cosine) with i < j for neighbour pairs (cosine ≥ ``candidate_cosine``)
    where a crop of one matches the other (correlation ≥ ``crop_min``), either way round."""
    rows, cols = np.nonzero(nb.sim >= candidate_cosine)
    if not len(rows):
        return []
    pairs: dict[tuple[int, int], float] = {}
    for r, c in zip(rows.tolist(), cols.tolist()):
        j = int(nb.index[r, c])
        if j == r or (group_of is not None and group_of[r] and group_of[r] == group_of[j]):
            continue
        pairs[(min(r, j), max(r, j))] = float(nb.sim[r, c])
    if not pairs:
        return []
    sig = signatures(canvases)
    # each unordered pair both ways: the views of a against b's signature, and of b against a's
    directed = [(a, b) for a, b in pairs] + [(b, a) for a, b in pairs]
    by_row: dict[int, list[int]] = {}
    for a, b in directed:
        by_row.setdefault(a, []).append(b)
    best: dict[tuple[int, int], float] = {}
    order = sorted(by_row)
    for start in range(0, len(order), _CHUNK):
        chunk = order[start : start + _CHUNK]
        v = views(np.asarray(canvases)[chunk])
        for k, a in enumerate(chunk):
            others = by_row[a]
            score = (v[k] @ sig[others].T).max(axis=0)
            for b, s in zip(others, score.tolist()):
                key = (min(a, b), max(a, b))
                best[key] = max(best.get(key, -1.0), s)
    return [(a, b, pairs[(a, b)]) for (a, b), s in sorted(best.items()) if s >= crop_min]
