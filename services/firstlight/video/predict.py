"""Predict on a video (pure core; the inference service supplies the model): per sampled frame,
and as time segments, yielded while the video decodes: each frame's result as soon as its
batch is scored, each segment as soon as it closes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from firstlight.config import VideoLimits
from firstlight.video.decode import DecodeOutcome, VideoReader
from firstlight.video.frames import sample_frames
from firstlight.video.sampler import FrameSampler
from firstlight.video.segments import Segment, SegmentTracker

#: Frames scored per model call (CPU: small batches are fastest per image).
PREDICT_BATCH = 8


@dataclass
class FrameResult:
    t: float
    reason: str
    scores: Mapping[Any, float]  # concept -> score (for a detector: its best box per concept; a workflow: (step, concept))
    detail: Any = None  # whatever the scorer returned beside the scores (the service's proto)


@dataclass
class VideoDone:
    outcome: DecodeOutcome


def predict_video(
    reader: VideoReader,
    limits: VideoLimits,
    score: Callable[[Sequence[Image.Image]], Sequence[Mapping[Any, float] | tuple[Mapping[Any, float], Any]]],
    *,
    threshold: float = 0.5,
    max_gap_s: float | None = None,
    batch_size: int = PREDICT_BATCH,
) -> Iterator[FrameResult | Segment | VideoDone]:
    """``score`` maps a batch of frames to {concept: score} each (or ({...}, detail)).
    FrameResult per kept frame, Segment per closed segment (in close order), then VideoDone.
    A segment bridges gaps up to ``max_gap_s`` (default: two sampling periods)."""
    gap = max_gap_s if max_gap_s is not None else 2.0 / limits.video_sample_fps
    tracker = SegmentTracker(threshold=threshold, max_gap_s=gap)
    # Every clock tick is scored (no near-duplicate dropping): a long still shot must still
    # span its whole time in the segments.
    sampler = FrameSampler(limits.video_sample_fps, limits.video_scene_threshold, -1.0, limits.video_min_scene_gap_s)
    pending: list = []

    def flush() -> Iterator[FrameResult | Segment]:
        if not pending:
            return
        results = score([k.image for k in pending])
        for kept, result in zip(pending, results):
            scores, detail = result if isinstance(result, tuple) else (result, None)
            yield FrameResult(kept.t, kept.reason, dict(scores), detail)
            yield from tracker.add(kept.t, scores)
        pending.clear()

    for kept in sample_frames(reader, sampler, limits.video_frame_max_side):
        pending.append(kept)
        if len(pending) >= batch_size:
            yield from flush()
    yield from flush()
    yield from tracker.finish()
    yield VideoDone(reader.outcome)
