"""Videos: upload one (its frames become inputs), label a segment, predict on a video with
per-frame results and time segments streamed back."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from firstlight.runtime.retry import is_retryable
from firstlight.sdk.base import ServiceCalls
from firstlight.sdk.errors import wrap_errors
from firstlight.v1 import inference_pb2, search_pb2, video_pb2

#: Bytes per upload message (the service takes at most 4 MiB).
CHUNK_BYTES = 1 << 20
#: File suffixes the CLI treats as videos.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")


def video_id_for(path: Path) -> str:
    """A video id from a file name (``My clip (1).mp4`` -> ``My-clip-1``): the same file uploaded
    again gets the same id, so a retry adds only the frames still missing."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._") or "video"
    return stem[:100]


@dataclass
class VideoPredictions:
    """What PredictVideo streamed back, gathered (``predict_video_stream`` gives them one by one)."""

    frames: list[inference_pb2.FramePrediction] = field(default_factory=list)
    segments: list[video_pb2.TimeSegment] = field(default_factory=list)
    end: video_pb2.VideoDecodeEnd | None = None


def _chunks(path: Path, header_msg, offset: int = 0) -> Iterator:  # type: ignore[no-untyped-def]
    yield header_msg
    with open(path, "rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(CHUNK_BYTES):
            yield type(header_msg)(chunk=chunk)


def resumable_upload_id(app_id: str, vid: str, path: Path) -> str:
    """The upload id of this file as video ``vid``: derived from the app, the video id, the size
    and the first and last MiB, so a retry, or the same command run again after an interruption,
    resumes the bytes the service already holds."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{app_id}\0{vid}\0{size}\0".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(CHUNK_BYTES))
        fh.seek(max(0, size - CHUNK_BYTES))
        h.update(fh.read(CHUNK_BYTES))
    return "v" + h.hexdigest()[:40]


def _resume_worth_retrying(exc: BaseException) -> bool:
    """UNAVAILABLE (the service restarting), or the resume raced the old stream's end."""
    code = getattr(exc, "code", None)
    if not callable(code) or not isinstance(exc, grpc.RpcError):
        return False
    if is_retryable(exc):
        return True
    details = exc.details() or ""
    return code() == grpc.StatusCode.FAILED_PRECONDITION and ("resume from offset" in details or "another stream" in details)


class VideoCalls(ServiceCalls):
    @wrap_errors
    def upload_video(
        self,
        app_id: str,
        path: str | Path,
        *,
        video_id: str = "",
        concepts: Iterable[str] = (),
        metadata: dict[str, str] | None = None,
        timeout: float = 3600.0,
        resumable: bool = True,
    ) -> video_pb2.UploadVideoResponse:
        """Upload a video file; its sampled frames become inputs ``<video id>.t<ms>``.

        Resumable: after a broken stream (the network, or the service restarting) the retry asks
        the service how many bytes it holds and sends only the rest; the frame ids are derived
        from the video id, so a retry after the bytes were all in duplicates nothing either."""
        path = Path(path)
        vid = video_id or video_id_for(path)
        size = path.stat().st_size
        uid = resumable_upload_id(app_id, vid, path) if resumable and size else ""

        def attempt() -> video_pb2.UploadVideoResponse:
            offset = self._held(app_id, uid, vid, size) if uid else 0
            header = video_pb2.UploadVideoRequest(
                header=video_pb2.VideoHeader(
                    app_id=app_id, video_id=vid, concepts=list(concepts), metadata=metadata or {},
                    upload_id=uid, offset=offset, total_bytes=size if uid else 0,
                )
            )  # fmt: skip
            response: video_pb2.UploadVideoResponse = self.ingestion.UploadVideo(_chunks(path, header, offset), timeout=timeout)
            return response

        return self.retry.call(attempt, retry_on=_resume_worth_retrying)

    def _held(self, app_id: str, uid: str, vid: str, size: int) -> int:
        """Bytes of upload ``uid`` the service holds (0: none, or it began as another file)."""
        try:
            st = self.ingestion.GetVideoUpload(video_pb2.GetVideoUploadRequest(app_id=app_id, upload_id=uid), timeout=self._deadline("GetVideoUpload"))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return 0
            raise
        return int(st.bytes_held) if (st.video_id, st.total_bytes) == (vid, size) else 0

    @wrap_errors
    def label_video_segment(
        self, app_id: str, video_id: str, start_s: float, end_s: float, *, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> list[str]:
        """Label every frame of a video from ``start_s`` to ``end_s``; returns their input ids."""
        resp = self.ingestion.AnnotateVideoSegment(
            video_pb2.AnnotateVideoSegmentRequest(
                app_id=app_id, video_id=video_id, start_s=start_s, end_s=end_s, add_concepts=list(add), remove_concepts=list(remove)
            ),
            timeout=self._deadline("PostAnnotations"),
        )
        return list(resp.input_ids)

    @wrap_errors
    def predict_video_stream(
        self,
        path: str | Path,
        *,
        model: str = "general",
        version: str = "",
        app_id: str = "",
        top_k: int = 5,
        concepts: Iterable[str] = (),
        min_score: float = 0.0,
        segment_threshold: float = 0.5,
        workflow: Sequence[inference_pb2.WorkflowStep] = (),
        timeout: float = 3600.0,
    ) -> Iterator[inference_pb2.PredictVideoResponse]:
        """PredictVideo's results as they come: a ``frame`` per sampled frame, a ``segment``
        whenever one closes, then the ``end``. With ``workflow`` (PredictWorkflow's steps) the
        steps run on every sampled frame instead of ``model`` (frames carry ``workflow``,
        segments their ``step``)."""
        if workflow:
            spec = inference_pb2.PredictVideoHeader(app_id=app_id, segment_threshold=segment_threshold, workflow=list(workflow))
        else:
            spec = inference_pb2.PredictVideoHeader(
                app_id=app_id, model_id=model, model_version=version, top_k=top_k, concepts=list(concepts),
                min_score=min_score, segment_threshold=segment_threshold,
            )  # fmt: skip
        header = inference_pb2.PredictVideoRequest(header=spec)
        yield from self.inference.PredictVideo(_chunks(Path(path), header), timeout=timeout)

    @wrap_errors
    def predict_video(self, path: str | Path, **kw) -> VideoPredictions:  # type: ignore[no-untyped-def]
        out = VideoPredictions()
        for item in self.predict_video_stream(path, **kw):
            kind = item.WhichOneof("item")
            if kind == "frame":
                out.frames.append(item.frame)
            elif kind == "segment":
                out.segments.append(item.segment)
            else:
                out.end = item.end
        return out


class VideoSearchCalls(ServiceCalls):
    @wrap_errors
    def search_by_video(self, app_id: str, path: str | Path, *, top_k: int = 10, frames_per_query: int = 20, max_query_frames: int = 30):  # type: ignore[no-untyped-def]
        """Videos and moments most like a clip: the clip is sampled here (as an upload is, at
        most ``max_query_frames`` frames), each frame searched, and each video scored by its
        best in-order alignment of query frames to its frames
        (:func:`firstlight.video.clip_search.rank_videos`). Returns ClipMatch, best first."""
        import io

        from firstlight.config import VideoLimits
        from firstlight.video.clip_search import FrameHit, rank_videos
        from firstlight.video.decode import open_video
        from firstlight.video.frames import sample_frames
        from firstlight.video.sampler import FrameSampler

        limits = VideoLimits()
        per_query = []
        with open_video(Path(path), limits, label="query clip") as reader:
            for n, kept in enumerate(sample_frames(reader, FrameSampler.from_limits(limits), 512)):
                if n >= max_query_frames:
                    break
                buf = io.BytesIO()
                kept.image.save(buf, "JPEG", quality=90)
                hits = self.search.SearchByImage(
                    search_pb2.SearchByImageRequest(app_id=app_id, image_bytes=buf.getvalue(), page_size=frames_per_query),
                    timeout=self._deadline("SearchByImage"),
                ).hits
                per_query.append([FrameHit(h.video_id, h.video_t, h.score, h.input_id) for h in hits if h.video_id])
        return rank_videos(per_query, limit=top_k)
