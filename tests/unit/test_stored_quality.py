"""Image-quality metrics measured by ingestion on its one validating decode, stored with the
input (inputs.quality) and filterable in listings (issue 19); inputs stored before have none.
The core runs over the real SQLite store; the decode is counted."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.config import ImageLimits
from firstlight.errors import InvalidArgument
from firstlight.ingestion import core as core_module
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.ports import QualityRange
from firstlight.ingestion.servicer import quality_range_of, quality_to_proto
from firstlight.ingestion.store import MetadataStore, inputs, make_engine
from firstlight.media.decode import decode_photo
from firstlight.media.image_metrics import METRICS, ImageQuality, flag_issues, image_quality
from firstlight.v1 import ingestion_pb2


class MemoryBlobs:
    """The BlobStore port in memory (puts only matter here)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def put(self, app_id: str, name: str, data: bytes, durable: bool = True) -> str:
        self.data[f"mem://{app_id}/{name}"] = data
        return f"mem://{app_id}/{name}"

    def get(self, uri: str, app_id: str = "") -> bytes:
        return self.data[uri]

    def delete(self, uri: str) -> None:
        self.data.pop(uri, None)


def photo_jpeg() -> bytes:
    """A 1200 x 1600 JPEG tagged EXIF orientation 6 (1600 x 1200 once upright)."""
    img = Image.open(io.BytesIO(datasets.sample_photo("coffee"))).convert("RGB").resize((1200, 1600))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def encoded(a: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt)
    return buf.getvalue()


def textured(seed: int = 0, h: int = 120, w: int = 160) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Ingestion, list[int]]:
    decodes: list[int] = []

    def counted(data: bytes, **kw):  # type: ignore[no-untyped-def]
        decodes.append(len(data))
        return decode_photo(data, **kw)

    monkeypatch.setattr(core_module, "decode_photo", counted)
    ing = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'meta.db'}")), MemoryBlobs(), ImageLimits())
    ing.create_app("app")
    return ing, decodes


def test_metrics_come_from_the_one_decode_and_are_stored(parts) -> None:  # type: ignore[no-untyped-def]
    core, decodes = parts
    noisy, blank = textured(), np.full((90, 120, 3), 200, np.uint8)
    core.post_inputs("app", [NewInput(encoded(noisy), id="noisy"), NewInput(encoded(blank), id="blank"), NewInput(photo_jpeg(), id="photo")])
    assert len(decodes) == 3  # validation, thumbnail and metrics share each decode
    got = {r.id: r.quality for r in core.list_inputs("app")[0]}
    assert got["noisy"] == pytest.approx(image_quality(noisy).to_dict())  # a PNG decodes in full: the same pixels
    assert set(got["photo"]) == set(METRICS)
    # Resolution and aspect are the upright source's (1600 x 1200 after EXIF 6), not the reduced decode's.
    assert (got["photo"]["width"], got["photo"]["height"]) == (1600, 1200)
    assert got["photo"]["aspect_ratio"] == pytest.approx(4 / 3)
    assert flag_issues([ImageQuality.from_dict(got["blank"])]) == [["blank"]]
    assert core.get_input("app", "blank").quality == got["blank"]


def test_listing_filters_on_one_metric_range(parts) -> None:  # type: ignore[no-untyped-def]
    core, _ = parts
    dark = (textured(1) // 8).astype(np.uint8)  # mean luma ~ 16/255
    core.post_inputs("app", [NewInput(encoded(textured(2)), id="lit"), NewInput(encoded(dark), id="dark")])

    def ids(q: QualityRange) -> list[str]:
        rows, _, total = core.list_inputs("app", quality_range=q)
        assert total == len(rows)
        return sorted(r.id for r in rows)

    assert ids(QualityRange("brightness", max=0.2)) == ["dark"]
    assert ids(QualityRange("brightness", min=0.2)) == ["lit"]
    assert ids(QualityRange("brightness", min=0.0, max=1.0)) == ["dark", "lit"]
    assert ids(QualityRange("grayscale", min=1)) == []


def test_old_inputs_without_metrics_list_and_never_match_a_quality_filter(parts) -> None:  # type: ignore[no-untyped-def]
    core, _ = parts
    core.post_inputs("app", [NewInput(encoded(textured(3)), id="new"), NewInput(encoded(textured(4)), id="old")])
    with core.store.engine.begin() as conn:  # as stored before migration 0007
        conn.execute(inputs.update().where(inputs.c.id == "old").values(quality=None))
    assert core.get_input("app", "old").quality is None
    assert sorted(r.id for r in core.list_inputs("app")[0]) == ["new", "old"]
    assert [r.id for r in core.list_inputs("app", quality_range=QualityRange("blur", min=0))[0]] == ["new"]


@pytest.mark.parametrize(
    ("q", "message"),
    [
        (QualityRange("sharpness", min=1), "unknown quality metric"),
        (QualityRange("blur\n", min=1), "unknown quality metric"),
        (QualityRange("blur"), "neither a minimum nor a maximum"),
        (QualityRange("blur", min=float("nan")), "finite"),
        (QualityRange("blur", min=2, max=1), "above maximum"),
    ],
)
def test_bad_quality_filters_are_refused_by_name(parts, q: QualityRange, message: str) -> None:  # type: ignore[no-untyped-def]
    core, _ = parts
    with pytest.raises(InvalidArgument, match=message):
        core.list_inputs("app", quality_range=q)


def test_proto_mapping_of_metrics_and_filter() -> None:
    q = image_quality(textured(5)).to_dict()
    msg = quality_to_proto(q)
    assert msg is not None and msg.blur == pytest.approx(q["blur"]) and msg.grayscale is False
    assert quality_to_proto(None) is None
    assert quality_range_of(ingestion_pb2.ListInputsRequest(app_id="a")) is None
    req = ingestion_pb2.ListInputsRequest(app_id="a", quality={"metric": "noise", "max": 0.0})
    assert quality_range_of(req) == QualityRange("noise", None, 0.0)  # 0.0 is a bound, not "unset"


def test_curation_reads_back_exactly_what_ingestion_stored() -> None:
    from firstlight.curation.peers import quality_of

    q = image_quality(textured(6), (1600, 1200)).to_dict()
    assert quality_of(quality_to_proto(q)) == pytest.approx(q)  # type: ignore[arg-type]
    assert ImageQuality.from_dict(quality_of(quality_to_proto(q))) == ImageQuality.from_dict(q)  # type: ignore[arg-type]


def test_histogram_of_one_metric_counts_measured_inputs_and_names_the_rest(parts) -> None:  # type: ignore[no-untyped-def]
    core, _ = parts
    dark = (textured(7) // 8).astype(np.uint8)
    core.post_inputs("app", [NewInput(encoded(textured(i)), id=f"lit{i}") for i in range(3)] + [NewInput(encoded(dark), id="dark")])
    with core.store.engine.begin() as conn:
        conn.execute(inputs.update().where(inputs.c.id == "lit0").values(quality=None))
    edges, counts, unmeasured = core.quality_histogram("app", "brightness", 4)
    assert len(edges) == 5 and counts[0] == 1 and sum(counts) == 3 and unmeasured == 1  # the dark one at the bottom
    assert core.quality_histogram("app", "blur")[1].__len__() == 20  # default bins
    with pytest.raises(InvalidArgument, match="unknown quality metric"):
        core.quality_histogram("app", "sharpness")
    with pytest.raises(InvalidArgument, match="bins"):
        core.quality_histogram("app", "blur", 1000)


def test_the_duplicate_signatures_come_from_the_one_decode_and_list_only_when_asked(parts) -> None:  # type: ignore[no-untyped-def]
    """inputs.pixel_signature (migration 0008): packed from the validating decode, read back by
    ListInputs only with with_pixel_signature (curation's health check); None for older inputs."""
    import asyncio

    from firstlight.ingestion.servicer import IngestionServicer
    from firstlight.media import pixel_signature

    core, decodes = parts
    a = textured(5)
    core.post_inputs("app", [NewInput(encoded(a), id="new"), NewInput(encoded(textured(6)), id="old")])
    assert len(decodes) == 2
    assert core.get_input("app", "new").pixel_signature == pixel_signature.pack(a)  # a PNG decodes in full: the same pixels
    with core.store.engine.begin() as conn:  # as stored before migration 0008
        conn.execute(inputs.update().where(inputs.c.id == "old").values(pixel_signature=None))
    servicer = IngestionServicer(core)

    def listed(**kw: object) -> dict[str, bytes]:
        resp = asyncio.run(servicer.ListInputs(ingestion_pb2.ListInputsRequest(app_id="app", **kw), None))  # type: ignore[arg-type]
        return {i.id: i.pixel_signature for i in resp.inputs}

    assert listed() == {"new": b"", "old": b""}  # not in ordinary listings (about 1.2 KB each)
    assert listed(with_pixel_signature=True) == {"new": pixel_signature.pack(a), "old": b""}
