"""Plain records the training core, its store and its template runners share."""

from __future__ import annotations

from dataclasses import dataclass

# Job states (the values of firstlight.v1.JobState).
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = 1, 2, 3, 4, 5
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)

Box = tuple[str, float, float, float, float]  # (concept, x0, y0, x1, y1), normalised


@dataclass(frozen=True)
class DatasetRow:
    input_id: str
    concepts: list[str]
    split: int
    #: the input's box labels when the version was frozen; None: not snapshotted (older versions)
    regions: list[Box] | None = None
