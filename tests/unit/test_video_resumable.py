"""Resumable video uploads: the bytes held survive a broken stream, a resume must start at
exactly the bytes held (else FAILED_PRECONDITION naming the offset), a resume that says another
video or size is refused, one stream at a time; over a real in-process gRPC server, a stream
cancelled part-way resumes and the video is processed once all bytes are in."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from firstlight.ingestion.core import Ingestion
from firstlight.ingestion.servicer import IngestionServicer
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.sdk.video import resumable_upload_id
from firstlight.v1 import ingestion_pb2_grpc, video_pb2
from firstlight.video import synth
from firstlight.video.resumable import ResumableUploads

UID = "upload-0001"


def test_offsets_sizes_and_one_writer(tmp_path: Path) -> None:
    uploads = ResumableUploads(tmp_path, max_bytes=1000)
    with pytest.raises(NotFound, match="no upload 'upload-0001'"):
        uploads.status("app", UID)
    with uploads.open("app", UID, "walk", 0, 100) as w:
        w.write(b"x" * 40)
        with pytest.raises(FailedPrecondition, match="another stream"):
            uploads.open("app", UID, "walk", 40, 100)
    assert uploads.status("app", UID).bytes_held == 40
    with pytest.raises(FailedPrecondition, match="holds 40 bytes; offset 30 does not match: resume from offset 40"):
        uploads.open("app", UID, "walk", 30, 100)
    with pytest.raises(FailedPrecondition, match="resume from offset 40"):
        uploads.open("app", UID, "walk", 0, 100)  # a restart from zero is refused too: the bytes are held
    with pytest.raises(FailedPrecondition, match="began as video 'walk' of 100 bytes"):
        uploads.open("app", UID, "walk", 40, 120)
    with pytest.raises(InvalidArgument, match="offset 140 is outside"):
        uploads.open("app", UID, "walk", 140, 100)
    with pytest.raises(ResourceExhausted, match="over the limit"):
        uploads.open("app", "upload-0002", "big", 0, 2000)
    with pytest.raises(InvalidArgument, match="total_bytes is required"):
        uploads.open("app", "upload-0002", "big", 0, 0)
    with pytest.raises(InvalidArgument, match="upload_id"):
        uploads.open("app", "../escape", "walk", 0, 100)
    with uploads.open("app", UID, "walk", 40, 100) as w:
        with pytest.raises(InvalidArgument, match="more bytes than the 100"):
            w.write(b"y" * 61)
        w.write(b"y" * 60)
        assert w.complete and w.path.read_bytes() == b"x" * 40 + b"y" * 60
    uploads.discard("app", UID)
    with pytest.raises(NotFound):
        uploads.status("app", UID)


def test_sweep_removes_only_abandoned_uploads(tmp_path: Path) -> None:
    uploads = ResumableUploads(tmp_path, max_bytes=1000, ttl_s=3600)
    for uid in ("upload-old1", "upload-new1"):
        with uploads.open("app", uid, "v", 0, 10) as w:
            w.write(b"abc")
    old = tmp_path / "app" / "upload-old1.part"
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert uploads.sweep() == 1
    assert not old.exists() and uploads.status("app", "upload-new1").bytes_held == 3


def test_upload_id_is_stable_per_file_and_video(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"1" * 3000)
    b.write_bytes(b"1" * 2999 + b"2")
    uid = resumable_upload_id("app", "walk", a)
    assert uid == resumable_upload_id("app", "walk", a) and len(uid) == 41
    assert len({uid, resumable_upload_id("app", "walk", b), resumable_upload_id("app", "run", a), resumable_upload_id("app2", "walk", a)}) == 4


def _servicer_with_clip(tmp_path: Path, name: str) -> tuple[Path, IngestionServicer]:
    """A 1 s clip and an ingestion servicer (app "app") whose resumable uploads hold up to 10x it."""
    clip = tmp_path / name
    synth.encode(clip, synth.default_shots(1.0), kind="mp4-h264")
    core = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}")), LocalBlobStore(tmp_path / "blobs"), ImageLimits())
    core.create_app("app")
    servicer = IngestionServicer(core)
    servicer.uploads = ResumableUploads(tmp_path / "uploads", max_bytes=10 * clip.stat().st_size)
    return clip, servicer


def test_a_broken_stream_resumes_over_grpc(tmp_path: Path) -> None:
    clip, servicer = _servicer_with_clip(tmp_path, "clip.mp4")
    data = clip.read_bytes()
    half = len(data) // 2

    def header(offset: int, total: int = len(data)) -> video_pb2.UploadVideoRequest:
        return video_pb2.UploadVideoRequest(header=video_pb2.VideoHeader(app_id="app", video_id="c1", upload_id=UID, offset=offset, total_bytes=total))

    async def main() -> None:
        server = grpc.aio.server()
        ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = ingestion_pb2_grpc.IngestionServiceStub(ch)
                release = asyncio.Event()

                async def first_half():  # type: ignore[no-untyped-def]
                    yield header(0)
                    yield video_pb2.UploadVideoRequest(chunk=data[:half])
                    await release.wait()  # the connection "breaks" here: the call is cancelled

                call = stub.UploadVideo(first_half())
                get = video_pb2.GetVideoUploadRequest(app_id="app", upload_id=UID)
                held = -1
                for _ in range(500):
                    try:
                        held = (await stub.GetVideoUpload(get)).bytes_held
                    except grpc.aio.AioRpcError as exc:  # the header not read yet
                        assert exc.code() == grpc.StatusCode.NOT_FOUND
                    if held == half:
                        break
                    await asyncio.sleep(0.02)
                assert held == half
                call.cancel()
                # A resume from a wrong offset is refused, naming the right one.
                for _ in range(250):  # the cancelled stream's handler may still hold the upload a moment
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.UploadVideo(iter([header(half - 10), video_pb2.UploadVideoRequest(chunk=data[half - 10 :])]))
                    if "another stream" not in err.value.details():
                        break
                    await asyncio.sleep(0.02)
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and f"resume from offset {half}" in err.value.details()
                # Without upload_id, an offset is meaningless.
                plain = video_pb2.UploadVideoRequest(header=video_pb2.VideoHeader(app_id="app", video_id="c1", offset=5))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.UploadVideo(iter([plain, video_pb2.UploadVideoRequest(chunk=b"x")]))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "set upload_id" in err.value.details()
                # A stream that ends before total_bytes: pending, nothing processed.
                r = await stub.UploadVideo(iter([header(half), video_pb2.UploadVideoRequest(chunk=data[half : half + 100])]))
                assert r.pending and r.bytes_held == half + 100 and not r.frame_ids
                r = await stub.UploadVideo(iter([header(half + 100), video_pb2.UploadVideoRequest(chunk=data[half + 100 :])]))
                assert not r.pending and r.bytes_held == len(data) and r.frames_added == r.frames_kept == 4
                with pytest.raises(grpc.aio.AioRpcError) as err:  # processed: the upload is gone
                    await stub.GetVideoUpload(get)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await server.stop(None)

    asyncio.run(main())
    stored = next((tmp_path / "blobs").rglob("c1.video"))
    assert stored.read_bytes() == data


def test_the_sdk_resumes_from_the_bytes_the_service_holds(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    from firstlight.sdk import Firstlight
    from firstlight.video import resumable

    clip, servicer = _servicer_with_clip(tmp_path, "walk.mp4")
    data = clip.read_bytes()
    half = len(data) // 2
    # An earlier attempt that broke half-way (the SDK's own upload id for this file and video).
    with servicer.uploads.open("app", resumable_upload_id("app", "walk", clip), "walk", 0, len(data)) as w:
        w.write(data[:half])
    received: list[int] = []
    write = resumable.UploadWriter.write
    monkeypatch.setattr(resumable.UploadWriter, "write", lambda self, chunk: (received.append(len(chunk)), write(self, chunk))[1])

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        addr = f"127.0.0.1:{port}"
        with Firstlight(addr, addr, addr, "") as fl:
            r = fl.upload_video("app", clip)
        assert r.video_id == "walk" and r.frames_added == 4 and r.bytes_held == len(data)
        assert sum(received) == len(data) - half  # only the rest was sent
        assert next((tmp_path / "blobs").rglob("walk.video")).read_bytes() == data
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
