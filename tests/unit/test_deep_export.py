"""Export of a deep version to the Triton model repository: TorchScript that matches the eager
module on any batch size, the Python-backend runner, configs with dynamic batching."""

import json

import numpy as np
import torch

from firstlight.training.deep.classifier import ClassifierExport, ResNetScratch
from firstlight.training.deep.context import DeepTrainResult, OutputSpec
from firstlight.training.deep.triton_export import export_deep, load_exported, run_exported

torch.set_num_threads(1)


def _result(size=32, flips=True):
    torch.manual_seed(0)
    module = ClassifierExport(ResNetScratch(3), logreg=False, average_flips=flips).eval()
    return DeepTrainResult("classifier", module, size, [OutputSpec("PROBS", "TYPE_FP32", [3])], "accuracy", {"accuracy": 1.0}, {})


def test_export_layout_and_roundtrip(tmp_path):
    result = _result()
    name = export_deep(tmp_path, "app1", "m", 2, result, ["a", "b", "c"])
    folder = tmp_path / name
    assert name == "fl.app1.m"
    assert {p.name for p in (folder / "2").iterdir()} == {"model.pt", "model.onnx", "model.py", "meta.json"}
    config = (folder / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "dynamic_batching" in config and "TYPE_UINT8" in config and 'name: "PROBS"' in config
    prod = (folder / "config.pytorch.pbtxt").read_text()
    assert 'backend: "pytorch"' in prod and "PROBS__0" in prod and "IMAGE__0" in prod
    meta = json.loads((folder / "2" / "meta.json").read_text())
    assert meta["kind"] == "classifier" and meta["image_size"] == 32 and meta["concepts"] == ["a", "b", "c"]
    module, _ = load_exported(tmp_path, name, 2)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    [probs] = run_exported(module, pixels, batch_size=4)  # batches of 4 and 1: dynamic batch
    with torch.inference_mode():
        eager = result.module(torch.from_numpy(pixels)).numpy()
    assert probs.shape == (5, 3) and np.allclose(probs, eager, atol=1e-5)


def test_flip_averaging_is_baked_into_the_export(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    mirrored = pixels[:, :, ::-1].copy()
    for flips in (True, False):
        name = export_deep(tmp_path / str(flips), "a", "m", 1, _result(flips=flips), ["a", "b", "c"])
        module, _ = load_exported(tmp_path / str(flips), name, 1)
        same = np.allclose(run_exported(module, pixels)[0], run_exported(module, mirrored)[0], atol=1e-5)
        assert same == flips  # averaged with the mirror: a mirrored input gives the same probabilities
