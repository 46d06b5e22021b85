"""Filters on the image-quality metrics ingestion stores with each input, and a histogram plot.

A filter is a metric and an inclusive range, written as an expression or as ``metric:min:max``::

    QualityFilter.parse("blur<0.2")              # blur ≤ 0.2 (the service's bounds are inclusive)
    QualityFilter.parse("0.1<=brightness<=0.3")
    QualityFilter.parse("blank_fraction>=0.97")
    QualityFilter.parse("brightness:0.1:")       # brightness ≥ 0.1 (an empty side: unbounded)
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from firstlight.media.image_metrics import METRICS
from firstlight.v1 import common_pb2

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NAME = r"[a-z_]+"
_ONE_SIDED = re.compile(rf"\s*(?P<metric>{_NAME})\s*(?P<op><=?|>=?)\s*(?P<value>{_NUM})\s*")
_TWO_SIDED = re.compile(rf"\s*(?P<low>{_NUM})\s*<=?\s*(?P<metric>{_NAME})\s*<=?\s*(?P<high>{_NUM})\s*")
_COLONS = re.compile(rf"\s*(?P<metric>{_NAME})\s*:\s*(?P<low>{_NUM})?\s*:\s*(?P<high>{_NUM})?\s*")
SYNTAX = "METRIC<=X, METRIC>=X, X<=METRIC<=Y or METRIC:MIN:MAX (either side may be empty; bounds are inclusive)"


@dataclass(frozen=True)
class QualityFilter:
    """Only inputs whose stored ``metric`` lies in [min, max] (None: unbounded on that side).
    Inputs stored before ingestion measured quality have no metrics and never match."""

    metric: str
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown quality metric {self.metric!r}: one of {', '.join(METRICS)}")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"{self.metric}: bounds must be finite numbers (got {bound})")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.metric}: empty range, min {self.min} > max {self.max}")

    @classmethod
    def parse(cls, text: str) -> QualityFilter:
        """A filter from ``text`` (see the module's doc); ValueError naming what is wrong."""
        if m := _TWO_SIDED.fullmatch(text):
            return cls(m["metric"], float(m["low"]), float(m["high"]))
        if m := _ONE_SIDED.fullmatch(text):
            value = float(m["value"])
            return cls(m["metric"], max=value) if m["op"].startswith("<") else cls(m["metric"], min=value)
        if m := _COLONS.fullmatch(text):
            low, high = m["low"], m["high"]
            if low is None and high is None:
                raise ValueError(f"{text!r}: give a minimum, a maximum or both")
            return cls(m["metric"], None if low is None else float(low), None if high is None else float(high))
        raise ValueError(f"cannot read the quality filter {text!r}: write {SYNTAX}")

    def to_proto(self) -> common_pb2.QualityRange:
        out = common_pb2.QualityRange(metric=self.metric)
        if self.min is not None:
            out.min = self.min
        if self.max is not None:
            out.max = self.max
        return out

    def __str__(self) -> str:
        low = "" if self.min is None else f"{self.min:g} ≤ "
        high = "" if self.max is None else f" ≤ {self.max:g}"
        return f"{low}{self.metric}{high}"


def histogram_png(edges: Sequence[float], counts: Sequence[int], title: str = "", metric: str = "") -> bytes:
    """Bar plot of a quality histogram (``edges``: bins + 1 of them) as PNG bytes."""
    # matplotlib is imported on use: most SDK users never draw a plot.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    if counts:
        widths = [b - a for a, b in itertools.pairwise(edges)]
        ax.bar(list(edges[:-1]), list(counts), width=widths, align="edge", color="#4c78a8", edgecolor="white", linewidth=0.5)
    ax.set_xlabel(metric)
    ax.set_ylabel("inputs")
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


__all__ = ["SYNTAX", "QualityFilter", "histogram_png"]
