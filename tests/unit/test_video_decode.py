"""Video decoding, sampling and limits, on clips encoded in-test from the bundled photos with
PyAV (the same library decodes them): no downloaded video."""

from __future__ import annotations

import av
import numpy as np
import pytest

from firstlight.config import VideoLimits
from firstlight.errors import InvalidArgument, ResourceExhausted
from firstlight.video import synth
from firstlight.video.decode import open_video
from firstlight.video.frames import (
    frame_input_id,
    parse_frame_input_id,
    sample_frames,
    video_id,
)
from firstlight.video.sampler import FrameSampler

LIMITS = VideoLimits()
# 4 shots of 2 s at 10 fps: pans over chelsea, coffee, astronaut, then a still of the rocket.
EXPECTED = [(0.0, "start"), (1.0, "clock"), (2.0, "scene"), (3.0, "clock"), (4.0, "scene"), (5.0, "clock"), (6.0, "scene")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    shots = synth.default_shots(2.0, static_last=True)
    out = {}
    for kind, (_, _, _, suffix) in synth.KINDS.items():
        out[kind] = folder / f"{kind}{suffix}"
        synth.encode(out[kind], shots, kind=kind)
    return out


def kept(path, limits=LIMITS):
    with open_video(path, limits) as reader:
        frames = [(round(f.t, 2), f.reason, f.image.size) for f in sample_frames(reader, FrameSampler.from_limits(limits))]
        return reader, frames


@pytest.mark.parametrize("kind", list(synth.KINDS))
def test_each_container_and_codec_samples_clock_and_scene_changes_and_drops_the_still(clips, kind):
    reader, frames = kept(clips[kind])
    assert [(t, r) for t, r, _ in frames] == EXPECTED  # the still shot (6-8 s) keeps one frame
    assert {size for _, _, size in frames} == {(320, 240)}
    assert reader.outcome.frames == 80 and not reader.outcome.partial
    assert reader.info.width == 320 and reader.info.duration_s == pytest.approx(8.0, abs=0.15)


def test_frames_are_rgb_and_scaled_down_to_the_max_side(clips):
    with open_video(clips["mp4-h264"], LIMITS) as reader:
        first = next(sample_frames(reader, FrameSampler(), max_side=160))
    assert first.image.mode == "RGB" and first.image.size == (160, 120)
    assert np.asarray(first.image).std() > 10  # a photo, not a blank frame


def test_frame_ids_are_derived_from_video_and_time():
    assert frame_input_id("clip-1", 12.0) == "clip-1.t0000012000" == frame_input_id("clip-1", 12.0004)
    assert parse_frame_input_id("clip-1.t0000012000") == ("clip-1", 12.0)
    assert parse_frame_input_id("plain-image") is None
    with pytest.raises(InvalidArgument, match="video id"):
        video_id("x" * 101)


def test_a_file_cut_at_the_end_keeps_its_first_frames_and_is_partial(clips, tmp_path):
    for kind in ("mp4-h264", "webm-vp9", "avi-mjpeg"):
        data = clips[kind].read_bytes()
        cut = tmp_path / f"cut-{clips[kind].name}"
        cut.write_bytes(data[: int(len(data) * 0.6)])
        reader, frames = kept(cut)
        out = reader.outcome
        assert out.partial and out.error, kind
        assert 20 <= out.frames < 80 and 2.0 <= out.last_good_s < 7.9, (kind, out)
        assert frames[0][:2] == (0.0, "start") and frames[-1][0] <= out.last_good_s


def test_a_file_cut_before_its_first_frame_is_invalid(clips, tmp_path):
    data = clips["mp4-h264"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 20])
    with pytest.raises(InvalidArgument, match="corrupt or truncated"):
        kept(cut)


def test_garbage_after_a_real_header_is_a_corrupt_video(clips, tmp_path):
    data = clips["mkv-h264"].read_bytes()
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(data[:40] + np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidArgument, match="corrupt or truncated"):
        kept(bad)


@pytest.mark.parametrize("payload", [b"hello world " * 100, b"\xff\xd8\xff\xe0 not really a jpeg" * 10, "photo"])
def test_what_is_not_a_video_is_refused(tmp_path, payload):
    from firstlight import datasets

    path = tmp_path / "x.bin"
    path.write_bytes(datasets.sample_photo("chelsea") if payload == "photo" else payload)
    with pytest.raises(InvalidArgument, match="is not a video in a supported format"):
        open_video(path, LIMITS)


def test_empty_file(tmp_path):
    (tmp_path / "e.mp4").write_bytes(b"")
    with pytest.raises(InvalidArgument, match="empty"):
        open_video(tmp_path / "e.mp4", LIMITS)


def test_no_video_stream(tmp_path):
    path = tmp_path / "audio.mkv"
    synth.encode(path, [], kind="mkv-h264", audio_only=True)
    with pytest.raises(InvalidArgument, match=r"has no video stream \(streams: audio\)"):
        open_video(path, LIMITS)


def test_zero_frames(tmp_path):
    path = tmp_path / "zero.avi"
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
    with open_video(path, LIMITS) as reader, pytest.raises(InvalidArgument, match="zero frames"):
        list(reader.frames())


def test_unsupported_codec(tmp_path):
    path = tmp_path / "ffv1.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for frame in [np.zeros((64, 64, 3), np.uint8)] * 3:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(InvalidArgument, match="video codec 'ffv1' is not supported"):
        open_video(path, LIMITS)


def test_limits_bytes_duration_resolution(clips):
    path = clips["mp4-h264"]
    with pytest.raises(ResourceExhausted, match="over the limit of"):
        open_video(path, VideoLimits(max_video_bytes=1000))
    with pytest.raises(ResourceExhausted, match=r"00:08.0 long, over the limit of 00:05.0"):
        open_video(path, VideoLimits(max_video_duration_s=5))
    with pytest.raises(ResourceExhausted, match="320x240 pixels, over the limit of 256 per side"):
        open_video(path, VideoLimits(max_video_side=256))
    with pytest.raises(ResourceExhausted, match="over the limit"):
        open_video(path, VideoLimits(max_video_pixels=320 * 239))
    with open_video(path, VideoLimits(max_video_frames=10)) as reader, pytest.raises(ResourceExhausted, match="more than 10 frames"):
        list(reader.frames())


def test_a_decompression_bomb_frame_size_is_refused_before_decoding(tmp_path):
    # 17 KB of MJPEG whose frames are 4608 pixels wide: refused from the header.
    path = tmp_path / "wide.avi"
    synth.encode(path, synth.default_shots(0.2), kind="avi-mjpeg", width=4608, height=16)
    assert path.stat().st_size < 100_000
    with pytest.raises(ResourceExhausted, match="declares frames of 4608x16 pixels"):
        open_video(path, LIMITS)


def test_sampler_on_synthetic_thumbnails():
    s = FrameSampler(fps=1.0, scene_threshold=30, duplicate_threshold=2, min_scene_gap_s=0.5)
    a, b = np.zeros((36, 64), np.float32), np.full((36, 64), 100, np.float32)
    decisions = [(t / 10, s.offer(t / 10, a + t * 0.5 if t < 25 else (b if t < 28 or t > 29 else a)).reason) for t in range(40)]
    kept_at = [(t, r) for t, r in decisions if r in ("start", "clock", "scene")]
    # slow drift (0.5/frame): clock keeps at 1 s and 2 s; cut at 2.5 s; flash back to a at 2.8 s is
    # within the scene gap; back to b at 3.0 s is a cut again (0.5 s after 2.5 s)
    assert kept_at == [(0.0, "start"), (1.0, "clock"), (2.0, "clock"), (2.5, "scene"), (3.0, "scene")]
    still = FrameSampler(fps=2.0)
    assert sum(still.offer(t / 10, a).keep for t in range(100)) == 1
    assert still.stats.duplicates_dropped == 19
