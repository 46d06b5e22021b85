"""Test and benchmark clips made from the bundled photos with PyAV (encode, then decode with the
same library): CI needs no downloaded video. A clip is a sequence of "shots", each a slow pan
across one photo, so consecutive frames differ a little and each cut is a scene change."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: (container format, codec, pixel format, file suffix) per kind of clip the tests make.
KINDS: dict[str, tuple[str, str, str, str]] = {
    "mp4-h264": ("mp4", "libx264", "yuv420p", ".mp4"),
    "mov-h264": ("mov", "libx264", "yuv420p", ".mov"),
    "webm-vp9": ("webm", "libvpx-vp9", "yuv420p", ".webm"),
    "avi-mjpeg": ("avi", "mjpeg", "yuvj420p", ".avi"),
    "avi-mpeg4": ("avi", "mpeg4", "yuv420p", ".avi"),
    "mkv-h264": ("matroska", "libx264", "yuv420p", ".mkv"),
}


@dataclass(frozen=True)
class Shot:
    photo: np.ndarray  # HxWx3 uint8
    seconds: float
    static: bool = False  # a still shot: every frame identical (near-duplicate dropping)


def photo_arrays() -> list[np.ndarray]:
    """The bundled scikit-image photos (RGB), no download."""
    from skimage import data

    out = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        a = getattr(data, name)()
        out.append(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])
    return out


def _fit(photo: np.ndarray, width: int, height: int) -> np.ndarray:
    """The photo resized to cover (width*1.25, height) so a pan has room to move."""
    from PIL import Image

    h, w = photo.shape[:2]
    scale = max(width * 1.25 / w, height / h)
    img = Image.fromarray(photo).resize((max(int(w * scale + 0.5), int(width * 1.25)), max(int(h * scale + 0.5), height)))
    return np.asarray(img)


def frames(shots: Sequence[Shot], width: int, height: int, fps: int) -> Iterator[np.ndarray]:
    for shot in shots:
        big = _fit(shot.photo, width, height)
        n = max(1, round(shot.seconds * fps))
        room = big.shape[1] - width
        for i in range(n):
            x = 0 if shot.static else int(room * i / max(1, n - 1))
            yield np.ascontiguousarray(big[:height, x : x + width])


def default_shots(seconds_per_shot: float = 2.0, static_last: bool = False) -> list[Shot]:
    photos = photo_arrays()
    shots = [Shot(p, seconds_per_shot) for p in photos]
    if static_last:
        shots[-1] = Shot(photos[-1], seconds_per_shot, static=True)
    return shots


def encode(
    path: Path,
    shots: Sequence[Shot],
    *,
    kind: str = "mp4-h264",
    width: int = 320,
    height: int = 240,
    fps: int = 10,
    faststart: bool = True,
    audio_only: bool = False,
) -> None:
    """Encode ``shots`` as a clip of ``kind`` (see KINDS). ``faststart`` puts an MP4's index
    first, as streaming uploads have it (then a file cut at the end keeps its first frames)."""
    import av

    fmt, codec, pix_fmt, _ = KINDS[kind]
    options = {"movflags": "faststart"} if fmt in ("mp4", "mov") and faststart else {}
    with av.open(str(path), "w", format=fmt, options=options) as out:
        if audio_only:
            _audio_only(out)
            return
        stream: Any = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "23"}
        elif codec == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "35", "b": "0"}
        for array in frames(shots, width, height, fps):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _audio_only(out) -> None:  # type: ignore[no-untyped-def]
    """One second of a 440 Hz tone and no video stream."""
    import av

    stream = out.add_stream("aac", rate=16000)
    t = np.arange(16000) / 16000
    samples = (np.sin(2 * np.pi * 440 * t) * 0.3).astype(np.float32)[None, :]
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate = 16000
    for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def clip_bytes(shots: Sequence[Shot] | None = None, **kw) -> bytes:  # type: ignore[no-untyped-def]
    """The clip's bytes (through a temporary file: MP4's faststart rewrites the file by name)."""
    import tempfile

    suffix = KINDS[kw.get("kind", "mp4-h264")][3]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"clip{suffix}"
        encode(path, shots if shots is not None else default_shots(), **kw)
        return path.read_bytes()
