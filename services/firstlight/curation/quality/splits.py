"""Leaky splits and a group-aware stratified split (one mechanism for duplicate groups and for
the frames of one video).

- ``leaks``: groups (duplicate groups, video ids) whose members sit in more than one split.
- ``group_split``: assigns whole groups to train / validation / test, stratified by label,
  and reports the achieved counts next to the targets (whole groups cannot hit every target
  exactly).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Leak:
    """A group with members in several splits: ``splits`` maps split name → member rows."""

    group: int
    splits: dict[str, list[int]]


def leaks(groups: Sequence[Sequence[int]], split_of: Sequence[str]) -> list[Leak]:
    out = []
    for g, members in enumerate(groups):
        by: dict[str, list[int]] = defaultdict(list)
        for i in members:
            if split_of[i]:
                by[split_of[i]].append(int(i))
        if len(by) > 1:
            out.append(Leak(g, dict(by)))
    return out


def leaked_rows(found: Sequence[Leak]) -> set[int]:
    """Rows outside train that have a (near-)copy in another split: what a leak inflates."""
    rows = set()
    for leak in found:
        held_out = [s for s in leak.splits if s != "train"]
        if "train" in leak.splits:
            for s in held_out:
                rows.update(leak.splits[s])
        elif len(held_out) > 1:
            for s in held_out[1:]:
                rows.update(leak.splits[s])
    return rows


@dataclass
class GroupSplit:
    """``assignment[i]``: split of row i; ``counts``/``targets``: rows per split, achieved and
    asked; ``per_label``: label → split → rows; ``groups``: groups per split."""

    assignment: list[str]
    counts: dict[str, int]
    targets: dict[str, int]
    per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)

    def indices(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {s: [] for s in SPLITS}
        for i, s in enumerate(self.assignment):
            out[s].append(i)
        return out


def group_of_rows(n: int, groups: Sequence[Sequence[int]] | None = None, keys: Sequence[str] | None = None) -> list[int]:
    """A group id per row: from explicit groups of rows (duplicate groups), from a key per row
    (a video id; "" = its own group), or both (rows joined by either)."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for g in groups or ():
        g = list(g)
        for i in g[1:]:
            union(g[0], i)
    if keys is not None:
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key:
                if key in first:
                    union(first[key], i)
                else:
                    first[key] = i
    return [find(i) for i in range(n)]


def group_split(
    labels: Sequence[str],
    group_ids: Sequence[int],
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> GroupSplit:
    """Whole groups to splits, stratified by label. Largest groups first (in random order among
    equal sizes); each goes to the split whose per-label shortfall (target minus assigned, for
    the labels in the group, relative to the split's size) is largest, ties broken by the
    split's overall shortfall. Every split that has a non-zero fraction gets at least one group
    of each label when the label has enough groups."""
    n = len(labels)
    if len(group_ids) != n:
        raise ValueError(f"{len(group_ids)} group ids for {n} labels")
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        members[g].append(i)
    label_total = Counter(map(str, labels))
    target_label = {c: frac * m for c, m in label_total.items()}
    target = frac * n
    have_label = {c: np.zeros(3) for c in label_total}
    have = np.zeros(3)
    label_groups = Counter()
    for m in members.values():
        for c in {str(labels[i]) for i in m}:
            label_groups[c] += 1
    rng = np.random.default_rng(seed)
    order = list(members)
    rng.shuffle(order)
    order.sort(key=lambda g: -len(members[g]))
    seen_groups = dict.fromkeys(label_total, 0)
    assign_group: dict[int, int] = {}
    for g in order:
        rows = members[g]
        counts = Counter(str(labels[i]) for i in rows)
        score = np.zeros(3)
        for c, m in counts.items():
            short = (target_label[c] - have_label[c]) / np.maximum(target_label[c], 1e-9)
            # a split with no member of the label yet gets priority while groups remain
            left = label_groups[c] - seen_groups[c]
            need = (have_label[c] == 0) & (frac > 0)
            if need.sum() and left <= need.sum():
                short = short + 10.0 * need
            score += m * short
        score = score + 1e-3 * (target - have) / np.maximum(target, 1e-9)
        score[frac == 0] = -np.inf
        s = int(np.argmax(score))
        assign_group[g] = s
        for c, m in counts.items():
            have_label[c][s] += m
            seen_groups[c] += 1
        have[s] += len(rows)
    assignment = [SPLITS[assign_group[g]] for g in group_ids]
    per_label = {c: {SPLITS[s]: int(v[s]) for s in range(3)} for c, v in sorted(have_label.items())}
    groups_per = Counter(SPLITS[s] for s in assign_group.values())
    return GroupSplit(
        assignment,
        {SPLITS[s]: int(have[s]) for s in range(3)},
        {SPLITS[s]: round(target[s]) for s in range(3)},
        per_label,
        {s: int(groups_per.get(s, 0)) for s in SPLITS},
    )


def class_balance(labels: Sequence[str], split_of: Sequence[str] | None = None) -> dict[str, object]:
    """Counts per concept per split, and per split the imbalance ratio (largest / smallest
    concept) and normalised entropy (1 = perfectly balanced)."""
    split_of = list(split_of) if split_of is not None else ["all"] * len(labels)
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for lab, s in zip(labels, split_of):
        table[s or "none"][str(lab)] += 1
    concepts = sorted({str(x) for x in labels})
    out: dict[str, object] = {"concepts": concepts, "splits": {}}
    for s, cnt in sorted(table.items()):
        v = np.array([cnt.get(c, 0) for c in concepts], dtype=np.float64)
        nz = v[v > 0]
        p = nz / nz.sum() if nz.sum() else nz
        ent = float(-(p * np.log(p)).sum() / np.log(len(concepts))) if len(concepts) > 1 and len(p) else 1.0
        out["splits"][s] = {  # type: ignore[index]
            "counts": {c: int(cnt.get(c, 0)) for c in concepts},
            "total": int(v.sum()),
            "imbalance_ratio": float(v.max() / v.min()) if v.min() > 0 else float("inf"),
            "entropy": ent,
            "missing": [c for c in concepts if cnt.get(c, 0) == 0],
        }
    return out
