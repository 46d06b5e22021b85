"""Deep versions in ONNX Runtime: the same input tensor gives the same outputs as torch (the
exported TorchScript and the eager module) for the classifier, the embedder (real packaged
EfficientNet-Lite0 weights, flip averaging inside the graph) and the detector (raw maps and the
decoded detections); versions without a graph are served by TorchScript (the upgrade path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from firstlight.models.backbone import load_efficientnet
from firstlight.models.deep_runtime import DeepRunner
from firstlight.training.deep import onnx_export
from firstlight.training.deep.classifier import ClassifierExport, EfficientNetClassifier, ResNetScratch
from firstlight.training.deep.context import DeepTrainResult, OutputSpec
from firstlight.training.deep.detector import MAX_DETECTIONS, OUTPUT_NAME, DetectorNet, onnx_plan, script_export
from firstlight.training.deep.embedder import EmbedderNet, ExportedEmbedder
from firstlight.training.deep.triton_export import export_deep

#: ORT vs torch on fp32: measured 1e-7 (small nets) to ~1e-6 (EfficientNet-Lite0).
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pixels(n: int, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _export(tmp_path: Path, result: DeepTrainResult, onnx: bool = True) -> Path:
    name = export_deep(tmp_path, "app1", "m", 1, result, [f"c{i}" for i in range(8)], onnx=onnx)
    return tmp_path / name / "1"


def _eager(module: torch.nn.Module, pixels: np.ndarray) -> list[np.ndarray]:
    with torch.inference_mode():
        out = module(torch.from_numpy(pixels))
    return [t.float().numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


def _check_runtimes(folder: Path, eager: torch.nn.Module | None, pixels: np.ndarray) -> list[np.ndarray]:
    ort = DeepRunner(folder, runtime="onnxruntime", max_chunk=4)  # 5 images: chunks of 4 and 1
    assert ort.runtime == "onnxruntime"
    got, ts = ort.run(pixels), DeepRunner(folder, runtime="torch").run(pixels)
    refs = [ts] + ([_eager(eager, pixels)] if eager is not None else [])
    for ref in refs:
        assert len(got) == len(ref)
        for a, b in zip(got, ref):
            assert a.shape == b.shape and a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    return got


@pytest.mark.parametrize("logreg", [False, True])
def test_classifier_onnx_matches_torch_with_flip_averaging(tmp_path: Path, logreg: bool) -> None:
    torch.manual_seed(0)
    module = ClassifierExport(ResNetScratch(3), logreg=logreg, average_flips=True).eval()
    folder = _export(tmp_path, DeepTrainResult("classifier", module, 32, [OutputSpec("PROBS", "TYPE_FP32", [3])], "accuracy", {}, {}))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["onnx"]["outputs"] == ["PROBS"] and meta["onnx"]["postprocess"] is None and meta["onnx"]["max_abs_diff"] <= ATOL
    pixels = _pixels(5, 32)
    [probs] = _check_runtimes(folder, module, pixels)
    [mirrored] = DeepRunner(folder).run(pixels[:, :, ::-1].copy())
    np.testing.assert_allclose(mirrored, probs, atol=ATOL)  # the mirror averaging is in the graph


def test_efficientnet_classifier_and_embedder_onnx_match_torch(tmp_path: Path) -> None:
    # The packaged ImageNet weights (no download), at 32 px to stay quick.
    torch.manual_seed(0)
    clf = EfficientNetClassifier(4, pretrained=True).to(memory_format=torch.channels_last)
    module = ClassifierExport(clf, logreg=False, average_flips=True).eval()
    folder = _export(tmp_path / "clf", DeepTrainResult("classifier", module, 32, [OutputSpec("PROBS", "TYPE_FP32", [4])], "accuracy", {}, {}))
    [probs] = _check_runtimes(folder, module, _pixels(5, 32))
    assert probs.std() > 1e-3  # not a saturated output that would hide differences

    net = EmbedderNet(load_efficientnet("cpu"), 16, average_flips=True)
    emb_module = ExportedEmbedder(net).eval()
    folder = _export(tmp_path / "emb", DeepTrainResult("embedder", emb_module, 32, [OutputSpec("embeddings", "TYPE_FP32", [16])], "r", {}, {}))
    [emb] = _check_runtimes(folder, emb_module, _pixels(5, 32, seed=2))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("size", [64, 72])  # 72: resized to the 80 px grid inside the graph
def test_detector_maps_in_onnx_and_decode_after_match_torchscript(tmp_path: Path, size: int) -> None:
    torch.manual_seed(0)
    net = DetectorNet(3, True).eval()
    with torch.no_grad():  # distinct peaks above the threshold (random heads sit at the 0.05 prior)
        net.heat.weight.mul_(30)
        net.heat.bias.zero_()
    result = DeepTrainResult(
        "detector",
        script_export(net, size, True, 0.5),
        size,
        [OutputSpec(OUTPUT_NAME, "TYPE_FP32", [MAX_DETECTIONS, 6])],
        "map_50",
        {},
        {},
        onnx=onnx_plan(net, size, True, 0.5),
    )
    folder = _export(tmp_path, result)
    assert (folder / "decode.pt").is_file()
    assert json.loads((folder / "meta.json").read_text())["onnx"]["outputs"] == ["HEAT", "REG"]
    pixels = _pixels(5, size)
    # raw outputs: the maps in ONNX Runtime against the eager maps module
    runner = DeepRunner(folder, runtime="onnxruntime")
    raw = runner.session.run(["HEAT", "REG"], {"IMAGE": pixels})
    for a, b in zip(raw, _eager(result.onnx.forward, pixels)):
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)
    [dets] = _check_runtimes(folder, None, pixels)
    assert dets.shape == (5, MAX_DETECTIONS, 6) and (dets[..., 5] >= 0).sum() > 5


def test_versions_without_a_graph_are_served_by_torchscript(tmp_path: Path) -> None:
    # The upgrade path: a version exported before ONNX has model.pt only; it keeps serving.
    torch.manual_seed(0)
    module = ClassifierExport(ResNetScratch(3), logreg=False, average_flips=False).eval()
    result = DeepTrainResult("classifier", module, 32, [OutputSpec("PROBS", "TYPE_FP32", [3])], "accuracy", {}, {})
    folder = _export(tmp_path, result, onnx=False)
    assert not (folder / "model.onnx").exists() and "onnx" not in json.loads((folder / "meta.json").read_text())
    runner = DeepRunner(folder)
    assert runner.runtime == "torch"
    np.testing.assert_allclose(runner.run(_pixels(2, 32))[0], _eager(module, _pixels(2, 32))[0], atol=1e-6)
    with pytest.raises(FileNotFoundError):
        DeepRunner(folder, runtime="onnxruntime")
    assert DeepRunner(folder, device="cpu", runtime="torch").runtime == "torch"


def test_a_graph_that_fails_to_export_or_agree_leaves_torchscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    module = ClassifierExport(ResNetScratch(3), logreg=False, average_flips=False).eval()
    result = DeepTrainResult("classifier", module, 32, [OutputSpec("PROBS", "TYPE_FP32", [3])], "accuracy", {}, {})

    def broken(*_a: object, **_k: object) -> bytes:
        raise RuntimeError("exporter gap")

    monkeypatch.setattr(onnx_export, "to_onnx", broken)
    assert not (_export(tmp_path / "a", result) / "model.onnx").exists()
    monkeypatch.undo()
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # no graph agrees
    folder = _export(tmp_path / "b", result)
    assert not (folder / "model.onnx").exists() and DeepRunner(folder).runtime == "torch"


def test_runner_refuses_bad_pixels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ClassifierExport(ResNetScratch(3), logreg=False, average_flips=False).eval()
    folder = _export(tmp_path, DeepTrainResult("classifier", module, 32, [OutputSpec("PROBS", "TYPE_FP32", [3])], "accuracy", {}, {}))
    with pytest.raises(ValueError, match=r"uint8 \[N,32,32,3\]"):
        DeepRunner(folder).run(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="got uint8 \\[1, 64, 64, 3\\]"):
        DeepRunner(folder).run(np.zeros((1, 64, 64, 3), np.uint8))  # not the version's size
    with pytest.raises(ValueError, match="runtime"):
        DeepRunner(folder, runtime="tensorrt")
