"""Curation.health_check over a fake platform: rows, vectors and blobs in, ids out."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from firstlight.curation.core import Curation
from firstlight.curation.ports import ModelInfo, Row, Scores, StoredImageFacts, VersionInfo
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


class FakePlatform:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.vec: dict[str, np.ndarray] = {}
        self.blob: dict[str, bytes] = {}
        self.rows = []
        for i in range(40):
            img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            self.blob[f"i{i}"] = _png(img)
            self.vec[f"i{i}"] = rng.normal(size=16).astype(np.float32)
            self.rows.append((f"i{i}", [f"c{i % 2}"], 1 if i < 30 else 3))
        self.blob["dup"] = self.blob["i3"]
        self.vec["dup"] = self.vec["i3"]
        self.rows.append(("dup", ["c1"], 3))
        self.blob["blank"] = _png(np.zeros((32, 32, 3), np.uint8))
        self.vec["blank"] = rng.normal(size=16).astype(np.float32)
        self.rows.append(("blank", ["c0"], 1))
        self.blob["bad"] = b"not an image"
        self.vec["bad"] = rng.normal(size=16).astype(np.float32)
        self.rows.append(("bad", ["c0"], 1))

    def inputs(self, app_id, *, labeled, split=0):  # type: ignore[no-untyped-def]
        return list(self.rows)

    def vectors(self, app_id, input_ids):  # type: ignore[no-untyped-def]
        return {i: self.vec[i] for i in input_ids if i in self.vec}

    def blobs_of(self, app_id, input_ids):  # type: ignore[no-untyped-def]
        return {i: self.blob[i] for i in input_ids}

    def stored_image_facts(self, app_id, input_ids):  # type: ignore[no-untyped-def]
        """As ingestion stored them: metrics for the ids in ``quality``, signatures for those in ``signature``."""
        quality, signature = getattr(self, "quality", {}), getattr(self, "signature", {})
        return {i: StoredImageFacts(hashlib.sha256(self.blob[i]).hexdigest(), quality.get(i), signature.get(i, b"")) for i in input_ids if i in self.blob}

    def metadata_values(self, app_id, key):  # type: ignore[no-untyped-def]
        return {"i3": "clip-1", "dup": "clip-1"} if key == "video_id" else {}

    def metadata_of(self, app_id, input_ids):  # type: ignore[no-untyped-def]
        meta = getattr(self, "meta", {})
        return {i: meta.get(i, {}) for i in input_ids}

    def labels_of(self, app_id, input_ids):  # type: ignore[no-untyped-def]
        concepts = {i: c for i, c, _ in self.rows}
        return {i: concepts[i] for i in input_ids if i in concepts}

    def delete_inputs(self, app_id, input_ids):  # type: ignore[no-untyped-def]
        self.deleted = [*getattr(self, "deleted", []), *input_ids]
        self.rows = [r for r in self.rows if r[0] not in set(input_ids)]
        return len(input_ids)


def test_health_check_maps_rows_to_ids_and_reads_pixels_once(tmp_path):
    platform = FakePlatform()
    cur = Curation(platform, training=None)  # type: ignore[arg-type]
    r = cur.health_check("app", images=True)
    checks = {name: (status, count, ids) for name, status, _, count, ids in r["checks"]}
    assert r["examined"] == 43
    assert (["i3", "dup"], "i3", "exact", 1.0) in [(sorted(m, key=lambda x: x != "i3"), k, kind, s) for m, k, kind, s in r["duplicate_groups"]]
    assert checks["leaks"][0] == "fail" and checks["leaks"][2] == ["dup"]
    assert set(checks["corrupt_or_blank"][2]) == {"blank", "bad"}
    assert any(i == "blank" and "blank" in issues for i, _, issues in r["flagged_images"])
    platform.blob = {}  # cached: a second check reads no blobs
    assert cur.health_check("app", images=True)["examined"] == 43
    with pytest.raises(InvalidArgument):
        cur.health_check("app", threshold=0.1)
    # as two frames of one video, i3 and dup are not duplicates, but the video spans two splits: a leak
    g = cur.health_check("app", images=True, group_key="video_id")
    assert g["duplicate_groups"] == []
    leaks = {name: ids for name, _, _, _, ids in g["checks"]}["leaks"]
    assert leaks == ["dup"]


def test_duplicate_groups_of_given_inputs_by_the_health_checks_detector() -> None:
    platform = FakePlatform()
    platform.vec["flip"] = platform.vec["i5"] * 1.001  # a mirrored copy, near by the embedding alone
    platform.blob["flip"] = _png(np.asarray(Image.open(io.BytesIO(platform.blob["i5"])))[:, ::-1].copy())
    cur = Curation(platform, training=None)  # type: ignore[arg-type]
    ids = [f"i{i}" for i in range(40)] + ["dup", "flip", "not-indexed"]
    r = cur.duplicate_groups("app", ids)
    assert r["examined"] == 42 and sorted(sorted(m) for m, *_ in r["groups"]) == [["dup", "i3"], ["flip", "i5"]]
    with_pixels = {frozenset(m): kind for m, _, kind, _ in cur.duplicate_groups("app", ids, images=True)["groups"]}
    assert with_pixels == {frozenset({"i3", "dup"}): "exact", frozenset({"i5", "flip"}): "near"}
    assert cur.duplicate_groups("app", ["i3", "i4"])["groups"] == []  # only among the inputs given
    assert cur.duplicate_groups("app", ["i3"]) == {"groups": [], "examined": 1}
    with pytest.raises(InvalidArgument, match="near_duplicate_threshold"):
        cur.duplicate_groups("app", ids, threshold=0.2)
    with pytest.raises(InvalidArgument, match="1 to 20000"):
        cur.duplicate_groups("app", [])
    with pytest.raises(InvalidArgument, match="input id"):
        cur.duplicate_groups("app", ["bad id!"])


def test_health_check_uses_the_metrics_ingestion_stored_and_measures_only_older_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    from firstlight.media import image_metrics

    platform = FakePlatform()
    # i5 as ingestion stored it: blank by its metrics (its pixels are not); the others stored before
    platform.quality = {"i5": image_metrics.image_quality(np.zeros((32, 32, 3), np.uint8)).to_dict()}
    measured: list[int] = []
    real = image_metrics.image_quality
    monkeypatch.setattr(image_metrics, "image_quality", lambda rgb, size=None: measured.append(1) or real(rgb, size))
    r = Curation(platform, training=None).health_check("app", images=True)  # type: ignore[arg-type]
    assert len(measured) == 41  # 43 examined, less i5 (stored) and "bad" (does not decode)
    assert "i5" in {name: ids for name, _, _, _, ids in r["checks"]}["corrupt_or_blank"]


def test_health_check_reads_the_signatures_ingestion_stored_instead_of_decoding() -> None:
    """Inputs stored with metrics and pixel signatures are not fetched nor decoded, and the report
    is the one the decoding path gives; "bad" (no stored facts: an old input) is still read."""
    from firstlight.media import image_metrics, pixel_signature

    decoded = FakePlatform()
    expected = Curation(decoded, training=None).health_check("app", images=True)  # type: ignore[arg-type]
    platform = FakePlatform()
    rgb = {i: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for i, b in platform.blob.items() if i != "bad"}
    platform.quality = {i: image_metrics.image_quality(a).to_dict() for i, a in rgb.items()}
    platform.signature = {i: pixel_signature.pack(a) for i, a in rgb.items()}
    reads: list[str] = []
    blobs = platform.blob
    platform.blobs_of = lambda app_id, ids: reads.extend(ids) or {i: blobs[i] for i in ids}  # type: ignore[method-assign]
    got = Curation(platform, training=None).health_check("app", images=True)  # type: ignore[arg-type]
    assert reads == ["bad"]
    assert got["checks"] == expected["checks"] and got["duplicate_groups"] == expected["duplicate_groups"]
    assert got["flagged_images"] == expected["flagged_images"]


def test_a_signature_of_another_version_or_length_falls_back_to_decoding() -> None:
    from firstlight.media import pixel_signature

    a = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    packed = pixel_signature.pack(a)
    thumb, canvas = pixel_signature.unpack(packed) or (None, None)
    assert len(packed) == pixel_signature.PACKED_BYTES == 1169
    assert np.array_equal(thumb, pixel_signature.thumbnail(a)) and np.array_equal(canvas, pixel_signature.canvas(a))
    assert pixel_signature.unpack(b"\x02" + packed[1:]) is None and pixel_signature.unpack(packed[:-1]) is None


class FakeTraining:
    """The Training port with one version and a linear head scoring the stored vectors."""

    def __init__(self, rows, vectors, W):  # type: ignore[no-untyped-def]
        self.rows, self.vectors, self.W = rows, vectors, W

    def model(self, app_id, model_id):  # type: ignore[no-untyped-def]
        return ModelInfo(app_id, model_id, "transfer_classifier", ["a", "b", "c"], "1")

    def version(self, app_id, model_id, version):  # type: ignore[no-untyped-def]
        return VersionInfo("1", "main", "v1")

    def dataset_rows(self, app_id, dataset_id, version):  # type: ignore[no-untyped-def]
        return self.rows

    def scores(self, app_id, model_id, version, input_ids):  # type: ignore[no-untyped-def]
        z = np.stack([self.vectors[i] for i in input_ids]) @ self.W.T
        p = np.exp(z - z.max(1, keepdims=True))
        return Scores("1", ["a", "b", "c"], list(input_ids), p / p.sum(1, keepdims=True))


def test_worst_slices_of_a_version_find_the_weak_concept(tmp_path):
    rng = np.random.default_rng(0)
    concepts = ["a", "b", "c"]
    centres = np.eye(3, 16) * 3
    platform = FakePlatform()
    platform.vec, rows = {}, []
    for k in range(300):
        c = k % 3
        # concept "c" overlaps "b": the head confuses them
        v = centres[c] + rng.normal(size=16) * (2.0 if c == 2 else 0.5)
        platform.vec[f"v{k}"] = v.astype(np.float32)
        rows.append(Row(f"v{k}", [concepts[c]], 2))
    cur = Curation(platform, FakeTraining(rows, platform.vec, centres.astype(np.float32)))
    r = cur.worst_slices("app", "m", "", "validation", min_size=20)
    first = r["slices"][0][0]
    assert r["count"] == 300 and (first.field, first.value) == ("concept", "c") and first.confident_gap > 0
    assert r["rank_by"] == "brier" and first.rank_gap > 0 and first.figures["brier"].low > r["overall"]["brier"]
    assert all(s.n >= 20 for s, _, _ in r["slices"])
    for rank_by in ("accuracy", "f1"):
        r = cur.worst_slices("app", "m", "", "validation", min_size=20, rank_by=rank_by)
        assert r["rank_by"] == rank_by and r["slices"][0][0].value == "c"
    with pytest.raises(InvalidArgument):
        cur.worst_slices("app", "m", "", "holdout")
    for bad in ("log_loss", "Brier", "brier "):  # only what the API offers, matched exactly
        with pytest.raises(InvalidArgument, match="rank_by must be one of brier, accuracy, f1"):
            cur.worst_slices("app", "m", "", "validation", rank_by=bad)


def test_keep_one_deletes_only_checked_duplicates_whose_labels_the_kept_one_has():
    platform = FakePlatform()
    # i5's copy, unlabeled, and a re-encode-like near copy of i7 (embedding nudged, same pixels)
    platform.blob["copy5"], platform.vec["copy5"] = platform.blob["i5"], platform.vec["i5"]
    platform.rows.append(("copy5", [], 1))
    platform.blob["near7"], platform.vec["near7"] = platform.blob["i7"], platform.vec["i7"] + 0.01
    platform.rows.append(("near7", ["c1"], 2))
    cur = Curation(platform, training=None)  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition, match=r"not duplicates.*i4"):
        cur.keep_one("app", "i3", ["dup", "i4"])  # i4 is another image: nothing deleted
    with pytest.raises(FailedPrecondition, match=r"lacks labels.*i5 has c1"):
        cur.keep_one("app", "copy5", ["i5"])  # the unlabeled copy would lose i5's label
    assert not getattr(platform, "deleted", [])
    with pytest.raises(NotFound):
        cur.keep_one("app", "i3", ["nope"])
    with pytest.raises(InvalidArgument):
        cur.keep_one("app", "i3", ["i3"])
    with pytest.raises(InvalidArgument):
        cur.keep_one("app", "i3", [])
    assert cur.keep_one("app", "i3", ["dup"]) == {"kept": "i3", "deleted": ["dup"], "kind": "exact", "similarity": 1.0}
    r = cur.keep_one("app", "i5", ["copy5"])
    assert r["deleted"] == ["copy5"] and r["kind"] == "exact"
    platform.blob = {}  # no pixels now: the embeddings alone (cosine ~1) decide
    cur._pixels.clear()
    platform.blobs_of = lambda app_id, ids: (_ for _ in ()).throw(FailedPrecondition("no blob store"))  # type: ignore[method-assign]
    r = cur.keep_one("app", "i7", ["near7"])
    assert r["kind"] == "near" and r["similarity"] > 0.99
    assert platform.deleted == ["dup", "copy5", "near7"]
