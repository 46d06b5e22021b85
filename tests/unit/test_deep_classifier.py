"""visual_classifier on tiny synthetic images: it learns, the backbone multiplier/BatchNorm freeze
hold, logreg switches to sigmoid outputs, and the export module is traceable on uint8 pixels."""

import numpy as np
import pytest
import torch

from firstlight.training.deep import classifier, hyper
from firstlight.training.deep.context import DeepData, LabeledImages
from firstlight.training.deep.loop import LocalContext

torch.set_num_threads(1)


def _split(n, rng):
    """Two concepts: a bright square at the top or at the bottom (mirror-invariant)."""
    imgs, labels = [], []
    for i in range(n):
        img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        top = i % 2 == 0
        img[2:14, 8:24] = 230 if top else img[2:14, 8:24]
        img[18:30, 8:24] = img[18:30, 8:24] if top else 230
        imgs.append(img)
        labels.append(["top" if top else "bottom"])
    return LabeledImages([f"i{i}" for i in range(n)], imgs, labels)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return DeepData(["top", "bottom"], _split(48, rng), _split(16, rng), _split(16, rng))


def test_resnet_scratch_learns_and_exports(tmp_path, data):
    h = hyper.parse_deep(
        "visual_classifier",
        {"architecture": "resnet_scratch", "image_size": 32, "num_epochs": 4, "batch_size": 8, "lrate": 0.05, "test_freq": 2},
    )
    ctx = LocalContext(data, h, tmp_path, device="cpu")
    result = classifier.TEMPLATE.fit(ctx)
    assert result.kind == "classifier" and result.primary_metric == "accuracy"
    assert result.validation["accuracy"] >= 0.9, result.validation
    assert {"accuracy", "macro_precision", "macro_recall"} <= set(result.test)
    assert [bool(r.metrics) for r in ctx.rows] == [False, True, False, True]
    assert result.artifacts["confusion_validation.png"].startswith(b"\x89PNG")
    x = torch.from_numpy(np.stack(data.test.images[:3]))
    traced = torch.jit.trace(result.module, x[:1])
    probs = traced(x)  # dynamic batch after tracing with one image
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert next(result.module.parameters()).device.type == "cpu"


def test_logreg_gives_independent_sigmoids(tmp_path, data):
    h = hyper.parse_deep("visual_classifier", {"architecture": "resnet_scratch", "image_size": 32, "num_epochs": 1, "batch_size": 16, "logreg": "true"})
    result = classifier.TEMPLATE.fit(LocalContext(data, h, tmp_path, device="cpu"))
    probs = result.module(torch.from_numpy(np.stack(data.test.images[:4])))
    assert result.report["activation"] == "sigmoid"
    assert not torch.allclose(probs.sum(1), torch.ones(4), atol=1e-3)


def _bn_and_conv(net):
    bn = next(m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    conv = net.backbone._conv_stem.weight
    return bn.running_mean.clone(), bn.weight.clone(), conv.clone()


@pytest.mark.parametrize("mult", [0.0, 1.0])
def test_efficientnet_backbone_multiplier_and_frozen_batchnorm(data, mult):
    torch.manual_seed(0)
    net = classifier.build_net("efficientnet_lite0", 2, pretrained=False)
    h = hyper.parse_deep("visual_classifier", {"base_gradient_multiplier": str(mult), "lrate": "0.5"})
    opt = classifier.make_optimizer(net, h)
    assert [g["lr_mult"] for g in opt.param_groups] == ([1.0] if mult == 0 else [1.0, mult])
    before = _bn_and_conv(net)
    head_before = net.head.weight.clone()
    net.train()
    x = torch.from_numpy(np.stack(data.train.images[:8]))
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1] * 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _bn_and_conv(net)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])  # BatchNorm frozen
    assert torch.equal(before[2], after[2]) == (mult == 0)  # backbone learns only with a multiplier
    assert not torch.equal(head_before, net.head.weight)


def test_efficientnet_fine_tune_end_to_end(tmp_path, data):
    """The packaged ImageNet weights load, fine-tune at a small size with the template's default
    learning rate, warm-up and clipping, and export.

    Measured over seeds 0-4 (these 4 epochs): validation accuracy 1.000 on every seed, final loss
    0.011-0.087, no restart (6 epochs: loss 0.000-0.009). The old default (lrate 0.01, no warm-up
    or clipping) ended at accuracy 0.5 on 2 of 5 seeds over 6 epochs here, and on every run on
    another CPU; the guard now restarts or fails such runs (test_deep_loop)."""
    h = hyper.parse_deep("visual_classifier", {"image_size": 64, "num_epochs": 4, "batch_size": 16})
    assert (h["lrate"], h["warmup_epochs"], h["max_grad_norm"], h["divergence_retries"]) == (0.03, 1, 1.0, 2)
    result = classifier.TEMPLATE.fit(LocalContext(data, h, tmp_path, device="cpu"))
    assert result.validation["accuracy"] >= 0.75, result.validation
    assert result.report["lrate_used"] <= 0.03 and isinstance(result.report["divergence_restarts"], list)
    assert result.module(torch.from_numpy(classifier.prepare_images(data.test.images[:2], 64))).shape == (2, 2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_efficientnet_fine_tune_learns_on_every_seed(tmp_path, data, seed):
    """The seed sweep behind the end-to-end test's bound (`make test-slow`)."""
    h = hyper.parse_deep("visual_classifier", {"image_size": 64, "num_epochs": 4, "batch_size": 16})
    result = classifier.TEMPLATE.fit(LocalContext(data, h, tmp_path, seed=seed, device="cpu"))
    assert result.validation["accuracy"] >= 0.75, result.validation
