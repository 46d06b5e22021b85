"""The gallery filtered by a dataset version: pages over the version's frozen rows.

Training's ListDatasetRows answers a version's rows whole, in the version's order (by input id);
the gallery pages over them here. The page token pins the dataset and the version the first page
resolved ("" = the latest when it was asked), so a version frozen while someone scrolls does not
shift or repeat the pages; the offset counts rows of the filtered list. The other gallery filters
apply to the version as frozen (its concepts and splits: what a model trained on), which gives an
exact total; each page's inputs are then read in their current state from ingestion (ListInputs
with the page's ids), so an input deleted since the freeze is left out of its page. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from firstlight import errors

_TOKEN = re.compile(r"dv1:([A-Za-z0-9][A-Za-z0-9._-]{0,127}):([A-Za-z0-9._-]{1,128}):(\d{1,9})", re.ASCII)


@dataclass(frozen=True)
class FrozenRow:
    input_id: str
    concepts: tuple[str, ...]
    split: int  # 0 = none


@dataclass(frozen=True)
class Page:
    input_ids: list[str]
    total: int
    next_token: str


def parse_token(token: str, dataset_id: str) -> tuple[str, int]:
    """(version, offset) of a gallery dataset page token; ("", 0) for the first page."""
    if not token:
        return "", 0
    m = _TOKEN.fullmatch(token)
    if m is None or m.group(1) != dataset_id:
        raise errors.InvalidArgument(f"page_token {token[:80]!r} is not a page of dataset {dataset_id[:80]!r}")
    return m.group(2), int(m.group(3))


def page(
    rows: Sequence[FrozenRow],
    dataset_id: str,
    version: str,
    offset: int,
    size: int,
    *,
    concepts: Sequence[str] = (),
    split: int = 0,
    labeled: bool | None = None,
) -> Page:
    """The ``size`` rows from ``offset`` of those matching the filters (any of ``concepts``,
    ``split``, labeled or not: on the frozen rows), and the next page's token ("" at the end)."""
    wanted = set(concepts)
    kept = [
        r
        for r in rows
        if (not wanted or wanted.intersection(r.concepts)) and (not split or r.split == split) and (labeled is None or bool(r.concepts) == labeled)
    ]
    chunk = kept[offset : offset + size]
    end = offset + len(chunk)
    return Page([r.input_id for r in chunk], len(kept), f"dv1:{dataset_id}:{version}:{end}" if end < len(kept) else "")
