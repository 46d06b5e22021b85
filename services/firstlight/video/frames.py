"""From an opened video to the frames that become inputs: decode (streamed), sample, convert
only the kept frames to RGB. Each kept frame gets an input id derived from its video's id and
its timestamp, so a re-run after a crash rewrites the same inputs and duplicates none."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from firstlight.domain.frames import (  # noqa: F401 - re-exported
    VIDEO_ID,
    frame_input_id,
    parse_frame_input_id,
    video_groups,
    video_id,
)
from firstlight.video.decode import VideoReader
from firstlight.video.sampler import FrameSampler, luma_thumbnail

#: Metadata keys every frame input carries (searches and datasets read them back).
META_VIDEO = "video_id"
META_TIME = "video_t"  # seconds, 3 decimals
META_REASON = "video_keep"  # start | clock | scene


@dataclass
class KeptFrame:
    index: int  # decoded-frame index
    t: float
    reason: str
    image: Image.Image  # RGB, longest side <= max_side


def to_rgb(frame, max_side: int) -> Image.Image:  # type: ignore[no-untyped-def]
    """The frame as RGB, scaled down in swscale (before any RGB buffer is made) when larger."""
    w, h = frame.width, frame.height
    scale = min(1.0, max_side / max(w, h))
    if scale < 1.0:
        return frame.to_image(width=max(1, int(w * scale + 0.5)), height=max(1, int(h * scale + 0.5)))
    return frame.to_image()


def sample_frames(reader: VideoReader, sampler: FrameSampler, max_side: int = 1280) -> Iterator[KeptFrame]:
    """The kept frames, in time order, while the video decodes (one frame in memory at a time).
    ``reader.outcome`` says afterwards whether the video was complete."""
    for decoded in reader.frames():
        decision = sampler.offer(decoded.t, luma_thumbnail(decoded.frame))
        if decision.keep:
            yield KeptFrame(decoded.index, decoded.t, decision.reason, to_rgb(decoded.frame, max_side))
