"""Video end to end through the real stack: upload clips (frames become inputs, embedded and
indexed), search returns frames with their video and time, a segment is labeled at once, a
classifier trained on frames (group-aware split: each video in one split) predicts time segments
on another clip, streamed. Clips are encoded in-test from the bundled photos."""

from __future__ import annotations

import pytest

from firstlight import datasets, errors
from firstlight.sdk import Firstlight
from firstlight.video import synth

from .helpers import eventually

pytestmark = pytest.mark.integration

APP = "video"
#: photo index in synth.photo_arrays() -> concept
CONCEPTS = {0: "cat", 1: "cup", 2: "astronaut", 3: "rocket"}
ORDERS = {"clip-a": [0, 1, 2, 3], "clip-b": [1, 3, 0, 2], "clip-c": [2, 0, 3, 1], "clip-d": [3, 2, 1, 0]}
SHOT_S = 2.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    photos = synth.photo_arrays()
    folder = tmp_path_factory.mktemp("clips")
    out = {}
    for n, (name, order) in enumerate(ORDERS.items()):
        kind = ["mp4-h264", "webm-vp9", "avi-mjpeg", "mov-h264"][n]
        out[name] = folder / f"{name}{synth.KINDS[kind][3]}"
        synth.encode(out[name], [synth.Shot(photos[i], SHOT_S) for i in order], kind=kind)
    return out


@pytest.fixture(scope="module")
def uploaded(client: Firstlight, clips):
    client.create_app(APP, "video")
    before = client.indexed_count(APP)
    added = 0
    results = {}
    for name in ("clip-a", "clip-b", "clip-c"):
        r = client.upload_video(APP, clips[name], video_id=name)
        assert not r.partial and r.frames_added == r.frames_kept == 8, r
        assert r.frame_ids[0] == f"{name}.t0000000000"
        results[name] = r
        added += r.frames_added
    client.wait_indexed(APP, before + added, timeout=180)
    return results


def test_frames_are_inputs_linked_to_their_video(client: Firstlight, uploaded) -> None:
    frame = client.get_input(APP, "clip-b.t0000002000")  # clip-b's second shot starts at 2 s
    assert frame.metadata["video_id"] == "clip-b" and frame.metadata["video_t"] == "2.000"
    assert frame.metadata["video_keep"] == "scene" and frame.format == "JPEG"


def test_search_returns_frames_with_their_video_and_time(client: Firstlight, uploaded) -> None:
    hits = client.search_by_image(APP, image=datasets.sample_photo("chelsea"), top_k=3).hits
    assert hits
    for hit in hits:  # chelsea (photo 0) is shot 0 of clip-a, shot 2 of clip-b, shot 1 of clip-c
        shot = ORDERS[hit.video_id.removesuffix("-cut")].index(0)
        assert shot * SHOT_S <= hit.video_t < (shot + 1) * SHOT_S, hit


def test_uploading_the_same_video_again_adds_nothing(client: Firstlight, uploaded, clips) -> None:
    again = client.upload_video(APP, clips["clip-a"], video_id="clip-a")
    assert again.frames_added == 0 and list(again.frame_ids) == list(uploaded["clip-a"].frame_ids)


def test_bad_and_cut_videos(client: Firstlight, clips, tmp_path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(errors.InvalidArgument, match="not a video"):
        client.upload_video(APP, junk, video_id="junk")
    data = clips["clip-b"].read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    r = client.upload_video(APP, cut, video_id="clip-b-cut")
    assert r.partial and r.error and 0 < r.last_good_s < 8 and 0 < r.frames_added < 8


def test_label_segments_train_on_frames_and_predict_segments_on_another_clip(client: Firstlight, uploaded, clips) -> None:
    for name, order in ORDERS.items():
        if name not in uploaded:
            continue
        for shot, photo in enumerate(order):
            ids = client.label_video_segment(APP, name, shot * SHOT_S, shot * SHOT_S + SHOT_S - 0.01, add=[CONCEPTS[photo]])
            assert len(ids) == 2  # the shot's scene-change frame and its clock frame
    concepts = sorted(CONCEPTS.values())
    ds = client.create_dataset(APP, "frames", concepts=concepts, fractions=(0.34, 0.33, 0.33), seed=0)
    # group-aware: each video's frames all in one split
    split_of = {}
    for inp in client.list_inputs(APP):
        if inp.id.startswith("clip-"):
            split_of.setdefault(inp.metadata["video_id"], set()).add(inp.split)
    assert all(len(s) == 1 for s in split_of.values()), split_of
    client.create_model(APP, "shots", concepts)
    client.train(APP, "shots", ds.id)

    def served() -> bool:  # the inference service learns of the version from an event
        try:
            client.predict([datasets.sample_photo("rocket")], model="shots", app_id=APP)
            return True
        except errors.NotFound:
            return False

    eventually(served, timeout=60, what="the trained model served")
    result = client.predict_video(clips["clip-d"], model="shots", app_id=APP, top_k=4, segment_threshold=0.5)
    assert result.end is not None and not result.end.partial
    assert [round(f.t, 1) for f in result.frames] == [float(t) for t in range(8)]
    found = {(s.concept, round(s.start_s), round(s.end_s)) for s in result.segments}
    expected = {(CONCEPTS[p], int(i * SHOT_S), int(i * SHOT_S + 1)) for i, p in enumerate(ORDERS["clip-d"])}
    assert found == expected


def test_search_by_a_clip_finds_the_video_and_moment_in_order(client: Firstlight, uploaded, tmp_path) -> None:
    photos = synth.photo_arrays()
    query = tmp_path / "query.mp4"
    synth.encode(query, [synth.Shot(photos[3], SHOT_S), synth.Shot(photos[0], SHOT_S)])  # rocket, then cat
    matches = client.search_by_video(APP, query, top_k=3)
    # clip-b has rocket (2-4 s) then cat (4-6 s) in that order; clip-a and clip-c have them reversed
    assert matches[0].video_id == "clip-b" and (matches[0].start_s, matches[0].end_s) == (2.0, 5.0)
    assert matches[0].score > matches[1].score
