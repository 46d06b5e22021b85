"""Search results over video frames: group frame hits by video, and rank videos against a query
clip. A query clip's sampled frames are each searched; a video's score is the best alignment of
query frames to its frames *in temporal order* (each query frame matched to at most one frame,
later query frames to later frames), summed and divided by the number of query frames, so a
video matching the whole clip in order outranks one matching a single frame many times."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FrameHit:
    video_id: str
    t: float
    score: float  # similarity, higher is better
    input_id: str = ""


@dataclass
class VideoHits:
    video_id: str
    best: FrameHit
    hits: list[FrameHit] = field(default_factory=list)  # time order


def group_by_video(hits: Iterable[FrameHit]) -> list[VideoHits]:
    """Hits of one search grouped per video, videos ordered by their best hit."""
    by: dict[str, VideoHits] = {}
    for h in hits:
        g = by.get(h.video_id)
        if g is None:
            by[h.video_id] = g = VideoHits(h.video_id, h)
        elif h.score > g.best.score:
            g.best = h
        g.hits.append(h)
    for g in by.values():
        g.hits.sort(key=lambda h: h.t)
    return sorted(by.values(), key=lambda g: -g.best.score)


@dataclass
class ClipMatch:
    video_id: str
    score: float  # mean over query frames of the aligned similarity (0 for an unmatched frame)
    start_s: float
    end_s: float
    pairs: list[tuple[int, FrameHit]]  # (query frame index, matched frame), in time order


def _align(candidates: list[tuple[int, FrameHit]]) -> list[tuple[int, FrameHit]]:
    """Highest-scoring chain with strictly increasing query index and frame time (O(n²) DP over
    a video's few candidate hits)."""
    c = sorted(candidates, key=lambda p: (p[1].t, p[0]))
    best = [p[1].score for p in c]
    prev = [-1] * len(c)
    for j in range(len(c)):
        for i in range(j):
            if c[i][0] < c[j][0] and c[i][1].t < c[j][1].t and best[i] + c[j][1].score > best[j]:
                best[j], prev[j] = best[i] + c[j][1].score, i
    if not c:
        return []
    j = max(range(len(c)), key=lambda k: best[k])
    chain = []
    while j >= 0:
        chain.append(c[j])
        j = prev[j]
    return chain[::-1]


def rank_videos(per_query_frame: Sequence[Sequence[FrameHit]], limit: int = 10) -> list[ClipMatch]:
    """Videos most like a query clip, from each query frame's frame hits (in query order)."""
    m = len(per_query_frame)
    if m == 0:
        return []
    by_video: dict[str, list[tuple[int, FrameHit]]] = {}
    for q, hits in enumerate(per_query_frame):
        for h in hits:
            by_video.setdefault(h.video_id, []).append((q, h))
    out = []
    for vid, cands in by_video.items():
        chain = _align(cands)
        out.append(ClipMatch(vid, sum(h.score for _, h in chain) / m, chain[0][1].t, chain[-1][1].t, chain))
    out.sort(key=lambda x: (-x.score, x.video_id))
    return out[:limit]
