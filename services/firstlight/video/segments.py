"""Per-frame predictions -> time segments ("dog from 00:12.0 to 00:31.0, max score 0.93"),
built incrementally so a Predict on a video can stream each segment as soon as it closes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class Segment:
    concept: Any  # a concept name; for a workflow's frames, (step index, concept name)
    start_s: float
    end_s: float  # time of the last frame at or above the threshold
    max_score: float
    frames: int  # frames at or above the threshold in it
    score_sum: float = 0.0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.frames if self.frames else 0.0


class SegmentTracker:
    """Feed frames in time order (``add``); each call returns the segments that closed. A
    concept's segment stays open across frames below ``threshold`` for up to ``max_gap_s``
    (one missed frame at 1 frame/s does not split it); ``finish`` closes the rest."""

    def __init__(self, threshold: float = 0.5, max_gap_s: float = 2.0, min_frames: int = 1) -> None:
        self.threshold, self.max_gap_s, self.min_frames = threshold, max_gap_s, min_frames
        self.open: dict[Any, Segment] = {}
        self.last_t = float("-inf")

    def add(self, t: float, scores: Mapping[Any, float]) -> list[Segment]:
        if t < self.last_t:
            raise ValueError(f"frames must come in time order ({t} after {self.last_t})")
        self.last_t = t
        for concept, score in scores.items():
            if score < self.threshold:
                continue
            seg = self.open.get(concept)
            if seg is None:
                self.open[concept] = Segment(concept, t, t, score, 1, score)
            else:
                seg.end_s, seg.max_score = t, max(seg.max_score, score)
                seg.frames += 1
                seg.score_sum += score
        return self._close(lambda seg: t - seg.end_s > self.max_gap_s)

    def finish(self) -> list[Segment]:
        return self._close(lambda seg: True)

    def _close(self, done) -> list[Segment]:  # type: ignore[no-untyped-def]
        closed = [seg for seg in self.open.values() if done(seg)]
        for seg in closed:
            del self.open[seg.concept]
        return sorted((s for s in closed if s.frames >= self.min_frames), key=lambda s: (s.start_s, s.concept))


def segments(frames: Iterable[tuple[float, Mapping[str, float]]], **kw) -> list[Segment]:  # type: ignore[no-untyped-def]
    """All segments of a finished sequence of (time, {concept: score})."""
    tracker = SegmentTracker(**kw)
    out = []
    for t, scores in frames:
        out += tracker.add(t, scores)
    return sorted(out + tracker.finish(), key=lambda s: (s.start_s, s.concept))


def frames_in(t1: float, t2: float, frame_times: Iterable[tuple[str, float]]) -> list[str]:
    """The frame inputs of one video whose time is within [t1, t2] (labeling a whole segment)."""
    if t2 < t1:
        raise ValueError(f"segment ends ({t2}) before it starts ({t1})")
    return [input_id for input_id, t in frame_times if t1 - 1e-6 <= t <= t2 + 1e-6]
