"""Exact and near-duplicate inputs, grouped.

- Exact: identical bytes (``content_hash``, SHA-256).
- Near: embedding cosine ≥ ``threshold`` between k-nearest neighbours (``neighbors.knn``: a
  blocked matrix product, never a Python all-pairs loop), or — for re-encodes, flips and
  colour shifts, which the embedding may place a little further apart than two different
  images of one class — a neighbour pair (cosine ≥ ``candidate_cosine``) whose tiny-image
  descriptors agree (``thumbnail``: 6×6 gray, mean and contrast removed, and its mirror;
  correlation ≥ ``THUMB_MIN``), or one whose 32×32 canvases show one as a crop of the other
  (``canvases``: :mod:`firstlight.curation.quality.crops`).
- A perceptual hash (64-bit DCT hash of the image and of its mirror) within ``max_hamming``
  bits, found by band lookup (pigeonhole: with b + 1 bands two hashes within b bits agree
  exactly on one band), for callers without embeddings; on low-detail images (silhouettes,
  icons) unrelated images share hashes, so with embeddings a hash match also needs
  ``hash_min_cosine``.
- ``group_of``: inputs that belong together anyway (frames of one video) are never reported as
  duplicates of each other.

Pairs are joined transitively into groups (union-find). ``keep_one`` names the member to keep.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firstlight.curation.quality.crops import crop_pairs
from firstlight.curation.quality.neighbors import Neighbors, knn, normalize
from firstlight.media.pixel_signature import THUMB_SIZE as THUMB_SIZE  # shared with ingestion, which stores them
from firstlight.media.pixel_signature import thumbnail as thumbnail

#: Cosine at or above which two EfficientNet-Lite0 embeddings are called near-duplicates
#: (bench/data_quality.py: planted crops, flips, re-encodes and colour shifts of animal-mnist).
DEFAULT_THRESHOLD = 0.985
DEFAULT_MAX_HAMMING = 2
#: A perceptual-hash match counts only when the embeddings agree this much too: on
#: low-detail images (silhouettes, icons) unrelated images share hashes.
HASH_MIN_COSINE = 0.9


#: Tiny-image correlation for a near-duplicate among embedding neighbours. bench/data_quality.py
#: (animal-mnist): JPEG re-encodes ≥ 0.999, colour shifts ≥ 0.9994, flips 1.0; the closest
#: unrelated pair 0.997.
THUMB_MIN = 0.998
CANDIDATE_COSINE = 0.8


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_D32 = _dct_matrix(32)


def _gray32(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32)


def _hash_of(g: np.ndarray) -> int:
    coeffs = (_D32 @ g @ _D32.T)[:8, :8].ravel()
    bits = coeffs[1:] > np.median(coeffs[1:])
    value = 0
    for b in bits:  # 63 bits (the DC term is left out)
        value = (value << 1) | int(b)
    return value


def perceptual_hash(image: np.ndarray) -> tuple[int, int]:
    """(DCT hash of the image, of its horizontal mirror) for an RGB or gray uint8 array."""
    g = _gray32(image)
    return _hash_of(g), _hash_of(g[:, ::-1].copy())


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            out[self.find(i)].append(i)
        return sorted((g for g in out.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows that are (near-)copies of one another; ``keep`` is the member to keep, ``kind`` is
    ``exact`` when every member has the same bytes, else ``near``; ``similarity`` the lowest
    cosine of a pair that joined the group (1.0 for exact); ``exact_copies`` how many members
    are byte copies of another member (also in a ``near`` group that holds them and, say, a
    re-encode of them)."""

    members: list[int]
    keep: int
    kind: str
    similarity: float
    exact_copies: int = 0


def exact_groups(hashes: Sequence[str]) -> list[list[int]]:
    by: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        if h:
            by[h].append(i)
    return sorted((g for g in by.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def embedding_pairs(nb: Neighbors, threshold: float = DEFAULT_THRESHOLD, group_of: Sequence[str] | None = None) -> list[tuple[int, int, float]]:
    """(i, j, cosine) with i < j for neighbour pairs at or above ``threshold``."""
    out = {}
    rows, cols = np.nonzero(nb.sim >= threshold)
    for r, c in zip(rows.tolist(), cols.tolist()):
        j = int(nb.index[r, c])
        a, b = (r, j) if r < j else (j, r)
        if group_of is not None and group_of[a] and group_of[a] == group_of[b]:
            continue
        out[(a, b)] = max(out.get((a, b), -1.0), float(nb.sim[r, c]))
    return [(a, b, s) for (a, b), s in sorted(out.items())]


def thumbnail_pairs(
    nb: Neighbors,
    thumbnails: np.ndarray,
    candidate_cosine: float = CANDIDATE_COSINE,
    thumb_min: float = THUMB_MIN,
    group_of: Sequence[str] | None = None,
) -> list[tuple[int, int, float]]:
    """(i, j, embedding cosine) for neighbour pairs with cosine ≥ ``candidate_cosine`` whose
    thumbnails (either orientation) correlate ≥ ``thumb_min``."""
    rows, cols = np.nonzero(nb.sim >= candidate_cosine)
    if not len(rows):
        return []
    j = nb.index[rows, cols]
    t = np.asarray(thumbnails, np.float32)
    corr = np.maximum(np.einsum("nd,nd->n", t[rows, 0], t[j, 0]), np.einsum("nd,nd->n", t[rows, 0], t[j, 1]))
    out: dict[tuple[int, int], float] = {}
    for r, c, jj, ok in zip(rows.tolist(), cols.tolist(), j.tolist(), (corr >= thumb_min).tolist()):
        if not ok:
            continue
        a, b = (r, jj) if r < jj else (jj, r)
        if group_of is not None and group_of[a] and group_of[a] == group_of[b]:
            continue
        out[(a, b)] = float(nb.sim[r, c])
    return [(a, b, s) for (a, b), s in sorted(out.items())]


def hash_pairs(hashes: Sequence[tuple[int, int]], max_hamming: int = DEFAULT_MAX_HAMMING, group_of: Sequence[str] | None = None) -> list[tuple[int, int, int]]:
    """(i, j, bits) with i < j whose perceptual hashes (either orientation) differ in at most
    ``max_hamming`` bits. Band lookup: with b = max_hamming + 1 bands, two hashes that close
    agree exactly on at least one band."""
    bands = max_hamming + 1
    width = -(-63 // bands)
    mask = (1 << width) - 1
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (h, _) in enumerate(hashes):
        for b in range(bands):
            buckets[(b, (h >> (b * width)) & mask)].append(i)
    found: dict[tuple[int, int], int] = {}
    for j, (h, hf) in enumerate(hashes):
        for probe in (h, hf):
            for b in range(bands):
                for i in buckets.get((b, (probe >> (b * width)) & mask), ()):
                    if i == j:
                        continue
                    a, c = (i, j) if i < j else (j, i)
                    if (a, c) in found:
                        continue
                    if group_of is not None and group_of[a] and group_of[a] == group_of[c]:
                        continue
                    d = min(hamming(hashes[i][0], h), hamming(hashes[i][0], hf))
                    if d <= max_hamming:
                        found[(a, c)] = d
    return [(a, c, d) for (a, c), d in sorted(found.items())]


def find_duplicates(
    *,
    n: int,
    embeddings: np.ndarray | None = None,
    neighbors: Neighbors | None = None,
    content_hashes: Sequence[str] | None = None,
    perceptual_hashes: Sequence[tuple[int, int]] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    group_of: Sequence[str] | None = None,
    quality: Sequence[float] | None = None,
    k: int = 10,
    hash_min_cosine: float = HASH_MIN_COSINE,
    skip: Sequence[int] = (),
    thumbnails: np.ndarray | None = None,
    thumb_min: float = THUMB_MIN,
    candidate_cosine: float = CANDIDATE_COSINE,
    canvases: np.ndarray | None = None,
) -> list[DuplicateGroup]:
    """Groups of exact and near-duplicate rows, largest first.

    Any of the three signals may be missing. ``quality`` (higher is better, e.g. resolution)
    picks the member to keep; ties go to the lowest row. With ``embeddings``, a perceptual-hash
    match also needs cosine ≥ ``hash_min_cosine``. Rows in ``skip`` (blank images: they all look
    alike and the quality check reports them) join no near-duplicate group."""
    skipped = {int(i) for i in skip}
    uf = _UnionFind(n)
    lowest = [1.0] * n
    exact_sets = exact_groups(content_hashes) if content_hashes is not None else []
    copies_of: dict[int, int] = {}  # first row of an exact set that counts -> its other rows
    for g in exact_sets:
        # identical bytes all within one group_of key (frames of one video) are not duplicates;
        # once another input shares them, every member is a copy of that one
        keys = {group_of[i] or f"\0{i}" for i in g} if group_of is not None else {str(i) for i in g}
        if len(keys) > 1:
            copies_of[g[0]] = len(g) - 1
            for i in g[1:]:
                uf.union(g[0], i)
    if neighbors is None and embeddings is not None and len(embeddings) > 1:
        neighbors = knn(embeddings, k)
    if neighbors is not None:
        for a, b, s in embedding_pairs(neighbors, threshold, group_of):
            if a in skipped or b in skipped:
                continue
            uf.union(a, b)
            lowest[a] = min(lowest[a], s)
            lowest[b] = min(lowest[b], s)
    if neighbors is not None and thumbnails is not None:
        for a, b, s in thumbnail_pairs(neighbors, thumbnails, candidate_cosine, thumb_min, group_of):
            if a in skipped or b in skipped:
                continue
            uf.union(a, b)
            lowest[a] = min(lowest[a], s)
            lowest[b] = min(lowest[b], s)
    if neighbors is not None and canvases is not None:  # crops (quality.crops)
        for a, b, s in crop_pairs(neighbors, canvases, group_of=group_of):
            if a in skipped or b in skipped:
                continue
            uf.union(a, b)
            lowest[a] = min(lowest[a], s)
            lowest[b] = min(lowest[b], s)
    if perceptual_hashes is not None:
        E = normalize(embeddings) if embeddings is not None else None
        for a, b, _ in hash_pairs(perceptual_hashes, max_hamming, group_of):
            if a in skipped or b in skipped:
                continue
            if E is not None:
                s = float(E[a] @ E[b])
                if s < hash_min_cosine:
                    continue
                lowest[a] = min(lowest[a], s)
                lowest[b] = min(lowest[b], s)
            uf.union(a, b)
    exact_members = {frozenset(g) for g in exact_sets}
    out = []
    for members in uf.groups():
        if quality is not None:
            keep = max(members, key=lambda i: (quality[i], -i))
        else:
            keep = members[0]
        kind = "exact" if frozenset(members) in exact_members else "near"
        sim = 1.0 if kind == "exact" else float(min(lowest[i] for i in members))
        out.append(DuplicateGroup(members, keep, kind, sim, sum(copies_of.get(i, 0) for i in members)))
    return out


def pair_set(groups: Sequence[DuplicateGroup] | Sequence[Sequence[int]]) -> set[tuple[int, int]]:
    """All unordered pairs within each group (for precision / recall against planted truth)."""
    out = set()
    for g in groups:
        m = sorted(g.members if isinstance(g, DuplicateGroup) else g)
        out.update((a, b) for i, a in enumerate(m) for b in m[i + 1 :])
    return out
