"""Curation.health_check over a fake platform: rows, vectors and blobs in, ids out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from firstlight.curation.service import Curation
from firstlight.errors import InvalidArgument


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


def test_health_check_maps_rows_to_ids_and_reads_pixels_once(tmp_path):
    platform = FakePlatform()
    cur = Curation(platform, tmp_path, models=None)
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
