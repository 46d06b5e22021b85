"""ExplainPrediction's core (``curation.explanations``) on fakes of its ports with the real
torch backbone, and the pictures (``quality.explain_render``): the overlay keeps the image's
aspect, the map is the feature map's grid in [0, 1], concepts come highest score first, the
evidence carries the concept and leaves the query out, and every bad argument has its status."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from firstlight.curation.explanations import Explanations
from firstlight.curation.ports import HeadArrays, ModelInfo, Row, VersionInfo
from firstlight.curation.quality import explain_render
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound

CONCEPTS = ["cat", "dog", "bird"]


def _jpeg(w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    arr[h // 4 : h // 2, w // 3 : w // 2] = (250, 240, 20)  # a bright block: something to look at
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


class FakePlatform:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.blobs = {"q1": _jpeg(300, 200, 1), **{f"t{k}": _jpeg(64, 64, 10 + k) for k in range(9)}}
        self.vecs = {f"t{k}": rng.normal(size=1280).astype(np.float32) for k in range(9)}

    def blobs_of(self, app_id, ids):
        if app_id != "app1" or any(i not in self.blobs for i in ids):
            raise NotFound(f"no input {ids[0]!r} in app {app_id!r}")
        return {i: self.blobs[i] for i in ids}

    def vectors(self, app_id, ids):
        return {i: self.vecs[i] for i in ids if i in self.vecs}

    def inputs(self, app_id, *, labeled, split=0):
        return []


class FakeTraining:
    def __init__(self, template: str = "transfer_classifier", embedding_model: str = "") -> None:
        rng = np.random.default_rng(3)
        self.h = HeadArrays("2", template, CONCEPTS, rng.normal(size=(3, 1280)).astype(np.float32), np.zeros(3, np.float32), "softmax", False, embedding_model)

    def head(self, app_id, model_id, version):
        if model_id != "m":
            raise NotFound(f"model {model_id!r} does not exist")
        if self.h.template != "transfer_classifier":
            raise FailedPrecondition(f"model {model_id!r} is a {self.h.template} model")
        return self.h

    def model(self, app_id, model_id):
        return ModelInfo(app_id, model_id, self.h.template, CONCEPTS, "2")

    def deep_explainer(self, app_id, model_id, version):  # a deep template this fake has no network of
        raise FailedPrecondition(f"model {model_id!r} is a {self.h.template} model; explanations exist for classifiers")

    def version(self, app_id, model_id, version):
        return VersionInfo(version, "ds", "abc")

    def dataset_rows(self, app_id, dataset_id, version):
        rows = [Row(f"t{k}", [CONCEPTS[k % 3]], 1) for k in range(9)]
        return [*rows, Row("q1", ["cat"], 1), Row("t0", ["cat"], 3)]


@pytest.fixture(scope="module")
def backbone():
    from firstlight.models import backbone

    return backbone.load_efficientnet()


def test_explain_an_input(backbone):
    ex = Explanations(FakePlatform(), FakeTraining(), load_backbone=lambda: backbone)
    r = ex.explain("app1", "m", "", input_id="q1", top_k=2, evidence=2)
    assert r.version == "2" and r.method == "gradcam++" and (r.width, r.height) == (300, 200)
    assert [c.score for c in r.concepts] == sorted((c.score for c in r.concepts), reverse=True) and len(r.concepts) == 2
    for c in r.concepts:
        over = Image.open(io.BytesIO(c.overlay_png))
        assert over.format == "PNG" and over.size == (300, 200)  # the image's own aspect
        assert c.saliency.shape == (7, 7) and c.saliency.min() >= 0.0 and c.saliency.max() <= 1.0 + 1e-6
        assert 1 <= len(c.evidence) <= 2 and all(c.concept in cs for _, _, cs in c.evidence)
        assert "q1" not in [i for i, _, _ in c.evidence]  # the query is not its own evidence
        assert [s for _, s, _ in c.evidence] == sorted((s for _, s, _ in c.evidence), reverse=True)
    grid = Image.open(io.BytesIO(r.grid_png))
    assert grid.width > grid.height  # 2 rows of three 3:2 tiles
    x0, y0, x1, y1 = r.box
    assert 0 < x0 < x1 < 1 and y0 < y1  # a landscape image: the model sees its middle


def test_explain_bytes_and_the_errors(backbone):
    ex = Explanations(FakePlatform(), FakeTraining(), load_backbone=lambda: backbone)
    r = ex.explain("app1", "m", "2", image_bytes=_jpeg(120, 160, 5), top_k=10, method="gradcam")
    assert len(r.concepts) == 3 and r.input_id == "" and Image.open(io.BytesIO(r.concepts[0].overlay_png)).size == (120, 160)
    bad = [
        {"input_id": "q1", "image_bytes": b"x"},
        {},
        {"input_id": "q 1"},
        {"input_id": "q1", "top_k": 11},
        {"input_id": "q1", "evidence": 51},
        {"input_id": "q1", "method": "scorecam"},
        {"image_bytes": b"not an image"},
    ]
    for kw in bad:
        with pytest.raises(InvalidArgument):
            ex.explain("app1", "m", "", **kw)
    with pytest.raises(InvalidArgument):
        ex.explain("app1", "m", "v2", input_id="q1")
    with pytest.raises(NotFound):
        ex.explain("app1", "m", "", input_id="nope")
    with pytest.raises(NotFound):
        ex.explain("app1", "other", "", input_id="q1")
    with pytest.raises(FailedPrecondition, match="deep_classifier"):
        Explanations(FakePlatform(), FakeTraining("deep_classifier"), load_backbone=lambda: backbone).explain("app1", "m", "", input_id="q1")
    with pytest.raises(FailedPrecondition, match="own embedder"):
        Explanations(FakePlatform(), FakeTraining(embedding_model="emb@1"), load_backbone=lambda: backbone).explain("app1", "m", "", input_id="q1")


def test_render_geometry_and_pictures():
    # 400×200: shorter side 200 -> 256, width 512, the 224 crop from x 144 and y 16
    assert explain_render.model_input_box(400, 200, 224) == (144 / 512, 16 / 256, 368 / 512, 240 / 256)
    assert explain_render.model_input_box(224, 224, 224) == (16 / 256, 16 / 256, 240 / 256, 240 / 256)
    raw = np.zeros((7, 7), np.float32)
    raw[0, 0] = 1.0
    sal, inside = explain_render.place(raw, (0.25, 0.0, 0.75, 1.0), 100, 200)
    assert sal.shape == (100, 200) and not inside[:, :50].any() and inside[:, 50:150].all() and not sal[:, 150:].any()
    assert sal[0, 50] > 0.9 and sal[99, 149] < 0.01  # the salient cell lands in the box's top-left corner
    ramp = explain_render.colorize(np.array([[0.0, 1.0]]))
    assert ramp[0, 0, 2] > 100 and ramp[0, 1, 0] > 200  # blue cold, red hot
    img = np.full((100, 200, 3), 128, np.uint8)
    over = explain_render.overlay(img, sal, inside)
    assert over.shape == img.shape and over[50, 10].max() < 128  # outside the model's view: dimmed
    grid = Image.open(io.BytesIO(explain_render.grid_png(img, [("cat 0.90", sal, inside, over)], tile_px=50)))
    assert grid.height == 50 + 18 + 2 * 6 and grid.width == 3 * 100 + 4 * 6
