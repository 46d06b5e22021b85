"""Real clips from Debian's opencv-doc (``apt-get install opencv-doc``: vtest.avi, Megamind.avi,
tree.avi), decoded and sampled as an upload is. ``slow``: the package is ~96 MB and not part of CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from firstlight.config import VideoLimits
from firstlight.video.decode import open_video
from firstlight.video.frames import sample_frames
from firstlight.video.sampler import FrameSampler

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
CLIPS = ["vtest.avi", "Megamind.avi", "tree.avi"]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", CLIPS)
def test_real_clip_decodes_whole_and_samples_about_one_frame_per_second(name: str) -> None:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} missing: apt-get install opencv-doc")
    limits = VideoLimits()
    with open_video(path, limits) as reader:
        kept = list(sample_frames(reader, FrameSampler.from_limits(limits)))
        out, info = reader.outcome, reader.info
    assert not out.partial, out.error
    assert info.container == "AVI" and out.frames > 0
    seconds = out.last_good_s or 0.0
    assert 1 <= len(kept) <= seconds * limits.video_sample_fps + 1 + (seconds / limits.video_min_scene_gap_s)
