"""Crashes in the middle of a video, on the real stack: SIGKILL the ingestion service while a
resumable upload's bytes stream in (the bytes held survive and the SDK resumes from them), while
it turns a long clip's frames into inputs, and the embedding service while it embeds them. After
the restarts every frame the upload kept is an input and searchable exactly once, and the
video's stored summary names exactly those frames."""

from __future__ import annotations

import json
import threading

import grpc
import pytest

from firstlight import errors
from firstlight.blobstore import LocalBlobStore
from firstlight.sdk import Firstlight
from firstlight.sdk.video import resumable_upload_id
from firstlight.v1 import video_pb2
from firstlight.video import synth

from .helpers import eventually

pytestmark = pytest.mark.integration

APP = "video-kill"
VID = "long-walk"
SHOTS = 100  # 2 s each, cycling the four photos: 200 s of video, two or more kept frames per shot


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):  # type: ignore[no-untyped-def]
    photos = synth.photo_arrays()
    path = tmp_path_factory.mktemp("kill") / "long-walk.mp4"
    # 4 fps at 160x120: cheap to encode and decode, so the ingestion of 200 frames is what takes time
    synth.encode(path, [synth.Shot(photos[i % 4], 2.0) for i in range(SHOTS)], width=160, height=120, fps=4)
    return path


def _exists(client: Firstlight, input_id: str) -> bool:
    try:
        client.get_input(APP, input_id)
        return True
    except errors.NotFound:
        return False


def _app(client: Firstlight) -> None:
    try:
        client.create_app(APP, "video")
    except errors.AlreadyExists:
        pass


def test_kill_ingestion_mid_upload_resumes_from_the_bytes_held(stack, client: Firstlight, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _app(client)
    clip = tmp_path / "short.mp4"
    synth.encode(clip, synth.default_shots(1.0))
    data = clip.read_bytes()
    half = len(data) // 2
    uid = resumable_upload_id(APP, "short", clip)
    release = threading.Event()

    def first_half():  # type: ignore[no-untyped-def]
        yield video_pb2.UploadVideoRequest(header=video_pb2.VideoHeader(app_id=APP, video_id="short", upload_id=uid, total_bytes=len(data)))
        yield video_pb2.UploadVideoRequest(chunk=data[:half])
        release.wait(60)  # the stream stays open, mid-file, until the service is killed

    broken: dict = {}
    sender = threading.Thread(target=lambda: broken.setdefault("error", _raises(lambda: client.ingestion.UploadVideo(first_half()))))
    sender.start()
    get = video_pb2.GetVideoUploadRequest(app_id=APP, upload_id=uid)
    eventually(lambda: _held(client, get) == half, timeout=30, interval=0.05, what="half the bytes held")
    stack.kill_service("ingestion")
    release.set()
    sender.join(30)
    assert isinstance(broken["error"], grpc.RpcError) and broken["error"].code() == grpc.StatusCode.UNAVAILABLE
    stack.start_service("ingestion")
    assert _held(client, get) == half  # the bytes survived the kill
    r = client.upload_video(APP, clip, video_id="short")  # resumes from them
    assert r.bytes_held == len(data) and r.frames_added == r.frames_kept == 4 and not r.pending
    assert _held(client, get) == -1  # processed: the upload is gone


def _raises(fn):  # type: ignore[no-untyped-def]
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned for the assertion
        return exc
    return None


def _held(client: Firstlight, req) -> int:  # type: ignore[no-untyped-def]
    try:
        return int(client.ingestion.GetVideoUpload(req).bytes_held)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return -1
        raise


def test_kill_ingestion_then_embedding_mid_video(stack, client: Firstlight, long_clip) -> None:  # type: ignore[no-untyped-def]
    _app(client)
    before = client.indexed_count(APP)
    old_pid = stack.component_pid("ingestion")
    result: dict = {}

    def upload() -> None:  # the SDK retries the whole upload on UNAVAILABLE
        try:
            result["response"] = client.upload_video(APP, long_clip, video_id=VID)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    uploader = threading.Thread(target=upload)
    uploader.start()
    # The first batch of frames committed: the service is part-way through the video.
    eventually(lambda: _exists(client, f"{VID}.t0000000000"), timeout=60, interval=0.02, what="the first frame stored")
    stack.kill_service("ingestion")
    stack.start_service("ingestion")
    uploader.join(timeout=120)
    assert "error" not in result, result.get("error")
    r = result["response"]
    assert stack.component_pid("ingestion") != old_pid
    assert not r.partial and r.frames_kept >= SHOTS and len(set(r.frame_ids)) == r.frames_kept
    # The retry added only what the killed run had not: the kill landed part-way.
    assert 0 < r.frames_added < r.frames_kept, r.frames_added

    # Now kill the embedding service while those frames are being embedded.
    eventually(lambda: client.indexed_count(APP) >= before + 20, timeout=120, what="20 frames indexed")
    stack.kill_service("embedding")
    stack.start_service("embedding")
    client.wait_indexed(APP, before + r.frames_kept, timeout=240)

    # Exactly once: the inputs are the summary's frames, each indexed once.
    stored = sorted(i.id for i in client.list_inputs(APP) if i.metadata.get("video_id") == VID)
    assert stored == sorted(r.frame_ids)
    assert client.indexed_count(APP) == before + r.frames_kept
    summary = json.loads(LocalBlobStore(stack.data_dir / "blobs").get_video_summary(APP, VID))
    assert list(summary["frame_ids"]) == list(r.frame_ids) and summary["frames_kept"] == r.frames_kept and not summary["partial"]
    for fid in r.frame_ids[:: SHOTS // 3]:  # searchable: a search by the frame's own vector finds it
        # (or a twin: the clip repeats its four shots, so frames of one shot's pan recur every 8 s)
        hits = client.search_by_image(APP, input_id=fid, top_k=1).hits
        assert hits[0].video_id == VID and hits[0].score > 0.99
