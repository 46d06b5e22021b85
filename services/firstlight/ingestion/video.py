"""Videos in the ingestion service: the adapters the video ingest core needs (frames become
inputs through :class:`Ingestion`, originals and summaries go to the blob store), and labeling a
whole segment of a video at once. No grpc here; the servicer spools the upload and calls these."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from firstlight.config import VideoLimits
from firstlight.domain import validation
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.ports import VideoRef
from firstlight.video.frames import parse_frame_input_id, video_id
from firstlight.video.ingest import FrameInput, VideoSummary, ingest_video
from firstlight.video.resumable import ResumableUploads, UploadState, UploadWriter
from firstlight.video.segments import frames_in


class FramesAsInputs:
    """FrameSink over the ingestion core: each batch of frames is one all-or-nothing PostInputs
    (metadata and ``inputs.ingested`` events in one transaction)."""

    def __init__(self, core: Ingestion) -> None:
        self.core = core

    def existing(self, app_id: str, input_ids: Sequence[str]) -> set[str]:
        return set(self.core.store.existing_input_ids(app_id, list(input_ids)))

    def add(self, app_id: str, frames: Sequence[FrameInput]) -> None:
        items = [NewInput(image_bytes=f.jpeg, id=f.id, concepts=list(f.concepts), metadata=f.metadata) for f in frames]
        self.core.post_inputs(app_id, items)


class BlobVideos:
    """VideoStore over the blob store."""

    def __init__(self, blobs) -> None:  # type: ignore[no-untyped-def]
        self.blobs = blobs

    def put_original(self, app_id: str, vid: str, path: Path) -> str:
        return self.blobs.put_video(app_id, vid, path)

    def put_summary(self, app_id: str, vid: str, summary: bytes) -> None:
        self.blobs.put_video_summary(app_id, vid, summary)

    def delete_original(self, app_id: str, vid: str) -> None:
        self.blobs.delete_video(app_id, vid)


def upload_video(
    core: Ingestion, limits: VideoLimits, app_id: str, vid: str, path: Path, *, concepts: Sequence[str] = (), metadata: dict | None = None
) -> VideoSummary:
    core.get_app(app_id)  # unknown app: NOT_FOUND before any decoding
    return ingest_video(app_id, vid, path, limits, FramesAsInputs(core), BlobVideos(core.blobs), concepts=concepts, metadata=metadata)


def open_upload(core: Ingestion, uploads: ResumableUploads | None, app_id: str, uid: str, vid: str, offset: int, total_bytes: int) -> UploadWriter:
    """The writer of a resumable upload, checked: the app exists, the video id is valid."""
    if uploads is None:
        raise FailedPrecondition("this ingestion service keeps no resumable uploads (no upload directory)")
    core.get_app(app_id)
    return uploads.open(app_id, uid, video_id(vid), offset, total_bytes)


def upload_status(core: Ingestion, uploads: ResumableUploads | None, app_id: str, uid: str) -> UploadState:
    if uploads is None:
        raise FailedPrecondition("this ingestion service keeps no resumable uploads (no upload directory)")
    core.get_app(app_id)
    return uploads.status(app_id, uid)


DROP_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def submit_video(core: Ingestion, limits: VideoLimits, drop_dir: Path | None, app_id: str, ref: VideoRef) -> VideoSummary:
    """An ``inputs.submit`` record naming a video in the app's drop folder: ingested as an upload
    of that file. The path is built here from the app id and a validated file name, so a record
    can reach only its own app's folder. Raises (and the record is dead-lettered with the
    reason) on no drop folder, a bad name, a missing file, or a file refused as an upload is."""
    if drop_dir is None:
        raise FailedPrecondition("videos by reference are not enabled: the ingestion service has no FIRSTLIGHT_VIDEO_DROP_DIR")
    if not DROP_FILE.fullmatch(ref.file) or ".." in ref.file:
        raise InvalidArgument(f"video file {ref.file[:80]!r}: need a file name in the app's drop folder, [A-Za-z0-9][A-Za-z0-9._-]{{0,199}}, no path")
    core.get_app(app_id)
    path = drop_dir / validation.app_id(app_id) / ref.file
    if not path.is_file():
        raise NotFound(f"video file {ref.file!r} is not in app {app_id!r}'s drop folder")
    vid = ref.video_id or video_id_for_file(ref.file)
    return upload_video(core, limits, app_id, vid, path, concepts=list(ref.concepts), metadata=dict(ref.metadata))


def video_id_for_file(name: str) -> str:
    """A video id from a file name (``walk 1.mp4`` -> ``walk-1``), as the SDK and gateway make it."""
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:100] or "video"


def video_summary(core: Ingestion, app_id: str, vid: str) -> dict:
    core.get_app(app_id)
    video_id(vid)
    return json.loads(core.blobs.get_video_summary(app_id, vid))


def annotate_segment(
    core: Ingestion, app_id: str, vid: str, start_s: float, end_s: float, add: Sequence[str], remove: Sequence[str], labeled_by: str = ""
) -> list[str]:
    """Label every stored frame of video ``vid`` from ``start_s`` to ``end_s``; returns their ids.
    The labels record ``labeled_by`` (the caller's key) and when, as a PostAnnotations does."""
    if not (0 <= start_s <= end_s):
        raise InvalidArgument(f"segment {start_s}..{end_s} s: need 0 <= start_s <= end_s")
    if not add and not remove:
        raise InvalidArgument("the segment annotation adds and removes no concept")
    summary = video_summary(core, app_id, vid)
    times = [(fid, parsed[1]) for fid in summary["frame_ids"] if (parsed := parse_frame_input_id(fid))]
    ids = frames_in(start_s, end_s, times)
    if not ids:
        raise NotFound(f"video {vid!r} has no frame between {start_s:.3f} s and {end_s:.3f} s")
    present = core.store.existing_input_ids(app_id, ids)  # frames deleted since are skipped
    ids = [i for i in ids if i in present]
    if not ids:
        raise NotFound(f"the frames of video {vid!r} between {start_s:.3f} s and {end_s:.3f} s were deleted")
    core.annotate(app_id, [(i, list(add), list(remove), 0) for i in ids], labeled_by)
    return ids
