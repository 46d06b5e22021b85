"""Blob store for original image bytes. Events carry a URI, never the bytes.

``file:///dir`` is the embedded default (and works on a shared volume in a cluster). The
interface is small on purpose so an S3-compatible twin can sit beside it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from firstlight.domain import validation
from firstlight.errors import InvalidArgument, NotFound

#: Prefix of an input's thumbnail blob (firstlight.media.thumbnail.thumbnail_name).
THUMB_PREFIX = ".thumb-"


class BlobStore(Protocol):
    #: ``durable=False``: a blob that can be rebuilt from the original (thumbnail, preview) is
    #: written atomically but not fsynced; after a power loss it may read back empty.
    def put(self, app_id: str, input_id: str, data: bytes, durable: bool = True) -> str: ...
    def get(self, uri: str, app_id: str = "") -> bytes: ...
    #: The first ``size`` bytes (all of a shorter blob): an image's header without its pixels.
    def head(self, uri: str, size: int, app_id: str = "") -> bytes: ...
    def delete(self, uri: str) -> None: ...
    # Videos (firstlight.video): originals and their summaries, apart from the inputs' blobs.
    def put_video(self, app_id: str, video_id: str, src: Path) -> str: ...
    def delete_video(self, app_id: str, video_id: str) -> None: ...
    def put_video_summary(self, app_id: str, video_id: str, data: bytes) -> None: ...
    def get_video_summary(self, app_id: str, video_id: str) -> bytes: ...


class LocalBlobStore:
    """Files under a root directory, written atomically (tmp + fsync + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, uri: str) -> Path:
        if uri.startswith("blob:"):  # the opaque reference clients are shown: blob:<app>/<input id>
            app_id, _, name = uri[len("blob:") :].partition("/")  # or blob:<app>/.thumb-<input id>
            try:
                validation.app_id(app_id)
                validation.input_id(name.removeprefix(THUMB_PREFIX))
            except InvalidArgument:
                raise NotFound(f"blob {uri[:120]!r} is not in this store") from None
            return self.root / app_id / name
        parsed = urlparse(uri)
        path = Path(parsed.path).resolve()
        if parsed.scheme != "file" or self.root not in path.parents:
            raise NotFound(f"blob {uri!r} is not in this store")
        return path

    def put(self, app_id: str, input_id: str, data: bytes, durable: bool = True) -> str:
        directory = self.root / app_id
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / input_id
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if durable:  # ~1 ms of system CPU and ~3-13 ms of wall time per file on photos
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.as_uri()

    def get(self, uri: str, app_id: str = "") -> bytes:
        """The bytes at ``uri``; with ``app_id``, NotFound unless the blob is that app's (an
        event naming app A cannot make a consumer read app B's image)."""
        path = self._owned(uri, app_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {uri!r} does not exist") from None

    def head(self, uri: str, size: int, app_id: str = "") -> bytes:
        """The first ``size`` bytes at ``uri`` (checked as :meth:`get` checks)."""
        path = self._owned(uri, app_id)
        try:
            with path.open("rb") as fh:
                return fh.read(size)
        except FileNotFoundError:
            raise NotFound(f"blob {uri!r} does not exist") from None

    def _owned(self, uri: str, app_id: str) -> Path:
        path = self._path(uri)
        if app_id and path.parent != self.root / app_id:
            raise NotFound(f"blob {uri!r} does not belong to app {app_id!r}")
        return path

    def delete(self, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)

    # -- videos: originals and their summaries, beside the app's inputs -------------------
    def _video_path(self, app_id: str, video_id: str, suffix: str) -> Path:
        # "_videos" cannot be an app id (they start with a letter or digit): no collision.
        validation.app_id(app_id)
        directory = self.root / "_videos" / app_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{video_id}{suffix}"

    def put_video(self, app_id: str, video_id: str, src: Path) -> str:
        """Copy the uploaded file in (tmp + fsync + rename: a crash leaves no half original)."""
        import shutil

        path = self._video_path(app_id, video_id, ".video")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.as_uri()

    def delete_video(self, app_id: str, video_id: str) -> None:
        self._video_path(app_id, video_id, ".video").unlink(missing_ok=True)

    def put_video_summary(self, app_id: str, video_id: str, data: bytes) -> None:
        path = self._video_path(app_id, video_id, ".json")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get_video_summary(self, app_id: str, video_id: str) -> bytes:
        try:
            return self._video_path(app_id, video_id, ".json").read_bytes()
        except FileNotFoundError:
            raise NotFound(f"video {video_id!r} does not exist in app {app_id!r}") from None


def open_blob_store(url: str) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(parsed.path))
    raise ValueError(f"unsupported blob store URL {url!r}: use file:///absolute/dir")
