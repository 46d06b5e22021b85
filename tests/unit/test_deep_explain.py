"""Explanations of a deep classifier version: training's split of the exported TorchScript
(``training.deep.explainer``) and curation's Grad-CAM++ on it (``quality.explain.explain_deep``,
``Explanations`` on fakes of its ports). A tiny ResNetScratch learns in a few steps which
colour a small square has (anywhere on dark noise), is exported by the real export function, and its map must
point at the square: masking the map's top cells lowers the class's probability more than
masking random cells, on every training seed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

import torch

from firstlight.curation.explanations import Explanations
from firstlight.curation.ports import DeepExplainer, Row, VersionInfo
from firstlight.curation.quality import explain
from firstlight.errors import FailedPrecondition
from firstlight.training.deep.classifier import ClassifierExport, ResNetScratch
from firstlight.training.deep.context import DeepTrainResult, OutputSpec
from firstlight.training.deep.explainer import explainer_bytes, rebuild_net
from firstlight.training.deep.triton_export import export_deep, load_exported

STEPS = 25
TOP, DRAWS = 4, 4  # cells masked (a quarter of the 4×4 map), random draws per image
S, CELL = 32, 8  # 32 px in, a 4×4 last feature map: one cell per 8 px
CONCEPTS = ["red", "green", "blue", "yellow"]
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _images(n: int, rng: np.random.Generator, aligned: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Dark noise with one 8×8 square anywhere whose colour is the label (``aligned``: on one
    cell of the feature map's grid, so masking one cell removes all of it)."""
    x = rng.integers(0, 80, (n, S, S, 3), dtype=np.uint8)
    y = rng.integers(0, len(CONCEPTS), n)
    for i, c in enumerate(y):
        oy, ox = rng.integers(0, S - CELL + 1, 2)
        if aligned:
            oy, ox = oy // CELL * CELL, ox // CELL * CELL
        x[i, oy : oy + CELL, ox : ox + CELL] = COLOURS[c]
    return x, y


def _exported(tmp_path, seed: int):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ResNetScratch(4, (8, 16, 32))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(STEPS):
        x, y = _images(16, rng)
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    module = ClassifierExport(net.eval(), logreg=False, average_flips=False).eval()
    result = DeepTrainResult("classifier", module, S, [OutputSpec("PROBS", "TYPE_FP32", [4])], "accuracy", {"accuracy": 1.0}, {})
    name = export_deep(tmp_path, "app1", "m", seed + 1, result, CONCEPTS, onnx=False)
    traced, meta = load_exported(tmp_path, name, seed + 1)
    return torch.jit.load(io.BytesIO(explainer_bytes(traced, int(meta["image_size"])))).eval(), traced, rng


def _masked(img: np.ndarray, cells) -> np.ndarray:
    out = img.copy()
    for c in cells:
        y, x = divmod(int(c), S // CELL)
        out[y * CELL : (y + 1) * CELL, x * CELL : (x + 1) * CELL] = 40  # the noise's mean
    return out


def _prob(split, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        p = torch.softmax(split.head(split(torch.from_numpy(x))), 1)
    return p[np.arange(len(x)), target].numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_the_map_points_at_what_the_network_looks_at(tmp_path, seed):
    split, traced, rng = _exported(tmp_path, seed)
    x, _ = _images(12, rng, aligned=True)
    with torch.no_grad():  # the two halves make the exported network
        assert torch.allclose(torch.softmax(split.head(split(torch.from_numpy(x))), 1), traced(torch.from_numpy(x)), atol=1e-5)
    drops_top, drops_random = [], []
    for img in x:
        ex = explain.explain_deep(split, img, 2)
        assert ex.maps.shape == (2, S // CELL, S // CELL) and ex.maps[0].max() > ex.maps[0].min() and ex.embedding.size == 0
        target = np.array([ex.top[0]])
        p0 = _prob(split, img[None], target)[0]
        cells = [np.argsort(-ex.maps[0].ravel())[:TOP]] + [rng.choice(16, TOP, replace=False) for _ in range(DRAWS)]
        masked = np.stack([_masked(img, cs) for cs in cells])
        drops = p0 - _prob(split, masked, np.repeat(target, len(masked)))
        drops_top.append(drops[0])
        drops_random.append(float(drops[1:].mean()))
    # over 10 training seeds: 0.30–0.64 against 0.06–0.20 (margins 0.24–0.46)
    assert np.mean(drops_top) > max(np.mean(drops_random) + 0.1, 2 * np.mean(drops_random)), (np.mean(drops_top), np.mean(drops_random))


def test_rebuild_refuses_what_it_does_not_know():
    with pytest.raises(FailedPrecondition):
        rebuild_net({"net.fc.weight": torch.zeros(2, 3)})
    with pytest.raises(FailedPrecondition):
        rebuild_net({"net.head.weight": torch.zeros(2, 3), "net.other.weight": torch.zeros(1)})


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).resize((96, 64)).save(buf, format="PNG")
    return buf.getvalue()


class FakePlatform:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.vecs = {f"t{k}": rng.normal(size=1280).astype(np.float32) for k in range(8)}

    def vectors(self, app_id, ids):
        return {i: self.vecs[i] for i in ids if i in self.vecs}

    def inputs(self, app_id, *, labeled, split=0):
        return []


class FakeTraining:
    def __init__(self, data: bytes) -> None:
        self.data, self.calls = data, 0

    def head(self, app_id, model_id, version):
        raise FailedPrecondition(f"model {model_id!r} is a deep_classifier model")

    def model(self, app_id, model_id):
        from firstlight.curation.ports import ModelInfo

        return ModelInfo(app_id, model_id, "visual_classifier", CONCEPTS, "1")

    def deep_explainer(self, app_id, model_id, version):
        self.calls += 1
        return DeepExplainer("1", "visual_classifier", CONCEPTS, "softmax", S, self.data)

    def version(self, app_id, model_id, version):
        return VersionInfo(version, "ds", "abc")

    def dataset_rows(self, app_id, dataset_id, version):
        return [Row(f"t{k}", [CONCEPTS[k % 4]], 1) for k in range(8)]


def test_explain_a_deep_version_end_to_end(tmp_path):
    from firstlight.models import backbone

    split, _, rng = _exported(tmp_path, 0)
    buf = io.BytesIO()
    torch.jit.save(split, buf)
    training = FakeTraining(buf.getvalue())
    ex = Explanations(FakePlatform(), training, load_backbone=lambda: backbone.load_efficientnet())
    img, _ = _images(1, rng)
    for version in ("", "1"):
        r = ex.explain("app1", "m", version, image_bytes=_png(img[0]), top_k=2, evidence=2)
        assert r.version == "1" and r.template == "visual_classifier" and len(r.concepts) == 2
        for c in r.concepts:
            assert c.saliency.shape == (4, 4) and Image.open(io.BytesIO(c.overlay_png)).size == (96, 64)
            assert 1 <= len(c.evidence) <= 2 and all(c.concept in cs for _, _, cs in c.evidence)
    assert training.calls == 1  # the second call found the network cached


def test_the_efficientnet_classifier_splits_too():
    from firstlight.training.deep.classifier import EfficientNetClassifier
    from firstlight.training.deep.triton_export import to_torchscript

    torch.manual_seed(0)
    traced = to_torchscript(ClassifierExport(EfficientNetClassifier(3, pretrained=False), logreg=True, average_flips=False), 64)
    split = torch.jit.load(io.BytesIO(explainer_bytes(traced, 64))).eval()
    x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        fmap = split(x)
        assert fmap.shape == (2, 1280, 2, 2)  # the last feature map, 1/32 of the side
        assert torch.allclose(torch.sigmoid(split.head(fmap)), traced(x), atol=1e-5)
