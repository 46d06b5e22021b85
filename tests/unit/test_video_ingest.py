"""The video ingest and predict cores with in-memory ports, on a clip encoded in-test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firstlight.config import VideoLimits
from firstlight.errors import InvalidArgument
from firstlight.video import synth
from firstlight.video.decode import open_video
from firstlight.video.ingest import ingest_video
from firstlight.video.predict import FrameResult, VideoDone, predict_video
from firstlight.video.segments import Segment

LIMITS = VideoLimits()


class Sink:
    def __init__(self) -> None:
        self.inputs: dict[str, object] = {}
        self.calls = 0

    def existing(self, app_id, ids):
        return {i for i in ids if i in self.inputs}

    def add(self, app_id, frames):
        self.calls += 1
        for f in frames:
            assert f.id not in self.inputs
            self.inputs[f.id] = f


class Store:
    def __init__(self) -> None:
        self.originals: dict[str, bytes] = {}
        self.summaries: dict[str, bytes] = {}

    def put_original(self, app_id, vid, path: Path) -> str:
        self.originals[vid] = path.read_bytes()
        return f"blob:{app_id}/{vid}"

    def put_summary(self, app_id, vid, summary):
        self.summaries[vid] = summary

    def delete_original(self, app_id, vid):
        self.originals.pop(vid, None)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    synth.encode(path, synth.default_shots(2.0, static_last=True), kind="mp4-h264")
    return path


def test_frames_become_inputs_with_video_and_time_and_a_rerun_adds_nothing(clip):
    sink, store = Sink(), Store()
    s = ingest_video("app", "clip-1", clip, LIMITS, sink, store, concepts=["pets"], batch_size=3)
    assert s.frames_kept == s.frames_added == 7 and not s.partial
    assert s.frame_ids[:3] == ["clip-1.t0000000000", "clip-1.t0000001000", "clip-1.t0000002000"]
    first = sink.inputs["clip-1.t0000002000"]
    assert first.metadata == {"video_id": "clip-1", "video_t": "2.000", "video_keep": "scene"}
    assert first.jpeg[:2] == b"\xff\xd8" and first.concepts == ("pets",)
    assert store.originals["clip-1"] == clip.read_bytes() and b'"partial": false' in store.summaries["clip-1"]
    # a re-run (crash, retry) rewrites nothing and duplicates nothing
    again = ingest_video("app", "clip-1", clip, LIMITS, sink, store, batch_size=3)
    assert again.frames_added == 0 and again.frame_ids == s.frame_ids and len(sink.inputs) == 7


def test_a_rerun_after_a_crash_mid_video_adds_only_the_missing_frames(clip):
    sink, store = Sink(), Store()

    class Crash(Exception):
        pass

    def crash_after_first_batch(batch):
        raise Crash

    with pytest.raises(Crash):
        ingest_video("app", "v", clip, LIMITS, sink, store, batch_size=3, on_batch=crash_after_first_batch)
    assert len(sink.inputs) == 3 and "v" not in store.summaries  # no summary: not finished
    s = ingest_video("app", "v", clip, LIMITS, sink, store, batch_size=3)
    assert s.frames_added == 4 and len(sink.inputs) == 7


def test_a_cut_file_keeps_its_frames_and_the_summary_says_partial(clip, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: int(clip.stat().st_size * 0.6)])
    sink, store = Sink(), Store()
    s = ingest_video("app", "cut", cut, LIMITS, sink, store)
    assert s.partial and s.error and 2.0 <= s.last_good_s < 7.9 and s.frames_added >= 3
    assert b'"partial": true' in store.summaries["cut"]


def test_a_refused_file_stores_nothing(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"not a video" * 10)
    sink, store = Sink(), Store()
    with pytest.raises(InvalidArgument):
        ingest_video("app", "x", bad, LIMITS, sink, store)
    assert not sink.inputs and not store.originals and not store.summaries


def test_predict_streams_frame_results_and_segments(clip):
    def score(images):
        # "bright" when the frame's mean is high: a stand-in model, deterministic per frame
        return [{"bright": float(np.asarray(im).mean() > 100), "always": 0.9} for im in images]

    with open_video(clip, LIMITS) as reader:
        events = list(predict_video(reader, LIMITS, score, batch_size=2))
    frames = [e for e in events if isinstance(e, FrameResult)]
    segs = [e for e in events if isinstance(e, Segment)]
    assert isinstance(events[-1], VideoDone) and not events[-1].outcome.partial
    assert [f.t for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # the still shot is scored each second
    always = [s for s in segs if s.concept == "always"]
    assert [(s.start_s, s.end_s, s.max_score) for s in always] == [(0.0, 7.0, pytest.approx(0.9))]


def test_predict_answers_before_the_video_is_decoded(clip):
    with open_video(clip, LIMITS) as reader:
        events = predict_video(reader, LIMITS, lambda images: [{"x": 1.0}] * len(images), batch_size=2)
        first = next(events)
        assert isinstance(first, FrameResult) and first.t == 0.0
        assert reader.outcome.frames < 80  # streamed: most of the clip is not decoded yet


def test_refused_before_the_first_frame_leaves_no_original_and_a_late_limit_is_partial(clip, tmp_path):
    cut = tmp_path / "early.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 20])
    sink, store = Sink(), Store()
    with pytest.raises(InvalidArgument, match="corrupt or truncated"):
        ingest_video("app", "early", cut, LIMITS, sink, store)
    assert not store.originals and not sink.inputs and not store.summaries
    # a frame limit found part-way (the header did not say): frames before it kept, partial
    s = ingest_video("app", "long", clip, VideoLimits(max_video_frames=35), sink, store)
    assert s.partial and "more than 35 frames" in s.error and s.frames_added == 4
