"""Slices of the worst-slices report by input metadata: which keys to slice by, and each input's
slice value under a key.

Metadata is free text (``map<string, string>``). A key asked for is sliced by value, or by
quartile when all its values are numbers with more than ``NUMERIC_VALUES`` distinct ones (an
exposure, a distance: one slice per reading would leave every slice under ``min_size``).

With no key asked for, the *categorical* keys are chosen: text (or a number with at most
``NUMERIC_VALUES`` values, a code) with 2..``MAX_VALUES`` distinct values among the inputs scored,
at least 2 inputs per value on average (an id, a file name or a timestamp has about one: it would
only add slices under ``min_size`` and multiply the comparisons), and at least one value with
``min_size`` inputs (otherwise none of its slices would be reported). The most widely carried
keys first, at most ``MAX_KEYS``: each key adds comparisons, and so false alarms at 95 %.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from firstlight.domain import validation

MAX_KEYS = 8
MAX_VALUES = 50
NUMERIC_VALUES = 10  # a numeric key with more distinct values is sliced by quartile
FIELD_PREFIX = "metadata."


def _number(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class KeyProfile:
    key: str
    present: int  # inputs carrying the key (with a non-empty value)
    distinct: int
    largest: int  # inputs of its most common value
    numeric: bool  # every value is a finite number

    @property
    def by_quartile(self) -> bool:
        return self.numeric and self.distinct > NUMERIC_VALUES


def profile(metas: Sequence[Mapping[str, str]]) -> dict[str, KeyProfile]:
    """Per metadata key of the inputs: how many carry it, its distinct values, whether numeric."""
    values: dict[str, Counter[str]] = {}
    for m in metas:
        for k, v in m.items():
            if v != "":
                values.setdefault(k, Counter())[v] += 1
    return {k: KeyProfile(k, sum(c.values()), len(c), max(c.values()), all(_number(v) is not None for v in c)) for k, c in values.items()}


def choose_keys(metas: Sequence[Mapping[str, str]], *, min_size: int, max_keys: int = MAX_KEYS) -> list[str]:
    """The categorical keys worth slicing by (see the module's docstring), best first."""
    chosen = [
        p
        for p in profile(metas).values()
        if validation.METADATA_KEY.fullmatch(p.key)
        and not p.by_quartile
        and 2 <= p.distinct <= MAX_VALUES
        and p.present >= 2 * p.distinct
        and p.largest >= min_size
    ]
    chosen.sort(key=lambda p: (-p.present, p.distinct, p.key))
    return [p.key for p in chosen[:max_keys]]


def quartile_labels(values: Sequence[str]) -> list[str]:
    """``q1 [low, high]``..``q4`` per numeric value ("" stays ""): quartiles of the values present,
    each named with the range of its members (ties can leave fewer than four)."""
    present = [i for i, v in enumerate(values) if v != ""]
    x = np.array([_number(values[i]) for i in present], np.float64)
    if not len(x):
        return [""] * len(values)
    edges = np.quantile(x, [0.25, 0.5, 0.75])
    bucket = np.searchsorted(edges, x, side="right")
    names = {int(b): f"q{int(b) + 1} [{x[bucket == b].min():.4g}, {x[bucket == b].max():.4g}]" for b in np.unique(bucket)}
    out = [""] * len(values)
    for i, b in zip(present, bucket, strict=True):
        out[i] = names[int(b)]
    return out


def metadata_fields(metas: Sequence[Mapping[str, str]], keys: Sequence[str]) -> dict[str, list[str]]:
    """``metadata.<key>`` → each input's slice value ("" where it lacks the key: in no slice)."""
    profiles = profile(metas)
    out: dict[str, list[str]] = {}
    for key in keys:
        values = [m.get(key, "") for m in metas]
        p = profiles.get(key)
        out[FIELD_PREFIX + key] = quartile_labels(values) if p is not None and p.by_quartile else values
    return out
