"""Ingesting one uploaded video (pure core; the ingestion service supplies the ports): keep the
original, decode and sample it as a stream, and hand each kept frame on as an image input with
an id derived from the video id and its timestamp, in small batches while the video decodes.

Restart safety: frame ids are deterministic and frames already stored are skipped, so running
the same upload again (after a crash of this service, or a client retry) adds only the frames
that are missing and duplicates none; the summary is written last and says how it ended."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from firstlight.config import VideoLimits
from firstlight.errors import InvalidArgument, ResourceExhausted
from firstlight.video.decode import VideoInfo, open_video
from firstlight.video.frames import (
    META_REASON,
    META_TIME,
    META_VIDEO,
    frame_input_id,
    sample_frames,
    video_id,
)
from firstlight.video.sampler import FrameSampler

#: Kept frames handed on per batch (one metadata transaction + its events each).
FRAME_BATCH = 16
JPEG_QUALITY = 90


@dataclass
class FrameInput:
    """A kept frame as an image input."""

    id: str
    t: float
    reason: str
    jpeg: bytes
    metadata: dict[str, str]
    concepts: Sequence[str] = ()


class FrameSink(Protocol):
    """Where frames become inputs (the ingestion core)."""

    def existing(self, app_id: str, input_ids: Sequence[str]) -> set[str]: ...
    def add(self, app_id: str, frames: Sequence[FrameInput]) -> None: ...


class VideoStore(Protocol):
    """Where the original and the summary are kept (the blob store)."""

    def put_original(self, app_id: str, video_id: str, path: Path) -> str: ...
    def put_summary(self, app_id: str, video_id: str, summary: bytes) -> None: ...
    def delete_original(self, app_id: str, video_id: str) -> None: ...


@dataclass
class VideoSummary:
    video_id: str
    original_uri: str
    info: dict
    frames_decoded: int
    frames_kept: int
    frames_added: int  # kept frames not already stored (0 on an idempotent re-run)
    scene_changes: int
    duplicates_dropped: int
    partial: bool
    error: str
    last_good_s: float | None
    frame_ids: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()


def jpeg(image) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def ingest_video(
    app_id: str,
    vid: str,
    path: Path,
    limits: VideoLimits,
    sink: FrameSink,
    store: VideoStore,
    *,
    concepts: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    on_batch: Callable[[list[FrameInput]], None] | None = None,
    batch_size: int = FRAME_BATCH,
) -> VideoSummary:
    """Check, store and sample the video at ``path``; returns how it went. Raises
    InvalidArgument / ResourceExhausted (nothing stored) when the file is refused outright."""
    video_id(vid)
    extra = dict(metadata or {})
    with open_video(path, limits, label=f"video {vid!r}") as reader, ThreadPoolExecutor(1, thread_name_prefix="video-frames") as pool:
        info: VideoInfo = reader.info
        uri = store.put_original(app_id, vid, path)
        sampler = FrameSampler.from_limits(limits)
        ids: list[str] = []
        added = 0
        pending: list[FrameInput] = []
        # One batch is stored (a PostInputs transaction: checks, blobs, rows, events) while the
        # next one decodes: the two overlap on two cores. At most one batch is in flight, so
        # memory stays bounded, batches are stored in order, and an error surfaces at the next.
        inflight: Future[None] | None = None

        def store_batch(batch: list[FrameInput]) -> None:
            nonlocal added
            have = sink.existing(app_id, [f.id for f in batch])
            fresh = [f for f in batch if f.id not in have]
            if fresh:
                sink.add(app_id, fresh)
                added += len(fresh)
            if on_batch is not None:
                on_batch(batch)

        def wait() -> None:
            nonlocal inflight
            if inflight is not None:
                done, inflight = inflight, None
                done.result()

        def flush() -> None:
            nonlocal inflight
            if not pending:
                return
            batch = list(pending)
            pending.clear()
            wait()
            inflight = pool.submit(store_batch, batch)

        stopped = ""
        try:
            try:
                for kept in sample_frames(reader, sampler, limits.video_frame_max_side):
                    fid = frame_input_id(vid, kept.t)
                    if ids and ids[-1] == fid:  # two frames within the same millisecond: keep the first
                        continue
                    ids.append(fid)
                    meta = {**extra, META_VIDEO: vid, META_TIME: f"{kept.t:.3f}", META_REASON: kept.reason}
                    pending.append(FrameInput(fid, kept.t, kept.reason, jpeg(kept.image), meta, tuple(concepts)))
                    if len(pending) >= batch_size:
                        flush()
            except (InvalidArgument, ResourceExhausted) as exc:
                if not ids:  # refused before any frame: leave nothing behind, report the status
                    store.delete_original(app_id, vid)
                    raise
                # A limit the header did not announce (duration, frame count, a frame size change)
                # found part-way: the frames before it are kept and the video is marked partial.
                stopped = str(exc)
            flush()
        finally:
            wait()  # nothing is left running when this returns or raises
        out = reader.outcome
        summary = VideoSummary(
            video_id=vid,
            original_uri=uri,
            info=asdict(info),
            frames_decoded=out.frames,
            frames_kept=len(ids),
            frames_added=added,
            scene_changes=sampler.stats.scene_changes,
            duplicates_dropped=sampler.stats.duplicates_dropped,
            partial=out.partial or bool(stopped),
            error=stopped or out.error,
            last_good_s=out.last_good_s,
            frame_ids=ids,
        )
    store.put_summary(app_id, vid, summary.to_json())
    return summary
