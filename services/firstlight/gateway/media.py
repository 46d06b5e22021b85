"""Image bytes for the gateway: originals and thumbnails, read from the blob store.

The gateway reads a blob only after the ingestion service has answered GetInput for the
caller's key (so app scoping is the services' own), and only inside that app's folder.

Thumbnails: ingestion stores one per input, cut from the decode that validated it
(firstlight.media.thumbnail; ``Input.thumbnail_uri``), and the gateway serves those bytes as
they are, never reading the original. Inputs stored before that have no thumbnail_uri: for them
(and only them) one is made on the first request from the original (one decode, Pillow's JPEG
draft mode for large photos), the same encoding, and kept in a bounded in-memory LRU keyed by
the input's content hash, so older inputs stay viewable. Browsers cache both (ETag)."""

from __future__ import annotations

from firstlight.blobstore import BlobStore
from firstlight.domain.lru import Lru
from firstlight.errors import NotFound
from firstlight.media.decode import to_rgb, upright
from firstlight.media.formats import open_image
from firstlight.media.thumbnail import encode_thumbnail

CONTENT_TYPES = {
    "JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff",
    "HEIF": "image/heif", "AVIF": "image/avif",
}  # fmt: skip


#: Formats most browsers do not show in an <img> (HEIC: Safari only). The Portal asks for a
#: JPEG of these (``view=browser``); AVIF, WebP and the rest are shown as uploaded.
NOT_IN_BROWSERS = {"HEIF"}

#: Longest side of that JPEG: sharp on a labeling stage, ~0.5 MB instead of a 12 MP decode.
BROWSER_PX = 2048


def content_type(fmt: str) -> str:
    return CONTENT_TYPES.get(fmt.upper(), "application/octet-stream")


def make_thumbnail(data: bytes, px: int) -> bytes:
    """A JPEG whose longest side is at most ``px`` (small images are not enlarged)."""
    img = open_image(data)  # HEIC too (pillow-heif registered there)
    if img.format == "JPEG":
        img.draft("RGB", (px, px))  # decode at 1/2, 1/4 or 1/8 scale: most of a photo's cost
    # Upright and sRGB, as the models see it (firstlight.media.decode): a phone photo stored
    # sideways is shown, labeled and embedded the same way up.
    return encode_thumbnail(to_rgb(upright(img)), px)


class Media:
    def __init__(self, blobs: BlobStore, thumbnail_px: int = 192, cache_entries: int = 4096) -> None:
        self.blobs = blobs
        self.px = thumbnail_px
        self._thumbnails: Lru[tuple[str, str], bytes] = Lru(cache_entries)
        self._browser: Lru[tuple[str, str], bytes] = Lru(16)  # a few, they are large

    def original(self, app_id: str, blob_uri: str) -> bytes:
        return self.blobs.get(blob_uri, app_id)

    def for_browser(self, app_id: str, blob_uri: str, sha256: str, fmt: str) -> tuple[bytes, str]:
        """(bytes, content type) a browser can show: the original, or for a format browsers do
        not decode an upright JPEG of it at most BROWSER_PX (made once, kept in a small LRU)."""
        if fmt.upper() not in NOT_IN_BROWSERS:
            return self.original(app_id, blob_uri), content_type(fmt)
        key = (app_id, sha256 or blob_uri)
        jpeg = self._browser.get(key)
        if jpeg is None:
            jpeg = make_thumbnail(self.blobs.get(blob_uri, app_id), BROWSER_PX)
            self._browser.put(key, jpeg)
        return jpeg, "image/jpeg"

    def thumbnail(self, app_id: str, blob_uri: str, sha256: str, thumbnail_uri: str = "") -> bytes:
        """The stored thumbnail when ingestion made one; else (inputs stored before, or a stored
        one lost: it is written without fsync) one made now from the original."""
        if thumbnail_uri:
            try:
                stored = self.blobs.get(thumbnail_uri, app_id)
            except NotFound:
                stored = b""
            if stored:
                return stored
        key = (app_id, sha256 or blob_uri)
        thumb = self._thumbnails.get(key)
        if thumb is None:
            thumb = make_thumbnail(self.blobs.get(blob_uri, app_id), self.px)
            self._thumbnails.put(key, thumb)
        return thumb
