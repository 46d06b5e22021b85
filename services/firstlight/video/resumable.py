"""Resumable video uploads (tus-like): the bytes of an upload are kept on disk under an id the
client chose, so a stream broken part-way (the network, the client, or this service killed)
resumes from the last byte held instead of from zero.

The file's size on disk *is* the offset: chunks are appended with unbuffered writes, so what a
SIGKILL leaves is exactly what reached the file, never a chunk the service thinks it has. One
stream writes an upload at a time (an exclusive ``flock``, released by the kernel when the
writer dies). Names on disk are built here from validated ids: ``<root>/<app>/<upload id>.part``
plus a ``.json`` sidecar holding the video id and declared size (checked on every resume)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from firstlight.domain import validation
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from firstlight.video.spool import MAX_CHUNK

UPLOAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{7,63}")
#: Uploads not written for this long are removed by :meth:`ResumableUploads.sweep`.
DEFAULT_TTL_S = 24 * 3600.0


def upload_id(value: str) -> str:
    if not UPLOAD_ID.fullmatch(value):
        raise InvalidArgument(f"upload_id {value[:80]!r}: need 8-64 characters [A-Za-z0-9_-], starting with a letter or digit")
    return value


@dataclass(frozen=True)
class UploadState:
    upload_id: str
    video_id: str
    bytes_held: int
    total_bytes: int


class ResumableUploads:
    def __init__(self, root: Path, max_bytes: int, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.root, self.max_bytes, self.ttl_s = root, max_bytes, ttl_s

    def _paths(self, app_id: str, uid: str) -> tuple[Path, Path]:
        folder = self.root / validation.app_id(app_id)
        base = folder / upload_id(uid)
        return base.with_suffix(".part"), base.with_suffix(".json")

    def status(self, app_id: str, uid: str) -> UploadState:
        part, meta = self._paths(app_id, uid)
        try:
            declared = json.loads(meta.read_text())
            held = part.stat().st_size
        except (FileNotFoundError, ValueError):
            raise NotFound(f"no upload {uid!r} in progress in app {app_id!r} (finished, refused, expired or never begun)") from None
        return UploadState(uid, declared["video_id"], held, declared["total_bytes"])

    def open(self, app_id: str, uid: str, vid: str, offset: int, total_bytes: int) -> UploadWriter:
        """The writer of upload ``uid`` positioned at ``offset``, which must be the bytes held
        (0 for a new upload). Refused: a bad size or offset, a resume naming another video or
        size, another stream writing it."""
        if total_bytes <= 0:
            raise InvalidArgument(f"upload {uid!r}: total_bytes is required for a resumable upload (got {total_bytes})")
        if total_bytes > self.max_bytes:
            raise ResourceExhausted(f"video of {total_bytes / 1024**2:,.1f} MiB is over the limit of {self.max_bytes / 1024**2:,.1f} MiB")
        if not 0 <= offset <= total_bytes:
            raise InvalidArgument(f"upload {uid!r}: offset {offset} is outside the file's 0..{total_bytes} bytes")
        part, meta = self._paths(app_id, uid)
        part.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FailedPrecondition(f"upload {uid!r} is being written by another stream; ask GetVideoUpload where to resume once it ends") from None
            held = os.fstat(fd).st_size
            declared = {"video_id": vid, "total_bytes": total_bytes}
            if meta.exists():
                before = json.loads(meta.read_text())
                if before != declared:
                    raise FailedPrecondition(
                        f"upload {uid!r} began as video {before['video_id']!r} of {before['total_bytes']} bytes; "
                        f"this resume says video {vid!r} of {total_bytes} bytes"
                    )
            elif held:  # bytes without a sidecar: a crash between the two writes; start over
                os.ftruncate(fd, 0)
                held = 0
            if offset != held:
                raise FailedPrecondition(f"upload {uid!r} holds {held} bytes; offset {offset} does not match: resume from offset {held}")
            if not meta.exists():
                tmp = meta.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(declared))
                os.replace(tmp, meta)
            return UploadWriter(fd, part, held, total_bytes, uid)
        except BaseException:
            os.close(fd)  # releases the lock
            raise

    def discard(self, app_id: str, uid: str) -> None:
        for path in self._paths(app_id, uid):
            path.unlink(missing_ok=True)

    def sweep(self, now: float | None = None) -> int:
        """Remove uploads not written for ``ttl_s``; returns how many."""
        now = time.time() if now is None else now
        removed = 0
        for part in self.root.glob("*/*.part"):
            try:
                if now - part.stat().st_mtime > self.ttl_s:
                    part.unlink(missing_ok=True)
                    part.with_suffix(".json").unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


class UploadWriter:
    """Appends one stream's chunks to an upload (the Spool interface: write, finish, close)."""

    def __init__(self, fd: int, path: Path, held: int, total: int, uid: str) -> None:
        self.fd, self.path, self.size, self.total, self.uid = fd, path, held, total, uid

    @property
    def complete(self) -> bool:
        return self.size == self.total

    def write(self, chunk: bytes) -> None:
        if len(chunk) > MAX_CHUNK:
            raise InvalidArgument(f"a chunk of {len(chunk):,} bytes: send at most {MAX_CHUNK:,} per message")
        if self.size + len(chunk) > self.total:
            raise InvalidArgument(f"upload {self.uid!r}: more bytes than the {self.total} its total_bytes declares")
        view = memoryview(chunk)
        while view:  # unbuffered: the file's size is always what was written
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n

    def finish(self) -> Path:
        return self.path

    def close(self) -> None:
        """Release the upload (its bytes stay for a resume)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
