"""The gateway's video routes over fake service clients (no stack): the multipart body is parsed
as it streams and forwarded in chunks (fields first), bad forms are 400s, the byte limit a 413,
and PredictVideo's results come back as NDJSON or server-sent events."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from gateway_doubles import gateway_settings

from firstlight import errors
from firstlight.v1 import common_pb2, inference_pb2, video_pb2
from firstlight.video.resumable import ResumableUploads


class FakeIngestion:
    def __init__(self, uploads: ResumableUploads) -> None:
        self.header: video_pb2.VideoHeader | None = None
        self.chunks: list[bytes] = []
        self.uploads = uploads  # resumable uploads as the service keeps them

    async def get_app(self, req, key):  # type: ignore[no-untyped-def]
        return common_pb2.App(id=req.id)

    async def upload_video(self, reqs, key):  # type: ignore[no-untyped-def]
        writer = None
        async for r in reqs:
            if r.WhichOneof("part") == "header":
                self.header = h = r.header
                if h.upload_id:
                    writer = self.uploads.open(h.app_id, h.upload_id, h.video_id, h.offset, h.total_bytes)
            elif writer is not None:
                writer.write(r.chunk)
            else:
                self.chunks.append(r.chunk)
        if writer is not None:
            writer.close()
            if not writer.complete:
                return video_pb2.UploadVideoResponse(video_id=self.header.video_id, pending=True, bytes_held=writer.size)  # type: ignore[union-attr]
            self.chunks = [writer.path.read_bytes()]
            self.uploads.discard(self.header.app_id, self.header.upload_id)  # type: ignore[union-attr]
        data = b"".join(self.chunks)
        if not data.startswith(b"VID"):
            raise errors.InvalidArgument("not a video in a supported format")
        return video_pb2.UploadVideoResponse(video_id=self.header.video_id, frames_kept=3, partial=True, error="cut", frame_ids=["v.t0000000000"])  # type: ignore[union-attr]

    async def get_video_upload(self, req, key):  # type: ignore[no-untyped-def]
        st = self.uploads.status(req.app_id, req.upload_id)
        return video_pb2.VideoUploadStatus(upload_id=st.upload_id, video_id=st.video_id, bytes_held=st.bytes_held, total_bytes=st.total_bytes)

    async def annotate_video_segment(self, req, key):  # type: ignore[no-untyped-def]
        return video_pb2.AnnotateVideoSegmentResponse(input_ids=[f"{req.video_id}.t0000001000"])


class FakeInference:
    def __init__(self) -> None:
        self.header: inference_pb2.PredictVideoHeader | None = None

    async def predict_video(self, reqs, key):  # type: ignore[no-untyped-def]
        data = b""
        async for r in reqs:
            if r.WhichOneof("part") == "header":
                self.header = r.header
            else:
                data += r.chunk
        if not data.startswith(b"VID"):
            raise errors.InvalidArgument("not a video in a supported format")
        pred = inference_pb2.Prediction(concepts=[common_pb2.ScoredConcept(name="cat", score=0.9)])
        yield inference_pb2.PredictVideoResponse(frame=inference_pb2.FramePrediction(t=0.0, keep_reason="start", prediction=pred))
        yield inference_pb2.PredictVideoResponse(segment=video_pb2.TimeSegment(concept="cat", start_s=0.0, end_s=1.0, max_score=0.9, frames=2))
        if b"BREAK" in data:
            raise errors.Unavailable("inference went away")
        yield inference_pb2.PredictVideoResponse(end=video_pb2.VideoDecodeEnd(frames_decoded=30))


@pytest.fixture
def gw(tmp_path):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from firstlight.gateway.app import create_app

    settings = gateway_settings(tmp_path, max_video_bytes=4 << 20)
    fake = SimpleNamespace(ingestion=FakeIngestion(ResumableUploads(tmp_path / "uploads", 4 << 20)), inference=FakeInference())
    with TestClient(create_app(settings, clients=fake)) as client:  # type: ignore[arg-type]
        client.headers["Authorization"] = "Bearer k"
        yield client, fake


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[bytes, dict[str, str]]:
    body = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


VIDEO = b"VID" + bytes(range(256)) * 10_000  # 2.4 MiB: three chunks


def test_upload_streams_the_file_in_chunks_with_the_fields_first(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake = gw
    body, headers = multipart([("concepts", None, b"cat, dog"), ("metadata", None, b'{"camera": "door"}'), ("file", "My walk (1).mp4", VIDEO)])
    r = client.post("/v1/apps/a/videos", content=body, headers=headers)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["frames_kept"] == 3 and out["partial"] is True and out["error"] == "cut"
    h = fake.ingestion.header
    assert h.app_id == "a" and h.video_id == "My-walk-1" and list(h.concepts) == ["cat", "dog"] and dict(h.metadata) == {"camera": "door"}
    assert b"".join(fake.ingestion.chunks) == VIDEO
    assert len(fake.ingestion.chunks) == 3 and all(len(c) <= 1 << 20 for c in fake.ingestion.chunks)
    # The video id from the query string
    r = client.post("/v1/apps/a/videos?video_id=clip-1", content=body, headers=headers)
    assert r.status_code == 201 and fake.ingestion.header.video_id == "clip-1"


def test_resumable_upload_over_http(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake = gw
    url, n = "/v1/apps/a/videos/uploads/up-000001", len(VIDEO)
    assert client.head(url).status_code == 404
    half = n // 2

    def patch(offset: int, data: bytes, **params: str):  # type: ignore[no-untyped-def]
        headers = {"Upload-Offset": str(offset), "Upload-Length": str(n), "Content-Type": "application/offset+octet-stream"}
        return client.patch(url, content=data, headers=headers, params={"video_id": "walk", **params})

    r = patch(0, VIDEO[:half])
    assert r.status_code == 200 and r.json() == {"pending": True, "bytes_held": half} and r.headers["Upload-Offset"] == str(half)
    head = client.head(url)
    assert head.status_code == 200 and (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == (str(half), str(n))
    assert client.get(url).json()["bytes_held"] == half
    r = patch(half - 7, VIDEO[half - 7 :])  # a wrong offset: 409 naming the right one
    assert r.status_code == 409 and f"resume from offset {half}" in r.json()["error"]["message"]
    assert patch(half, VIDEO[half:], video_id="").status_code == 400  # video_id is required
    r = client.patch(url, content=b"x", params={"video_id": "walk"}, headers={"Upload-Length": str(n)})
    assert r.status_code == 400 and "Upload-Offset" in r.text
    r = client.patch(url, content=b"x", params={"video_id": "walk"}, headers={"Upload-Offset": "²".encode("latin-1"), "Upload-Length": str(n)})
    assert r.status_code == 400 and "Upload-Offset" in r.text  # a digit to isdigit(), not to int()
    r = patch(half, VIDEO[half:], concepts="cat")
    assert r.status_code == 201, r.text
    assert r.json()["frames_kept"] == 3 and fake.ingestion.chunks == [VIDEO] and list(fake.ingestion.header.concepts) == ["cat"]
    assert client.head(url).status_code == 404  # processed: gone


@pytest.mark.parametrize(
    ("parts", "status", "words"),
    [
        ([("concepts", None, b"x")], 400, "no `file` part"),
        ([("file", "a.mp4", b"VID"), ("concepts", None, b"x")], 400, "after the `file` part"),
        ([("file", "a.mp4", b"VID"), ("file", "b.mp4", b"VID")], 400, "after the `file` part"),
        ([("video", "a.mp4", b"VID")], 400, "named `file`"),
        ([("metadata", None, b"[1]"), ("file", "a.mp4", b"VID")], 400, "JSON object"),
        ([("file", "a.mp4", b"not a video")], 400, "not a video"),
    ],
)
def test_bad_upload_forms_are_400(gw, parts, status, words) -> None:  # type: ignore[no-untyped-def]
    client, _ = gw
    body, headers = multipart(parts)
    r = client.post("/v1/apps/a/videos", content=body, headers=headers)
    assert r.status_code == status and words in r.json()["error"]["message"], r.text


def test_not_multipart_cut_short_and_over_the_limit(gw) -> None:  # type: ignore[no-untyped-def]
    client, _ = gw
    r = client.post("/v1/apps/a/videos", content=VIDEO, headers={"Content-Type": "video/mp4"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]["message"]
    body, headers = multipart([("file", "a.mp4", VIDEO)])
    r = client.post("/v1/apps/a/videos", content=body[: len(body) // 2], headers=headers)
    assert r.status_code == 400 and "cut short" in r.json()["error"]["message"], r.text
    big, headers = multipart([("file", "a.mp4", b"VID" + b"\0" * (5 << 20))])
    r = client.post("/v1/apps/a/videos", content=big, headers=headers)  # Content-Length over 4 MiB + slack
    assert r.status_code == 413 and "FIRSTLIGHT_MAX_VIDEO_BYTES" in r.json()["error"]["message"]

    def chunked():  # no Content-Length: counted as it streams
        yield big

    r = client.post("/v1/apps/a/videos", content=chunked(), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "RESOURCE_EXHAUSTED", r.text


def test_label_a_segment(gw) -> None:  # type: ignore[no-untyped-def]
    client, _ = gw
    r = client.post("/v1/apps/a/videos/walk/segments", json={"start_s": 1, "end_s": 2, "add_concepts": ["dog"]})
    assert r.status_code == 200 and r.json() == {"input_ids": ["walk.t0000001000"]}
    r = client.post("/v1/apps/a/videos/walk/segments", json={"start_s": -1, "end_s": 2})
    assert r.status_code == 400


def test_predict_streams_ndjson_or_sse(gw) -> None:  # type: ignore[no-untyped-def]
    client, fake = gw
    body, headers = multipart([("model_id", None, b"pets"), ("top_k", None, b"3"), ("file", "a.mp4", VIDEO)])
    r = client.post("/v1/apps/a/predict/video", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [next(iter(x)) for x in lines] == ["frame", "segment", "end"]
    assert lines[0]["frame"]["prediction"]["concepts"][0]["name"] == "cat" and lines[1]["segment"]["end_s"] == 1.0
    assert fake.inference.header.model_id == "pets" and fake.inference.header.top_k == 3
    r = client.post("/v1/apps/a/predict/video", content=body, headers={**headers, "Accept": "text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert [e.split("\n")[0] for e in r.text.strip().split("\n\n")] == ["event: frame", "event: segment", "event: end"]
    # refused before the first result: a plain JSON 400; broken later: an error line ends the stream
    bad, headers = multipart([("file", "a.mp4", b"junk")])
    r = client.post("/v1/apps/a/predict/video", content=bad, headers=headers)
    assert r.status_code == 400 and "not a video" in r.json()["error"]["message"]
    broken, headers = multipart([("file", "a.mp4", b"VID BREAK")])
    lines = [json.loads(x) for x in client.post("/v1/apps/a/predict/video", content=broken, headers=headers).text.splitlines()]
    assert lines[-1]["error"]["code"] == "UNAVAILABLE" and lines[-1]["error"]["status"] == 503
    bad_num, headers = multipart([("top_k", None, b"five"), ("file", "a.mp4", VIDEO)])
    assert client.post("/v1/apps/a/predict/video", content=bad_num, headers=headers).status_code == 400
    # a workflow's steps instead of a model
    steps = b'[{"model_id": "general"}, {"model_id": "pets", "gate_concepts": ["cat"], "gate_step": 0}]'
    body, headers = multipart([("workflow", None, steps), ("file", "a.mp4", VIDEO)])
    assert client.post("/v1/apps/a/predict/video", content=body, headers=headers).status_code == 200
    h = fake.inference.header
    assert [s.model_id for s in h.workflow] == ["general", "pets"] and list(h.workflow[1].gate_concepts) == ["cat"] and not h.model_id
    for junk in (b"[]", b'[{"gate_step": 0}]', b"{not json"):
        body, headers = multipart([("workflow", None, junk), ("file", "a.mp4", VIDEO)])
        r = client.post("/v1/apps/a/predict/video", content=body, headers=headers)
        assert r.status_code == 400 and "workflow" in r.json()["error"]["message"], junk


def test_openapi_documents_the_video_routes(gw) -> None:  # type: ignore[no-untyped-def]
    client, _ = gw
    paths = client.get("/v1/openapi.json").json()["paths"]
    for p in ("/v1/apps/{app_id}/videos", "/v1/apps/{app_id}/videos/{video}/segments", "/v1/apps/{app_id}/predict/video", "/v1/apps/{app_id}/videos/{video}"):
        assert p in paths, p
    assert "multipart/form-data" in paths["/v1/apps/{app_id}/videos"]["post"]["requestBody"]["content"]
    assert "application/x-ndjson" in paths["/v1/apps/{app_id}/predict/video"]["post"]["responses"]["200"]["content"]


def test_clock() -> None:
    from firstlight.gateway.video_api import clock

    assert [clock(t) for t in (0, 2.0, 12.04, 61.96, 3725.5)] == ["00:00.0", "00:02.0", "00:12.0", "01:02.0", "1:02:05.5"]


HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def test_video_api_and_page_list_the_frames_escaped(gw) -> None:  # type: ignore[no-untyped-def]
    from firstlight.gateway.session import COOKIE

    client, _ = gw
    summary = {
        "video_id": "walk",
        "info": {"codec": "h264", "width": 320, "height": 240, "duration_s": 8.0},
        "frames_decoded": 80,
        "frames_kept": 2,
        "scene_changes": 1,
        "duplicates_dropped": 0,
        "partial": True,
        "error": HOSTILE,
        "last_good_s": 1.5,
        "frame_ids": ["walk.t0000000000", "walk.t0000001500"],
    }
    client.app.state.media.blobs.put_video_summary("a", "walk", json.dumps(summary).encode())
    r = client.get("/v1/apps/a/videos/walk")
    assert r.status_code == 200 and r.json()["frames"] == [{"input_id": "walk.t0000000000", "t": 0.0}, {"input_id": "walk.t0000001500", "t": 1.5}]
    assert client.get("/v1/apps/a/videos/nope").status_code == 404
    assert client.get("/v1/apps/a/videos/.hidden").status_code == 400
    codec = client.app.state.sessions
    client.cookies.set(COOKIE, codec.encode(codec.new("flk_key", "a", False)))
    del client.headers["Authorization"]
    page = client.get("/portal/apps/a/videos/walk?t=1.5")
    assert page.status_code == 200, page.text
    html = page.text
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
    assert 'href="/portal/apps/a/inputs/walk.t0000001500"' in html and "00:01.5" in html and "broke at 00:01.5" in html
    assert html.count('class="tile focus"') == 1
    assert client.get("/portal/apps/other/videos/walk").status_code == 403
