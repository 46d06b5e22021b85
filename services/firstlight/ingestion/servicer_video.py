"""IngestionService's video RPCs (transport only): the upload is spooled to a temporary file with
its byte limit checked per chunk, then :mod:`firstlight.ingestion.video` does the work.
Mixed into :class:`firstlight.ingestion.servicer.IngestionServicer` (it provides ``core``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from firstlight.config import VideoLimits
from firstlight.errors import InvalidArgument, ResourceExhausted
from firstlight.ingestion import video
from firstlight.runtime.status import map_errors
from firstlight.v1 import video_pb2
from firstlight.video.ingest import VideoSummary
from firstlight.video.resumable import ResumableUploads
from firstlight.video.spool import Sink, Spool, spool_stream


def info_to_proto(info: dict) -> video_pb2.VideoInfo:
    return video_pb2.VideoInfo(
        container=info["container"], codec=info["codec"], width=info["width"], height=info["height"],
        duration_s=info["duration_s"] or 0.0, fps=info["fps"] or 0.0, bytes=info["bytes"],
    )  # fmt: skip


def summary_to_proto(app_id: str, s: VideoSummary) -> video_pb2.UploadVideoResponse:
    return video_pb2.UploadVideoResponse(
        video_id=s.video_id,
        blob_uri=f"video:{app_id}/{s.video_id}",  # an opaque reference: clients never see server paths
        info=info_to_proto(s.info),
        frames_decoded=s.frames_decoded,
        frames_kept=s.frames_kept,
        frames_added=s.frames_added,
        scene_changes=s.scene_changes,
        duplicates_dropped=s.duplicates_dropped,
        partial=s.partial,
        error=s.error,
        last_good_s=s.last_good_s or 0.0,
        frame_ids=s.frame_ids,
    )


@map_errors
class VideoRpcs:
    core: video.Ingestion
    #: Resumable uploads' bytes (None: only one-shot uploads).
    uploads: ResumableUploads | None = None
    #: Where one-shot uploads are spooled (None: the system's temp dir).
    spool_dir: Path | None = None
    _labeler: Callable[[], str]  # IngestionServicer's: who is calling, for the label records

    async def UploadVideo(self, request_iterator: AsyncIterator, context):  # type: ignore[no-untyped-def]
        limits = VideoLimits()

        def open_sink(h) -> Sink:  # type: ignore[no-untyped-def]
            if not h.upload_id:
                if h.offset or h.total_bytes:
                    raise InvalidArgument("offset and total_bytes belong to a resumable upload: set upload_id")
                return Spool(limits.max_video_bytes, self.spool_dir)
            return video.open_upload(self.core, self.uploads, h.app_id, h.upload_id, h.video_id, h.offset, h.total_bytes)

        header, sink = await spool_stream(request_iterator, limits.max_video_bytes, "UploadVideo", open_sink)
        resumable = bool(header.upload_id)
        try:
            if resumable and not sink.complete:  # the stream ended early: nothing to process yet
                return video_pb2.UploadVideoResponse(video_id=header.video_id, pending=True, bytes_held=sink.size)
            path = await asyncio.to_thread(sink.finish)
            try:
                summary = await asyncio.to_thread(
                    video.upload_video, self.core, limits, header.app_id, header.video_id, path,
                    concepts=list(header.concepts), metadata=dict(header.metadata),
                )  # fmt: skip
            except (InvalidArgument, ResourceExhausted):
                if resumable:  # the file itself is refused: resuming it could only fail again
                    self.uploads.discard(header.app_id, header.upload_id)  # type: ignore[union-attr]
                raise
            if resumable:  # processed: the bytes are the blob store's original now
                self.uploads.discard(header.app_id, header.upload_id)  # type: ignore[union-attr]
        finally:
            sink.close()  # a resumable upload's bytes stay if processing did not end (a crash)
        response = summary_to_proto(header.app_id, summary)
        response.bytes_held = sink.size
        return response

    async def GetVideoUpload(self, request, context):  # type: ignore[no-untyped-def]
        st = await asyncio.to_thread(video.upload_status, self.core, self.uploads, request.app_id, request.upload_id)
        return video_pb2.VideoUploadStatus(upload_id=st.upload_id, video_id=st.video_id, bytes_held=st.bytes_held, total_bytes=st.total_bytes)

    async def AnnotateVideoSegment(self, request, context):  # type: ignore[no-untyped-def]
        ids = await asyncio.to_thread(
            video.annotate_segment, self.core, request.app_id, request.video_id, request.start_s, request.end_s,
            list(request.add_concepts), list(request.remove_concepts), self._labeler(),
        )  # fmt: skip
        return video_pb2.AnnotateVideoSegmentResponse(input_ids=ids)
