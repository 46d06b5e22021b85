"""Group-aware stratified split: every member of a group (the frames of one video, a set of
near-duplicates) lands in the same split, so no near-identical image sits in train and test;
within that constraint the label mix of each split follows the whole set's, and the requested
sizes are honoured as closely as the group sizes allow. The achieved sizes are reported.

Greedy, largest group first (as StratifiedGroupKFold does): each group goes to the split where
it most reduces the squared distance of every split's label counts and size to their targets.
Large groups are placed while every split still has room; small groups fill the gaps."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from firstlight.errors import InvalidArgument

SPLITS = ("train", "validation", "test")
LEFT_OUT = "left_out"


@dataclass
class GroupSplit:
    #: split name -> sorted indices into the inputs (with ``counts`` summing below the number
    #: of inputs, the rest are under LEFT_OUT).
    splits: dict[str, list[int]]
    requested: dict[str, int]
    achieved: dict[str, int]
    #: split name -> label -> count.
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)


def _targets(n: int, fractions: Sequence[float] | None, counts: Sequence[int] | None) -> list[int]:
    if counts is not None:
        if len(counts) != len(SPLITS) or any(int(c) != c or c < 0 for c in counts):
            raise InvalidArgument(f"counts must be {len(SPLITS)} non-negative integers, got {tuple(counts)}")
        if sum(counts) > n:
            raise InvalidArgument(f"counts {tuple(counts)} ask for {sum(counts)} inputs, there are {n}")
        return [int(c) for c in counts]
    fr = (0.8, 0.1, 0.1) if fractions is None else tuple(float(f) for f in fractions)
    if len(fr) != len(SPLITS) or any(f < 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
        raise InvalidArgument(f"fractions must be {len(SPLITS)} non-negative numbers summing to 1, got {fr}")
    raw = [f * n for f in fr]
    out = [int(r) for r in raw]
    for i in sorted(range(len(fr)), key=lambda i: raw[i] - out[i], reverse=True)[: n - sum(out)]:
        out[i] += 1
    return out


def group_split(
    labels: Sequence[str],
    groups: Sequence[str | None],
    *,
    fractions: Sequence[float] | None = (0.8, 0.1, 0.1),
    counts: Sequence[int] | None = None,
    seed: int = 0,
) -> GroupSplit:
    """Split inputs (one stratification label and one group per input; group None: the input
    is a group of its own) into train/validation/test. Deterministic for a seed."""
    n = len(labels)
    if n == 0 or len(groups) != n:
        raise InvalidArgument(f"{n} labels and {len(groups)} groups: need one group per input and at least one input")
    targets = _targets(n, fractions, counts)
    names = list(SPLITS)
    if sum(targets) < n:
        names.append(LEFT_OUT)
        targets.append(n - sum(targets))
    label_names = sorted(set(labels))
    lab_index = {lab: j for j, lab in enumerate(label_names)}
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(f"g:{g}" if g is not None else f"i:{i}", []).append(i)
    keys = list(members)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(keys))  # ties between equal sizes broken by the seed
    order = sorted(shuffled.tolist(), key=lambda k: -len(members[keys[k]]))

    share = np.asarray(targets, float) / n  # each split's share of every label
    label_totals = np.zeros(len(label_names))
    for lab in labels:
        label_totals[lab_index[lab]] += 1
    want = np.outer(share, label_totals)  # split x label
    have = np.zeros_like(want)
    size = np.zeros(len(names))
    want_size = np.asarray(targets, float)
    # Labels weigh by their rarity (a rare class matters as much as a common one); sizes weigh
    # as much as all labels together, so the requested counts hold first.
    w_label = 1.0 / np.maximum(label_totals, 1.0)
    w_size = 1.0 / max(n, 1) * len(label_names)
    assign = np.empty(n, dtype=int)
    for k in order:
        idx = members[keys[k]]
        c = np.zeros(len(label_names))
        for i in idx:
            c[lab_index[labels[i]]] += 1
        m = len(idx)
        gain = (((have + c - want) ** 2 - (have - want) ** 2) * w_label).sum(axis=1)
        gain += w_size * ((size + m - want_size) ** 2 - (size - want_size) ** 2)
        gain[want_size == 0] = np.inf  # never into a split asked to be empty
        s = int(np.argmin(gain))
        have[s] += c
        size[s] += m
        assign[idx] = s
    splits = {name: sorted(np.flatnonzero(assign == s).tolist()) for s, name in enumerate(names)}
    per_label = {name: {lab: int(have[s, j]) for j, lab in enumerate(label_names) if have[s, j]} for s, name in enumerate(names)}
    return GroupSplit(
        splits=splits,
        requested=dict(zip(names, targets)),
        achieved={name: len(v) for name, v in splits.items()},
        labels=per_label,
        groups={name: len({groups[i] if groups[i] is not None else f"i:{i}" for i in v}) for name, v in splits.items()},
    )


def merge_groups(groups: Sequence[str | None], linked: Iterable[Sequence[int]]) -> list[str | None]:
    """Each input's group once inputs that share a group (a video) or a linked set (a duplicate
    group, as indices into the inputs) are joined, transitively: two videos sharing a
    near-duplicate frame become one group. An input joined to nothing stays None. The merged
    group is named by its lowest-index member's group (or ``#<index>``): deterministic."""
    parent = list(range(len(groups)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[str, int] = {}
    for i, g in enumerate(groups):
        if g is not None:
            union(first.setdefault(g, i), i)
    for members in linked:
        idx = [int(i) for i in members]
        if any(not 0 <= i < len(groups) for i in idx):
            raise InvalidArgument(f"a linked set names an input outside 0..{len(groups) - 1}: {idx}")
        for i in idx[1:]:
            union(idx[0], i)
    size: dict[int, int] = {}
    for i in range(len(groups)):
        size[find(i)] = size.get(find(i), 0) + 1
    out: list[str | None] = []
    for i, g in enumerate(groups):
        root = find(i)
        if size[root] == 1:
            out.append(g)  # alone: keeps its own group (or None)
        else:
            out.append(groups[root] if groups[root] is not None else f"#{root}")
    return out
