"""Thumbnails made by ingestion from its one validating decode, stored once in the app's blob
folder and served as they are by the gateway (issue 16); inputs stored before get one made on
demand. The core runs over the real SQLite store and an in-memory blob store that records what
is read; the decode is counted."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.errors import InvalidArgument, NotFound
from firstlight.gateway.media import Media
from firstlight.ingestion import core as core_module
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.store import MetadataStore, make_engine
from firstlight.media.decode import decode_photo
from firstlight.media.preview import decode_preview
from firstlight.media.thumbnail import encode_thumbnail, shrink


class MemoryBlobs:
    """The BlobStore port in memory: ``mem://<app>/<name>``; records every read."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.reads: list[str] = []
        self.not_durable: set[str] = set()

    def put(self, app_id: str, input_id: str, data: bytes, durable: bool = True) -> str:
        uri = f"mem://{app_id}/{input_id}"
        self.data[uri] = data
        if not durable:
            self.not_durable.add(uri)
        return uri

    def get(self, uri: str, app_id: str = "") -> bytes:
        self.reads.append(uri)
        if app_id and not uri.startswith(f"mem://{app_id}/"):
            raise NotFound(f"blob {uri!r} does not belong to app {app_id!r}")
        if uri not in self.data:
            raise NotFound(f"blob {uri!r} does not exist")
        return self.data[uri]

    def delete(self, uri: str) -> None:
        self.data.pop(uri, None)


def photo_jpeg(size: tuple[int, int] = (1600, 1200), tag: int = 0) -> bytes:
    """A photo-like JPEG; with an EXIF orientation ``tag`` 6 it is stored sideways (portrait
    pixels shown landscape once turned upright)."""
    img = Image.open(io.BytesIO(datasets.sample_photo("coffee"))).convert("RGB").resize(size)
    exif = Image.Exif()
    if tag:
        exif[0x0112] = tag
        img = img.transpose(Image.Transpose.ROTATE_90)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def png(w: int = 300, h: int = 100) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Ingestion, MemoryBlobs, list[int]]:
    decodes: list[int] = []

    def counted(data: bytes, **kw):  # type: ignore[no-untyped-def]
        decodes.append(len(data))
        return decode_photo(data, **kw)

    monkeypatch.setattr(core_module, "decode_photo", counted)
    blobs = MemoryBlobs()
    ing = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}")), blobs, ImageLimits())
    ing.create_app("app")
    return ing, blobs, decodes


def jpeg_size(data: bytes) -> tuple[int, int]:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return img.size


def test_one_decode_makes_the_thumbnail_stored_once_and_recorded(parts) -> None:  # type: ignore[no-untyped-def]
    core, blobs, decodes = parts
    rows = core.post_inputs("app", [NewInput(photo_jpeg(tag=6), id="big"), NewInput(png(), id="small")])
    assert len(decodes) == 2  # one decode per input: validation, preview and thumbnail
    big, small = rows
    assert big.thumbnail_uri == "mem://app/.thumb-big" and small.thumbnail_uri == "mem://app/.thumb-small"
    assert sorted(blobs.data) == ["mem://app/.preview-big", "mem://app/.thumb-big", "mem://app/.thumb-small", "mem://app/big", "mem://app/small"]
    # Upright (EXIF 6 applied: 1200 x 1600 stored, 1600 x 1200 seen) at the gateway's 192 px.
    assert jpeg_size(blobs.data[big.thumbnail_uri]) == (192, 144)
    assert jpeg_size(blobs.data[small.thumbnail_uri]) == (192, 64)
    # Cut from the very pixels the model input is made from (the preview of the same decode).
    assert blobs.data[big.thumbnail_uri] == encode_thumbnail(decode_preview(blobs.data["mem://app/.preview-big"]), 192)
    # Recorded on the row: GetInput and listings return it.
    assert core.get_input("app", "big").thumbnail_uri == big.thumbnail_uri
    listed, _, _ = core.list_inputs("app")
    assert {r.id: r.thumbnail_uri for r in listed} == {"big": big.thumbnail_uri, "small": small.thumbnail_uri}
    assert blobs.reads == []  # nothing read back: the thumbnail came from the upload's decode


def test_thumbnail_size_follows_the_setting_and_small_images_are_not_enlarged(tmp_path: Path) -> None:
    blobs = MemoryBlobs()
    core = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'm.db'}")), blobs, ImageLimits(thumbnail_px=320))
    core.create_app("app")
    big, tiny = core.post_inputs("app", [NewInput(photo_jpeg((3200, 2400)), id="b"), NewInput(png(40, 30), id="t")])
    assert jpeg_size(blobs.data[big.thumbnail_uri]) == (320, 240)  # the reduced decode still covers it
    assert jpeg_size(blobs.data[tiny.thumbnail_uri]) == (40, 30)


def test_refused_upload_stores_no_thumbnail(parts) -> None:  # type: ignore[no-untyped-def]
    core, blobs, _ = parts
    with pytest.raises(Exception, match="input 1"):
        core.post_inputs("app", [NewInput(png(), id="ok"), NewInput(photo_jpeg()[:5000], id="cut")])
    assert blobs.data == {}


def test_thumbnail_is_deleted_with_its_input(parts) -> None:  # type: ignore[no-untyped-def]
    core, blobs, _ = parts
    core.post_inputs("app", [NewInput(photo_jpeg(), id="a"), NewInput(png(), id="b")])
    core.delete_inputs("app", ["a"])
    assert sorted(blobs.data) == ["mem://app/.thumb-b", "mem://app/b"]


def test_gateway_serves_the_stored_thumbnail_without_reading_the_original(parts) -> None:  # type: ignore[no-untyped-def]
    core, blobs, _ = parts
    [row] = core.post_inputs("app", [NewInput(photo_jpeg(), id="new")])
    media = Media(blobs, thumbnail_px=192)  # type: ignore[arg-type]
    assert media.thumbnail("app", row.blob_uri, row.sha256, row.thumbnail_uri) == blobs.data[row.thumbnail_uri]
    assert blobs.reads == [row.thumbnail_uri]  # never the original
    with pytest.raises(NotFound):  # app-scoped like the original
        media.thumbnail("other", row.blob_uri, row.sha256, row.thumbnail_uri)


def test_only_the_original_is_fsynced_and_a_lost_thumbnail_is_rebuilt(parts) -> None:  # type: ignore[no-untyped-def]
    core, blobs, _ = parts
    [row] = core.post_inputs("app", [NewInput(photo_jpeg(), id="new")])
    # The thumbnail and the preview can be made again from the original: not fsynced.
    assert blobs.not_durable == {row.thumbnail_uri, "mem://app/.preview-new"} and row.blob_uri not in blobs.not_durable
    stored = blobs.data[row.thumbnail_uri]
    blobs.data[row.thumbnail_uri] = b""  # what a power loss can leave of a file renamed unsynced
    media = Media(blobs, thumbnail_px=192)  # type: ignore[arg-type]
    rebuilt = media.thumbnail("app", row.blob_uri, row.sha256, row.thumbnail_uri)
    assert jpeg_size(rebuilt) == jpeg_size(stored) == (192, 144) and blobs.reads[-1] == row.blob_uri
    del blobs.data[row.thumbnail_uri]  # or no file at all
    assert jpeg_size(media.thumbnail("app", row.blob_uri, row.sha256, row.thumbnail_uri)) == (192, 144)
    with pytest.raises(InvalidArgument, match="unreadable"):  # the embedding worker then decodes the original
        decode_preview(b"")


def test_inputs_stored_before_thumbnails_get_one_on_demand(parts) -> None:  # type: ignore[no-untyped-def]
    _, blobs, _ = parts
    old_uri = blobs.put("app", "old", photo_jpeg(tag=6))  # an input from before: no thumbnail_uri
    media = Media(blobs, thumbnail_px=192)  # type: ignore[arg-type]
    made = media.thumbnail("app", old_uri, "abc", "")
    assert jpeg_size(made) == (192, 144) and blobs.reads == [old_uri]
    assert media.thumbnail("app", old_uri, "abc", "") == made and blobs.reads == [old_uri]  # cached


def test_clients_opaque_thumbnail_reference_resolves_only_inside_the_app(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    uri = store.put("app", ".thumb-x1", b"jpeg")
    assert store.get("blob:app/.thumb-x1", "app") == b"jpeg" == store.get(uri, "app")
    for bad in ("blob:app/.thumb-../x1", "blob:app/.preview-x1", "blob:app/.thumb-", "blob:../app/.thumb-x1"):
        with pytest.raises(NotFound):
            store.get(bad, "app")
    with pytest.raises(NotFound):
        store.get("blob:app/.thumb-x1", "other")


@pytest.mark.parametrize("size", [(504, 378), (378, 504), (1000, 90), (2400, 1800)])
def test_shrink_box_reduces_first_and_stays_close_to_lanczos_from_full_size(size: tuple[int, int]) -> None:
    """The whole-factor box reduction before Lanczos (issue 17: half the CPU) keeps the exact size
    and the look of a Lanczos resize from the full image (mean abs difference of a few levels)."""
    photo = Image.open(io.BytesIO(datasets.sample_photo(datasets.SAMPLE_PHOTOS[0]))).convert("RGB").resize(size, Image.Resampling.BICUBIC)
    px = 192
    scale = px / max(size)
    want = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    got = shrink(photo, px)
    assert got.size == want and got.mode == "RGB"
    reference = photo.resize(want, Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(got, np.int16) - np.asarray(reference, np.int16)).mean() < 4.0
