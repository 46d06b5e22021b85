"""Open an untrusted video file and decode its frames as a stream, with every limit checked
before the pixels it guards are allocated. FFmpeg's libraries through PyAV (they ship in its
wheel); errors become InvalidArgument / ResourceExhausted with a message naming the problem.

Only three demuxers ever parse an upload (FFmpeg's ``format_whitelist``): MP4/MOV, Matroska/
WebM and AVI. Probing with every demuxer FFmpeg has would let a crafted file reach parsers
that read other files or URLs (HLS, concat), and would accept a JPEG as a one-frame "video"."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from firstlight.errors import InvalidArgument, ResourceExhausted

if TYPE_CHECKING:
    from firstlight.config import VideoLimits

#: FFmpeg demuxer name -> what a user calls it.
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV", "matroska,webm": "WebM/Matroska", "avi": "AVI"}
_WHITELIST = "mov,matroska,avi"
#: Video codecs accepted (FFmpeg decoder names). Others (screen-capture, lossless archival and
#: raw codecs...) are refused: they are not what cameras and phones produce, and each extra
#: decoder is more attack surface for untrusted files.
CODECS = {
    "h264": "H.264", "hevc": "H.265", "vp8": "VP8", "vp9": "VP9", "av1": "AV1", "mpeg4": "MPEG-4 part 2",
    "msmpeg4v2": "MS MPEG-4 v2", "msmpeg4": "MS MPEG-4 v3 (DivX 3)", "mjpeg": "Motion JPEG",
    "mpeg1video": "MPEG-1", "mpeg2video": "MPEG-2", "cinepak": "Cinepak",
}  # fmt: skip
SUPPORTED = "MP4/MOV, WebM/Matroska or AVI with " + ", ".join(sorted(set(CODECS.values())))


def _sniff(head: bytes) -> str | None:
    """The container the first bytes announce (to tell "not a video" from "a broken video")."""
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "WebM/Matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "MP4/MOV"
    return None


@dataclass(frozen=True)
class VideoInfo:
    container: str  # MP4/MOV, WebM/Matroska, AVI
    codec: str  # FFmpeg decoder name, e.g. h264
    width: int
    height: int
    #: Seconds the headers declare (None: they do not say).
    duration_s: float | None
    fps: float | None
    #: Frames the headers declare (None: they do not say).
    frames: int | None
    bytes: int


@dataclass
class DecodeOutcome:
    """How a decode ended. ``partial``: the file broke part-way; the frames before the break
    were delivered, ``error`` says what broke and ``last_good_s`` where."""

    frames: int = 0
    corrupt_skipped: int = 0
    last_good_s: float | None = None
    partial: bool = False
    error: str = ""


@dataclass(slots=True)
class DecodedFrame:
    index: int
    t: float  # seconds from the start of the stream
    frame: Any  # av.VideoFrame (kept opaque: the sampler reads only its luma plane)


class VideoReader:
    """An opened video: ``info`` (checked against the limits), then :meth:`frames` once."""

    def __init__(self, path: Path, limits: VideoLimits, label: str = "video") -> None:
        self.path, self.limits, self.label = path, limits, label
        self.outcome = DecodeOutcome()
        self._container: Any = None
        self.info = self._open()

    # -- opening and header checks ----------------------------------------------------
    def _open(self) -> VideoInfo:
        import av

        label, limits = self.label, self.limits
        size = os.path.getsize(self.path)
        if size == 0:
            raise InvalidArgument(f"{label} is empty (0 bytes)")
        if size > limits.max_video_bytes:
            raise ResourceExhausted(f"{label} is {_mib(size)}, over the limit of {_mib(limits.max_video_bytes)}")
        with open(self.path, "rb") as fh:
            sniffed = _sniff(fh.read(16))
        try:
            # Own probing only (format_whitelist), no network or other files (protocol_whitelist).
            self._container = av.open(str(self.path), options={"format_whitelist": _WHITELIST, "protocol_whitelist": "file"})
        except av.FFmpegError as exc:
            if sniffed is None:
                raise InvalidArgument(f"{label} is not a video in a supported format ({SUPPORTED}): {_why(exc)}") from None
            raise InvalidArgument(f"{label} is a corrupt or truncated {sniffed} file: {_why(exc)}") from None
        container = self._container
        name = CONTAINERS.get(container.format.name)
        if name is None:  # the whitelist should make this unreachable; refuse rather than trust it
            self.close()
            raise InvalidArgument(f"{label}: container {container.format.name!r} is not supported ({SUPPORTED})")
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            self.close()
            raise InvalidArgument(f"{label} ({name}) has no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context else ""
        if codec not in CODECS:
            self.close()
            raise InvalidArgument(f"{label} ({name}): video codec {codec or 'unknown'!r} is not supported ({SUPPORTED})")
        width, height = stream.codec_context.width, stream.codec_context.height
        self._check_size(width, height, "declares frames of")
        fps = float(stream.average_rate) if stream.average_rate else None
        declared = [float(container.duration) / 1e6 if container.duration else 0.0]
        if stream.duration and stream.time_base:
            declared.append(float(stream.duration * stream.time_base))
        if stream.frames and fps:
            declared.append(stream.frames / fps)
        duration = max(declared) or None
        if duration is not None and duration > limits.max_video_duration_s:
            self.close()
            raise ResourceExhausted(f"{label} is {format_clock(duration)} long, over the limit of {format_clock(limits.max_video_duration_s)}")
        stream.thread_type = "AUTO"  # frame + slice threads: the decode is the ingest's main cost
        return VideoInfo(name, codec, width, height, duration, fps, int(stream.frames) or None, size)

    def _check_size(self, width: int, height: int, what: str) -> None:
        limits = self.limits
        if width < 0 or height < 0:
            raise InvalidArgument(f"{self.label} {what} an invalid size {width}x{height}")
        if max(width, height) > limits.max_video_side or width * height > limits.max_video_pixels:
            self.close()
            raise ResourceExhausted(
                f"{self.label} {what} {width}x{height} pixels, over the limit of {limits.max_video_side} per side and {limits.max_video_pixels:,} per frame"
            )

    # -- decoding ---------------------------------------------------------------------
    def frames(self) -> Iterator[DecodedFrame]:
        """Decoded frames in order, one at a time (nothing is held). A break after good frames
        ends the stream and marks ``outcome`` partial; a break before any frame, zero frames,
        or a limit passed mid-stream raises."""
        import av

        container, out, limits = self._container, self.outcome, self.limits
        stream = container.streams.video[0]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        # Per-frame work stays in plain floats and locals: Fraction arithmetic and settings
        # lookups per frame cost a visible share of a 1080p decode.
        max_t, max_frames = limits.max_video_duration_s, limits.max_video_frames
        max_side, max_pixels = limits.max_video_side, limits.max_video_pixels
        fps = self.info.fps or 25.0
        tb_cache: dict[Any, float] = {}
        decoding = container.decode(stream)
        while True:
            try:
                frame = next(decoding)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                if out.frames == 0:
                    raise InvalidArgument(f"{self.label} is corrupt or truncated: no frame could be decoded ({_why(exc)})") from None
                out.partial, out.error = True, f"decoding stopped at {format_clock(out.last_good_s or 0.0)}: {_why(exc)}"
                break
            if frame.is_corrupt:  # concealed damage: not a frame to label or train on
                out.corrupt_skipped += 1
                continue
            w, h = frame.width, frame.height
            if w > max_side or h > max_side or w * h > max_pixels:
                self._check_size(w, h, "has a frame of")
            pts, tb = frame.pts, frame.time_base
            if pts is not None and tb:
                tbf = tb_cache.get(tb)
                if tbf is None:
                    tbf = tb_cache[tb] = float(tb)
                t = max(0.0, pts * tbf - start)
            else:
                t = out.frames / fps
            if t > max_t:
                raise ResourceExhausted(f"{self.label} runs past the limit of {format_clock(max_t)} (its header did not say)")
            if out.frames >= max_frames:
                raise ResourceExhausted(f"{self.label} has more than {max_frames:,} frames")
            yield DecodedFrame(out.frames, t, frame)
            out.frames += 1
            out.last_good_s = t if out.last_good_s is None else max(out.last_good_s, t)
        if out.frames == 0:
            raise InvalidArgument(f"{self.label} ({self.info.container}, {self.info.codec}) has zero frames: nothing could be decoded")
        self._check_complete()

    def _check_complete(self) -> None:
        """A file cut at the end often decodes cleanly up to the cut (WebM, AVI): compare what
        was decoded with what the headers declare."""
        out, info = self.outcome, self.info
        if out.partial:
            return
        step = 1.0 / info.fps if info.fps else 0.04
        end = (out.last_good_s or 0.0) + step
        if info.duration_s:
            if info.duration_s - end > max(0.5, 3 * step, 0.02 * info.duration_s):
                out.partial = True
                out.error = f"the stream ends at {format_clock(end)} of the {format_clock(info.duration_s)} its header declares (truncated file)"
        # The frame count only without a duration: AVI counts dropped (empty) frames, so
        # opencv-doc's tree.avi declares 444 and decodes 68 spanning all its 29.6 s.
        elif info.frames and out.frames + out.corrupt_skipped < info.frames * 0.98 - 2:
            out.partial = True
            out.error = f"{out.frames} frames decoded of the {info.frames} its header declares (truncated file)"

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(path: str | Path, limits: VideoLimits, label: str = "video") -> VideoReader:
    """Open and check ``path`` (size, container, stream, codec, frame size, declared duration)."""
    return VideoReader(Path(path), limits, label)


def _why(exc: Exception) -> str:
    """FFmpeg's reason without the temporary file's path."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '")[0]


def _mib(n: int) -> str:
    return f"{n / 1024**2:,.1f} MiB"


def format_clock(seconds: float) -> str:
    """00:12.0 / 1:02:03.5"""
    minutes, s = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{s:04.1f}" if hours else f"{minutes:02d}:{s:04.1f}"
