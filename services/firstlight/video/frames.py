"""From an opened video to the frames that become inputs: decode (streamed), sample, convert
only the kept frames to RGB. Each kept frame gets an input id derived from its video's id and
its timestamp, so a re-run after a crash rewrites the same inputs and duplicates none."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from firstlight.errors import InvalidArgument
from firstlight.video.decode import VideoReader
from firstlight.video.sampler import FrameSampler, luma_thumbnail

#: Video ids leave room in the 128-character input id for the frame suffix (".t" + 10 digits).
VIDEO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", re.ASCII)
#: Metadata keys every frame input carries (searches and datasets read them back).
META_VIDEO = "video_id"
META_TIME = "video_t"  # seconds, 3 decimals
META_REASON = "video_keep"  # start | clock | scene


def video_id(value: str) -> str:
    if not isinstance(value, str) or not VIDEO_ID.fullmatch(value):
        raise InvalidArgument(
            f"video id {str(value)[:80]!r} is invalid: use 1-100 letters, digits, '.', '-' or '_', starting with a letter or digit"
        )
    return value


def frame_input_id(vid: str, t: float) -> str:
    """``<video id>.t<milliseconds, 10 digits>``: sorts in time order, the same on every run."""
    return f"{vid}.t{round(t * 1000):010d}"


def parse_frame_input_id(input_id: str) -> tuple[str, float] | None:
    m = re.fullmatch(r"(.+)\.t([0-9]{10})", input_id)
    return (m.group(1), int(m.group(2)) / 1000) if m else None


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


def video_groups(input_ids: list[str]) -> list[str | None]:
    """Each input's video (None for an image): the groups of a group-aware split."""
    out: list[str | None] = []
    for input_id in input_ids:
        parsed = parse_frame_input_id(input_id)
        out.append(parsed[0] if parsed else None)
    return out
