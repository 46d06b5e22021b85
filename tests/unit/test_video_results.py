"""Time segments from per-frame predictions, video-grouped search hits, clip-to-video ranking,
the group-aware split and near-duplicate-free batches (all pure)."""

from __future__ import annotations

import numpy as np
import pytest

from firstlight.domain.diverse_batch import Candidate, diverse_batch
from firstlight.domain.group_split import LEFT_OUT, group_split
from firstlight.errors import InvalidArgument
from firstlight.video.clip_search import FrameHit, group_by_video, rank_videos
from firstlight.video.segments import SegmentTracker, frames_in, segments


def test_segments_bridge_one_missed_frame_and_split_on_a_longer_gap():
    dog = [0.1] * 12 + [0.8, 0.93, 0.4, 0.7] + [0.1] * 5 + [0.9, 0.9]  # 1 frame/s
    segs = segments([(float(t), {"dog": s, "cat": 0.2}) for t, s in enumerate(dog)], threshold=0.5, max_gap_s=2.0)
    assert [(s.concept, s.start_s, s.end_s, s.max_score, s.frames) for s in segs] == [
        ("dog", 12.0, 15.0, 0.93, 3),
        ("dog", 21.0, 22.0, 0.9, 2),
    ]
    assert segs[0].mean_score == pytest.approx((0.8 + 0.93 + 0.7) / 3)


def test_segments_stream_out_as_they_close():
    tracker = SegmentTracker(threshold=0.5, max_gap_s=1.0)
    assert tracker.add(0.0, {"a": 0.9}) == []
    assert tracker.add(1.0, {"a": 0.9, "b": 0.6}) == []
    closed = tracker.add(2.5, {"b": 0.7})  # a's last hit was 1.5 s ago: closed now, not at the end
    assert [(s.concept, s.start_s, s.end_s) for s in closed] == [("a", 0.0, 1.0)]
    assert [(s.concept, s.start_s, s.end_s) for s in tracker.finish()] == [("b", 1.0, 2.5)]
    with pytest.raises(ValueError):
        tracker.add(1.0, {})


def test_label_a_segment_picks_the_frames_inside_it():
    frames = [(f"v.t{int(t * 1000):010d}", t) for t in (0.0, 1.0, 2.0, 2.5, 3.0, 4.0)]
    assert frames_in(1.0, 3.0, frames) == ["v.t0000001000", "v.t0000002000", "v.t0000002500", "v.t0000003000"]


def test_hits_group_by_video():
    hits = [FrameHit("a", 3.0, 0.7), FrameHit("b", 1.0, 0.9), FrameHit("a", 1.0, 0.8)]
    groups = group_by_video(hits)
    assert [g.video_id for g in groups] == ["b", "a"]
    assert groups[1].best.t == 1.0 and [h.t for h in groups[1].hits] == [1.0, 3.0]


def test_a_clip_ranks_the_video_matching_it_in_order_first():
    # 3 query frames. Video "ordered" matches them in time order; "shuffled" matches each frame
    # as well but backwards; "one" matches a single frame very well, many times.
    q = [
        [FrameHit("ordered", 10.0, 0.9), FrameHit("shuffled", 30.0, 0.9), FrameHit("one", 5.0, 0.99)],
        [FrameHit("ordered", 11.0, 0.85), FrameHit("shuffled", 20.0, 0.9), FrameHit("one", 6.0, 0.99)],
        [FrameHit("ordered", 12.5, 0.8), FrameHit("shuffled", 10.0, 0.9)],
    ]
    ranked = rank_videos(q)
    assert [m.video_id for m in ranked] == ["ordered", "one", "shuffled"]
    assert (ranked[0].start_s, ranked[0].end_s) == (10.0, 12.5)
    assert ranked[0].score == pytest.approx((0.9 + 0.85 + 0.8) / 3)
    assert ranked[2].score == pytest.approx(0.9 / 3)  # only one frame can be aligned in order


def test_group_split_keeps_each_video_whole_and_stratifies():
    rng = np.random.default_rng(0)
    labels, groups = [], []
    for v in range(60):  # 60 videos of 5-40 frames, each mostly one class
        cls = ["cat", "dog", "cow"][v % 3]
        for _ in range(int(rng.integers(5, 41))):
            labels.append(cls)
            groups.append(f"video-{v}")
    labels += ["yak"] * 30  # 30 still images, each its own group
    groups += [None] * 30
    n = len(labels)
    result = group_split(labels, groups, fractions=(0.8, 0.1, 0.1), seed=1)
    where = {}
    for name, idx in result.splits.items():
        for i in idx:
            assert groups[i] is None or where.setdefault(groups[i], name) == name  # one split per video
    assert sum(result.achieved.values()) == n
    for name, frac in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        assert result.requested[name] == pytest.approx(frac * n, abs=1)
        assert abs(result.achieved[name] - result.requested[name]) <= 0.05 * n  # approx: whole videos
        for cls in ("cat", "dog", "cow", "yak"):
            assert result.labels[name].get(cls, 0) > 0  # every class in every split
    assert group_split(labels, groups, seed=1).splits == result.splits  # deterministic


def test_group_split_counts_leave_the_rest_out_and_bad_requests_fail():
    labels = ["a", "b"] * 50
    groups = [f"g{i // 4}" for i in range(100)]
    result = group_split(labels, groups, counts=(40, 10, 10))
    assert result.requested == {"train": 40, "validation": 10, "test": 10, LEFT_OUT: 40}
    assert all(n % 4 == 0 for n in result.achieved.values())  # whole groups of 4
    with pytest.raises(InvalidArgument, match="ask for 120"):
        group_split(labels, groups, counts=(100, 10, 10))
    with pytest.raises(InvalidArgument, match="summing to 1"):
        group_split(labels, groups, fractions=(0.5, 0.1, 0.1))


def test_a_batch_has_no_two_frames_of_the_same_moment():
    cands = [
        Candidate("v1.t1", "v1", 10.0),
        Candidate("v1.t2", "v1", 11.0),  # 1 s after the first: the same moment
        Candidate("v2.t1", "v2", 10.5),
        Candidate("img", "", 0.0),
        Candidate("img-twin", "", 0.0),  # a still image nearly identical to "img"
        Candidate("v1.t3", "v1", 30.0),
    ]
    emb = np.eye(6)
    emb[4] = emb[3] + 0.01
    chosen = diverse_batch(cands, 4, embeddings=emb, min_gap_s=5.0, max_cosine=0.95)
    assert [cands[i].input_id for i in chosen] == ["v1.t1", "v2.t1", "img", "v1.t3"]


def test_thin_near_duplicates_keeps_the_strategy_order():
    from firstlight.domain.diverse_batch import thin_near_duplicates
    from firstlight.video.frames import parse_frame_input_id, video_groups

    ids = ["a.t0000001000", "a.t0000002000", "b.t0000001000", "photo", "a.t0000009000"]
    ranked = [1, 0, 2, 3, 4]
    assert thin_near_duplicates(ids, ranked, 3, moment_of=parse_frame_input_id) == [1, 2, 3]
    assert thin_near_duplicates(ids, ranked, 9, moment_of=parse_frame_input_id) == [1, 2, 3, 4]
    assert video_groups(ids) == ["a", "a", "b", None, "a"]
