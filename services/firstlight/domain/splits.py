"""Stratified train/validation/test splits and frozen dataset versions.

``stratified_split`` allocates every concept's inputs to the three splits in proportion to the
split sizes (controlled rounding: the split totals are exact, each concept's share of each split
is within one item of proportional), guarantees every concept at least one input in train and
one in validation (when validation is non-empty), and is deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from firstlight.domain.errors import SplitError, SplitPreconditionError

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
# Splits every concept must appear in (validation only when it is non-empty).
REQUIRED_SPLITS: tuple[str, str] = ("train", "validation")


def _targets_from_fractions(n: int, fractions: Sequence[float]) -> list[int]:
    if len(fractions) != 3:
        raise SplitError(f"fractions must have 3 values (train, validation, test), got {len(fractions)}")
    fr = [float(f) for f in fractions]
    if any(not math.isfinite(f) or f < 0 for f in fr):
        raise SplitError(f"fractions must be finite and >= 0, got {tuple(fractions)}")
    total = sum(fr)
    if abs(total - 1.0) > 1e-6:
        raise SplitError(f"fractions must sum to 1, got {tuple(fractions)} (sum {total:g})")
    # Largest remainder: exact total n, each split within 1 of n * fraction.
    raw = [n * f / total for f in fr]
    out = [math.floor(r) for r in raw]
    order = sorted(range(3), key=lambda s: (-(raw[s] - out[s]), s))
    for s in order[: n - sum(out)]:
        out[s] += 1
    return out


def _targets_from_counts(n: int, counts: Sequence[int]) -> list[int]:
    if len(counts) != 3:
        raise SplitError(f"counts must have 3 values (train, validation, test), got {len(counts)}")
    out = []
    for name, c in zip(SPLIT_NAMES, counts):
        if isinstance(c, bool) or int(c) != c or c < 0:
            raise SplitError(f"counts[{name}] must be a non-negative integer, got {c!r}")
        out.append(int(c))
    if sum(out) > n:
        raise SplitError(f"counts {tuple(out)} ask for {sum(out)} inputs but only {n} are labeled")
    return out


def _allocate(class_sizes: np.ndarray, targets: list[int], rng: np.random.Generator) -> np.ndarray:
    """Integer matrix a[c, s] (s over train, validation, test, unused) with row sums = class
    sizes and column sums = targets, each cell within one of proportional."""
    n = int(class_sizes.sum())
    cols = np.array(targets + [n - sum(targets)], dtype=np.int64)
    expected = class_sizes[:, None] * cols[None, :] / n
    alloc = np.floor(expected + 1e-9).astype(np.int64)
    row_left = class_sizes - alloc.sum(1)
    col_left = cols - alloc.sum(0)
    frac = expected - alloc
    # Give the remaining units to the cells with the largest remainders (random tie-break).
    tie = rng.random(frac.shape)
    for flat in np.lexsort((tie.ravel(), -frac.ravel())):
        c, s = divmod(int(flat), frac.shape[1])
        if row_left[c] > 0 and col_left[s] > 0:
            alloc[c, s] += 1
            row_left[c] -= 1
            col_left[s] -= 1
    # Rare leftovers (remainders do not always pair up): any row with any column.
    for c in np.flatnonzero(row_left > 0):
        while row_left[c] > 0:
            s = int(np.argmax(col_left))
            alloc[c, s] += 1
            row_left[c] -= 1
            col_left[s] -= 1
    assert (alloc.sum(1) == class_sizes).all() and (alloc.sum(0) == cols).all()
    return alloc


def _ensure_minimum(alloc: np.ndarray, expected: np.ndarray, concepts: list[str], required: list[int]) -> None:
    """Make every concept have >= 1 item in each required split, keeping all row and column sums:
    a 2x2 exchange moves one item of concept c into split s (from c's most over-served split s2)
    and one item of another concept c2 out of s (into s2)."""
    for c in range(alloc.shape[0]):
        for s in required:
            if alloc[c, s] > 0:
                continue
            donors_split = [s2 for s2 in range(alloc.shape[1]) if s2 != s and alloc[c, s2] > (1 if s2 in required else 0)]
            if not donors_split:
                continue  # too few items: reported by the caller with the concept's size
            s2 = max(donors_split, key=lambda j: (alloc[c, j] - expected[c, j], -j))
            donors = [c2 for c2 in range(alloc.shape[0]) if c2 != c and alloc[c2, s] > 1]
            if not donors:
                raise SplitPreconditionError(
                    f"the {SPLIT_NAMES[s]} split has {int(alloc[:, s].sum())} inputs, fewer than the "
                    f"{alloc.shape[0]} concepts; concept {concepts[c]!r} would be absent from it "
                    f"(make {SPLIT_NAMES[s]} larger)",
                    concepts[c],
                )
            c2 = max(donors, key=lambda k: (alloc[k, s] - expected[k, s], -k))
            alloc[c, s] += 1
            alloc[c, s2] -= 1
            alloc[c2, s] -= 1
            alloc[c2, s2] += 1


def stratified_split(
    labels: Sequence[str],
    *,
    fractions: Sequence[float] | None = (0.8, 0.1, 0.1),
    counts: Sequence[int] | None = None,
    seed: int = 0,
) -> dict[str, list[int]]:
    """Split ``labels`` (one stratification key per input, usually its concept) into
    ``{"train": [...], "validation": [...], "test": [...]}`` of indices into ``labels`` (sorted).

    - ``fractions``: split sizes as fractions of all inputs (must sum to 1; None: 0.8/0.1/0.1).
    - ``counts``: exact split sizes instead, e.g. ``(500, 100, 100)``; their sum may be smaller
      than ``len(labels)`` (the rest is left out, stratified the same way) but not larger.
    - Every concept gets at least one input in train and, when validation is non-empty, one in
      validation; otherwise :class:`SplitPreconditionError` (FAILED_PRECONDITION) names it.
    - Deterministic: the same labels and seed always give the same split.

    For multi-label data pass one key per input, e.g. from :func:`stratification_keys`.
    """
    labels = [str(lab) for lab in labels]
    n = len(labels)
    if n == 0:
        raise SplitPreconditionError("there are no labeled inputs to split")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise SplitError(f"seed must be a non-negative integer, got {seed!r}")
    if counts is not None:
        targets = _targets_from_counts(n, counts)
    else:
        targets = _targets_from_fractions(n, DEFAULT_FRACTIONS if fractions is None else fractions)
    if targets[0] == 0:
        raise SplitError(f"the train split would be empty (sizes {tuple(targets)})")

    concepts = sorted(set(labels))
    index = {c: i for i, c in enumerate(concepts)}
    codes = np.fromiter((index[lab] for lab in labels), dtype=np.int64, count=n)
    sizes = np.bincount(codes, minlength=len(concepts))
    required = [0] + ([1] if targets[1] > 0 else [])
    for c, size in zip(concepts, sizes):
        if size < len(required):
            where = " and ".join(SPLIT_NAMES[s] for s in required)
            raise SplitPreconditionError(
                f"concept {c!r} has {int(size)} labeled input; it needs at least {len(required)} "
                f"to appear in both {where} (label more inputs of {c!r} or remove the concept)",
                c,
            )
    rng = np.random.default_rng(int(seed))
    alloc = _allocate(sizes, targets, rng)
    expected = sizes[:, None] * np.array(targets + [n - sum(targets)])[None, :] / n
    _ensure_minimum(alloc, expected, concepts, required)

    out: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    for ci in range(len(concepts)):
        members = np.flatnonzero(codes == ci)
        members = members[rng.permutation(len(members))]
        start = 0
        for s, name in enumerate(SPLIT_NAMES):
            out[name].extend(int(i) for i in members[start : start + alloc[ci, s]])
            start += int(alloc[ci, s])
    for name in SPLIT_NAMES:
        out[name].sort()
    check_split(labels, out, require_validation=targets[1] > 0)
    return out


def check_split(
    labels: Sequence[str], split: Mapping[str, Sequence[int]], *, require_validation: bool = True
) -> None:
    """Raise :class:`SplitPreconditionError` naming the first concept (sorted) that is absent
    from train (or validation, when required) — also for splits the client chose itself."""
    for name in ("train", "validation") if require_validation else ("train",):
        present = {labels[i] for i in split.get(name, ())}
        missing = sorted(set(map(str, labels)) - present)
        if missing:
            more = f" (and {len(missing) - 1} more: {', '.join(map(repr, missing[1:6]))})" if len(missing) > 1 else ""
            raise SplitPreconditionError(
                f"concept {missing[0]!r} has no input in the {name} split{more}; every concept "
                f"needs at least one labeled input in train and in validation",
                missing[0],
            )


def stratification_keys(label_lists: Sequence[Sequence[str]]) -> list[str]:
    """One key per multi-label input for :func:`stratified_split`: its rarest concept (so rare
    concepts are spread over the splits first), ``""`` for inputs with no concept."""
    freq: dict[str, int] = {}
    for labs in label_lists:
        for c in set(labs):
            freq[c] = freq.get(c, 0) + 1
    return [min(set(labs), key=lambda c: (freq[c], c)) if labs else "" for labs in label_lists]


def dataset_version_id(
    rows: Iterable[tuple[Any, ...]], *, extra: Mapping[str, str] | None = None
) -> str:
    """Stable content hash of a frozen dataset version: ``rows`` are ``(input_id, concept(s),
    split[, regions])``, regions as (concept, x0, y0, x1, y1) boxes. Independent of row order
    and of concept and box order within a row; any change of an id, a label, a box or a split
    (or of ``extra``, e.g. the embedding model) gives a different id. Rows without boxes hash
    as they did before boxes existed, so classifier datasets keep their ids.
    Returns ``"ds-" + 24 hex digits``."""
    canon: list[list[Any]] = []
    for input_id, concepts, split, *rest in rows:
        labs = [concepts] if isinstance(concepts, str) else list(concepts)
        row: list[Any] = [str(input_id), sorted(set(map(str, labs))), str(split)]
        boxes = rest[0] if rest else None
        if boxes:
            row.append(sorted([str(g[0]), *(round(float(v), 6) for v in g[1:5])] for g in boxes))
        canon.append(row)
    canon.sort()
    ids = [r[0] for r in canon]
    if len(set(ids)) != len(ids):
        dup = next(i for i, j in zip(ids, ids[1:]) if i == j)
        raise SplitError(f"input {dup!r} appears twice in the dataset version")
    payload = json.dumps(
        {"v": 1, "rows": canon, "extra": dict(sorted((extra or {}).items()))},
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return "ds-" + hashlib.sha256(payload.encode()).hexdigest()[:24]
