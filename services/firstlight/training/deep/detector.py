"""``visual_detector``: concepts with boxes, trained on the app's box-labeled images.

The network is anchor-free, CenterNet-style, on one stride-8 feature map (objects are found by
their centre cell; 16×16 cells at the default 128 px):

- trunk (the ``architecture`` setting): ``small_cnn``, a 4-stage CNN trained from random weights
  (fast on CPU, the default for small images), or ``efficientnet_lite0``, the packaged ImageNet
  EfficientNet-Lite0 cut after its stride-16 stage (frozen BatchNorm). Both merge their stride-16
  map into the stride-8 one (a one-level FPN) so a cell sees whole animals.
- head: a class heatmap (one sigmoid per concept per cell, penalty-reduced focal loss against
  Gaussian peaks at box centres) and box regression (sub-cell centre offset and log width/height,
  L1 at centre cells) — per concept (4×K channels, the regression of the predicted concept is
  used) with ``use_perclass_regression``, else one class-agnostic box per cell.
- decode: 3×3 peak picking on the heatmap, top candidates, ``detection_score_threshold``, then
  class-wise NMS (written in torch; torchvision does not import here), padded to
  ``MAX_DETECTIONS``.

``average_horizontal_flips`` trains on mirrored scenes (boxes mirrored with them) and, at
evaluation and serving, averages each image's heatmap and boxes with its mirror image's (mapped
back) before decoding. ``base_gradient_multiplier`` scales the trunk's learning rate relative to
the head (0 freezes it). Images are resized whole to ``image_size`` (no centre crop): boxes are
normalised to the image, so they survive the resize.

Evaluation: mAP@0.5 and per-concept AP (VOC all-point, :mod:`det_metrics`) on validation every
``test_freq`` epochs and on test at the end, plus a PNG of test scenes with predicted and true boxes.
The exported module (TorchScript) takes uint8 N×S×S×3 and returns one tensor DETECTIONS N×D×6:
per detection x0, y0, x1, y1 (in [0, 1] of the image), score, concept index; rows past the last
detection have class -1 and score 0. One packed FP32 tensor rather than three keeps the Triton
config and clients the same as any single-output image model's.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from firstlight.domain.errors import InsufficientData, TrainingError
from firstlight.training.deep import hyper as deep_hyper
from firstlight.training.deep.context import Box, DeepTrainContext, DeepTrainResult, OnnxPlan, OutputSpec
from firstlight.training.deep.det_metrics import Detection, mean_average_precision
from firstlight.training.deep.loop import LoopSettings, clip_and_step, run_epochs
from firstlight.training.hyper import SettingSpec

NAME = "visual_detector"
ARCHITECTURES = ("small_cnn", "efficientnet_lite0")
STRIDE = 8
MAX_DETECTIONS = 20  # D: rows of the fixed-size output
OUTPUT_NAME = "DETECTIONS"
_PRE_NMS = 100  # heatmap peaks considered per image before the threshold and NMS
_NMS_IOU = 0.5
_MEAN, _SCALE = 127.0, 128.0
FEAT = 96  # channels of the merged stride-8 map the head reads

OWN_SETTINGS = (
    SettingSpec(
        "architecture",
        "choice",
        "small_cnn",
        "small_cnn: a small CNN trained from random weights (fast on CPU); "
        "efficientnet_lite0: the packaged ImageNet EfficientNet-Lite0 up to its stride-16 stage",
        choices=ARCHITECTURES,
    ),
    # From-scratch trunks want the trunk at the head's rate; with efficientnet_lite0 pass ~0.1.
    SettingSpec(
        "base_gradient_multiplier",
        "float",
        1.0,
        "learning-rate multiplier of the trunk relative to the detection head (0 freezes it)",
        0.0,
        10.0,
    ),
    # AdamW, not SGD: a detection head trained from scratch in ~1,000 steps (minutes on a CPU) got
    # val mAP@0.5 0.13 after 4 epochs with SGD (lr 0.02, momentum 0.9); CenterNet also trains with Adam.
    SettingSpec("lrate", "float", 2e-3, "base learning rate of the head (AdamW)", 1e-7, 10.0),
    SettingSpec("num_epochs", "int", 12, "training epochs", 1, 1000),
    SettingSpec("init_epochs", "int", 8, "epochs at the base learning rate before the first step down", 0, 1000),
    SettingSpec("step_epochs", "int", 3, "after init_epochs, the learning rate is multiplied by 0.1 every step_epochs", 1, 1000),
    SettingSpec("weight_decay", "float", 1e-4, "decoupled weight decay of AdamW", 0.0, 0.1),
    # Clipping at 10 was always on here; the guard only catches blow-ups (a detector's focal loss
    # can stay flat for an epoch while the heatmap calibrates, so no "does not fall" check).
    *deep_hyper.stability_settings(warmup_epochs=0, max_grad_norm=10.0, divergence_retries=2),
)
deep_hyper.register_template(NAME, OWN_SETTINGS)


# -- network ----------------------------------------------------------------------------------------
def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallTrunk(nn.Module):
    """Four stride-2 stages (16/32/64/128 channels); returns the stride-8 map (FEAT channels) with
    the upsampled stride-16 map added."""

    def __init__(self) -> None:
        super().__init__()
        self.s2 = nn.Sequential(_conv(3, 16, 2))
        self.s4 = nn.Sequential(_conv(16, 32, 2), _conv(32, 32))
        self.s8 = nn.Sequential(_conv(32, 64, 2), _conv(64, 64))
        self.s16 = nn.Sequential(_conv(64, 128, 2), _conv(128, 128), _conv(128, 128))
        self.lat8 = nn.Conv2d(64, FEAT, 1)
        self.lat16 = nn.Conv2d(128, FEAT, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c8 = self.s8(self.s4(self.s2(x)))
        c16 = self.s16(c8)
        return self.lat8(c8) + F.interpolate(self.lat16(c16), size=c8.shape[-2:], mode="nearest")


class EfficientTrunk(nn.Module):
    """EfficientNet-Lite0's stem and blocks 0–10 (stride 16, 112 channels), with block 4's
    stride-8 output (40 channels) as the lateral; BatchNorm frozen (see ``train``)."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        if pretrained:
            from firstlight.models.backbone import load_efficientnet

            full = load_efficientnet("cpu")
        else:  # unit tests: same architecture, random weights, no weight file read
            from efficientnet_lite_pytorch import EfficientNet

            full = EfficientNet.from_name("efficientnet-lite0")
        self.stem = nn.Sequential(full._conv_stem, full._bn0, nn.ReLU6())
        self.to8 = nn.Sequential(*full._blocks[:5])
        self.to16 = nn.Sequential(*full._blocks[5:11])
        self.lat8 = nn.Conv2d(40, FEAT, 1)
        self.lat16 = nn.Conv2d(112, FEAT, 1)

    def backbone_modules(self) -> list[nn.Module]:
        return [self.stem, self.to8, self.to16]

    def train(self, mode: bool = True) -> EfficientTrunk:
        super().train(mode)
        for m in self.modules():  # small detection batches would wreck the ImageNet statistics
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c8 = self.to8(self.stem(x))
        c16 = self.to16(c8)
        return self.lat8(c8) + F.interpolate(self.lat16(c16), size=c8.shape[-2:], mode="nearest")


class DetectorNet(nn.Module):
    """float N×3×S×S (normalised) -> (heatmap logits N×K×S/8×S/8, regression N×R×S/8×S/8) with R =
    4K (per-class) or 4: per box (dx, dy, log w, log h), offsets in cells, sizes in cells."""

    def __init__(self, num_classes: int, perclass: bool, architecture: str = "small_cnn", pretrained: bool = True) -> None:
        super().__init__()
        if architecture == "small_cnn":
            self.trunk: nn.Module = SmallTrunk()
        elif architecture == "efficientnet_lite0":
            self.trunk = EfficientTrunk(pretrained)
        else:
            raise ValueError(f"unknown architecture {architecture!r}")
        self.architecture = architecture
        ch = 64
        self.tower = nn.Sequential(nn.ReLU(), nn.Conv2d(FEAT, ch, 3, 1, 1), nn.ReLU(inplace=True))
        self.heat = nn.Conv2d(ch, num_classes, 1)
        self.reg = nn.Conv2d(ch, 4 * num_classes if perclass else 4, 1)
        nn.init.constant_(self.heat.bias, -math.log((1 - 0.05) / 0.05))  # prior 0.05: a stable focal-loss start
        nn.init.normal_(self.reg.weight, std=0.01)
        nn.init.zeros_(self.reg.bias)

    def trunk_parameters(self) -> list[nn.Parameter]:
        if isinstance(self.trunk, EfficientTrunk):
            return [p for m in self.trunk.backbone_modules() for p in m.parameters()]
        return [p for n, p in self.trunk.named_parameters() if not n.startswith("lat")]

    def head_parameters(self) -> list[nn.Parameter]:
        trunk = {id(p) for p in self.trunk_parameters()}
        return [p for p in self.parameters() if id(p) not in trunk]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.tower(self.trunk(x))
        return self.heat(f), self.reg(f)


# -- targets and loss ---------------------------------------------------------------------------------
def build_targets(boxes: list[list[Box]], index: dict[str, int], grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per batch: heatmap targets N×K×G×G (Gaussian peaks, exactly 1 at centre cells), and for each
    object (image, class, cell y, cell x) with its regression target (dx, dy, log w, log h)."""
    n, k = len(boxes), len(index)
    heat = np.zeros((n, k, grid, grid), dtype=np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    where, reg = [], []
    for i, objs in enumerate(boxes):
        for b in objs:
            c = index[b.concept]
            cx, cy = (b.x0 + b.x1) / 2 * grid, (b.y0 + b.y1) / 2 * grid
            w, h = max((b.x1 - b.x0) * grid, 1e-3), max((b.y1 - b.y0) * grid, 1e-3)
            jx, jy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            # Elliptic Gaussian sized to the box (TTFNet's alpha 0.54); centre cell forced to 1.
            sx, sy = max(0.54 * w / 6, 0.35), max(0.54 * h / 6, 0.35)
            g = np.exp(-((xs - jx) ** 2) / (2 * sx * sx) - ((ys - jy) ** 2) / (2 * sy * sy))
            heat[i, c] = np.maximum(heat[i, c], g)
            heat[i, c, jy, jx] = 1.0
            where.append((i, c, jy, jx))
            reg.append((cx - jx, cy - jy, math.log(w), math.log(h)))
    w_arr = np.asarray(where, dtype=np.int64).reshape(-1, 4)
    r_arr = np.asarray(reg, dtype=np.float32).reshape(-1, 4)
    return heat, w_arr, r_arr


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of objects."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def detection_loss(
    heat_logits: torch.Tensor, reg: torch.Tensor, heat_t: torch.Tensor, where: torch.Tensor, reg_t: torch.Tensor, perclass: bool
) -> torch.Tensor:
    loss = focal_loss(heat_logits, heat_t)
    if len(where):
        i, c, y, x = where[:, 0], where[:, 1], where[:, 2], where[:, 3]
        n, r, gh, gw = reg.shape
        groups = reg.view(n, r // 4, 4, gh, gw)
        g = c if perclass else torch.zeros_like(c)
        pred = groups[i, g, :, y, x]  # M×4
        loss = loss + F.l1_loss(pred, reg_t, reduction="mean") * 1.0
    return loss


def flip_boxes(objs: list[Box]) -> list[Box]:
    return [Box(1.0 - b.x1, b.y0, 1.0 - b.x0, b.y1, b.concept) for b in objs]


# -- decode, NMS, export --------------------------------------------------------------------------------
def box_iou_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix of x0,y0,x1,y1 boxes a [N,4], b [M,4]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-wise greedy NMS: indices of kept boxes, best score first. A box is dropped when a
    higher-scoring kept box of the same class overlaps it by more than ``iou_threshold``."""
    order = torch.argsort(scores, descending=True)
    b = boxes[order]
    c = classes[order]
    n = int(b.shape[0])
    same = c[:, None] == c[None, :]
    suppress = (box_iou_t(b, b) > iou_threshold) & same
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    for i in range(n):
        if bool(keep[i]):
            keep[i + 1 :] = keep[i + 1 :] & ~suppress[i, i + 1 :]
    return order[keep]


def decode(
    heat: torch.Tensor, reg: torch.Tensor, score_threshold: float, max_detections: int, pre_nms: int, iou_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heatmap probabilities N×K×G×G and regression N×R×G×G -> (boxes N×D×4 in [0,1], scores N×D,
    classes N×D int32), D = ``max_detections``, padded with zero boxes, score 0 and class -1."""
    n, _k, gh, gw = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat).to(heat.dtype)
    flat = peaks.reshape(n, -1)
    top = min(pre_nms, int(flat.shape[1]))
    scores, idx = torch.topk(flat, top, dim=1)
    cls = torch.div(idx, gh * gw, rounding_mode="floor")
    cell = idx - cls * gh * gw
    y = torch.div(cell, gw, rounding_mode="floor")
    x = cell - y * gw
    groups = reg.reshape(n, reg.shape[1] // 4, 4, gh * gw)
    g = cls if groups.shape[1] > 1 else torch.zeros_like(cls)
    batch = torch.arange(n, device=heat.device)[:, None].expand(n, top)
    r = groups[batch, g, :, cell]  # N×top×4
    cx = (x.to(heat.dtype) + r[..., 0]) / gw
    cy = (y.to(heat.dtype) + r[..., 1]) / gh
    w = torch.exp(r[..., 2].clamp(max=6.0)) / gw
    h = torch.exp(r[..., 3].clamp(max=6.0)) / gh
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).clamp(0.0, 1.0)
    out_b = torch.zeros(n, max_detections, 4, dtype=heat.dtype, device=heat.device)
    out_s = torch.zeros(n, max_detections, dtype=heat.dtype, device=heat.device)
    out_c = torch.full((n, max_detections), -1, dtype=torch.int32, device=heat.device)
    for i in range(n):
        ok = scores[i] >= score_threshold
        bi, si, ci = boxes[i][ok], scores[i][ok], cls[i][ok]
        keep = nms(bi, si, ci, iou_threshold)[:max_detections]
        m = int(keep.shape[0])
        out_b[i, :m] = bi[keep]
        out_s[i, :m] = si[keep]
        out_c[i, :m] = ci[keep].to(torch.int32)
    return out_b, out_s, out_c


class DetectorMaps(nn.Module):
    """The network part of the export: uint8 N×S×S×3 -> (heatmap probabilities N×K×G×G,
    regression N×R×G×G), flip-averaged when ``average_flips``. Straight-line tensor code, so it
    also exports to ONNX (triton_export serves it in ONNX Runtime with :class:`DetectorDecode`
    after it)."""

    def __init__(self, net: nn.Module, image_size: int, average_flips: bool) -> None:
        super().__init__()
        self.net = net
        # The stride-8/16 grid must tile the input exactly for cell -> pixel mapping (and mirroring).
        self.net_size = int(math.ceil(image_size / 16) * 16)
        self.average_flips = average_flips

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.permute(0, 3, 1, 2).float()
        if x.shape[-1] != self.net_size or x.shape[-2] != self.net_size:
            x = F.interpolate(x, size=[self.net_size, self.net_size], mode="bilinear", align_corners=False)
        x = ((x - 127.0) / 128.0).contiguous()  # _MEAN, _SCALE
        logits, reg = self.net(x)
        heat = torch.sigmoid(logits)
        if self.average_flips:
            logits_f, reg_f = self.net(torch.flip(x, dims=[3]))
            heat = (heat + torch.flip(torch.sigmoid(logits_f), dims=[3])) / 2
            reg_f = torch.flip(reg_f, dims=[3])
            n, r, gh, gw = reg_f.shape
            reg_f = reg_f.reshape(n, r // 4, 4, gh, gw)
            # A centre at (cell j, offset dx) in the mirror is at (gw-1-j, 1-dx) here.
            reg_f = torch.cat([1.0 - reg_f[:, :, 0:1], reg_f[:, :, 1:]], dim=2).reshape(n, r, gh, gw)
            reg = (reg + reg_f) / 2
        return heat, reg


class DetectorDecode(nn.Module):
    """The data-dependent part: (heatmap, regression) -> DETECTIONS N×D×6 (peaks, threshold,
    class-wise NMS; scripted, it stays TorchScript when the maps run in ONNX Runtime)."""

    def __init__(self, score_threshold: float) -> None:
        super().__init__()
        self.score_threshold = float(score_threshold)
        self.max_detections = MAX_DETECTIONS
        self.pre_nms = _PRE_NMS
        self.iou_threshold = _NMS_IOU

    def detect(self, heat: torch.Tensor, reg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return decode(heat, reg, self.score_threshold, self.max_detections, self.pre_nms, self.iou_threshold)

    def forward(self, heat: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
        """DETECTIONS N×D×6 float32: x0, y0, x1, y1, score, class (one tensor, so any
        single-output image model client can call a detector too)."""
        boxes, scores, classes = self.detect(heat, reg)
        return torch.cat([boxes, scores.unsqueeze(-1), classes.to(boxes.dtype).unsqueeze(-1)], dim=-1)


class DetectorExport(nn.Module):
    """What Triton runs: uint8 N×S×S×3 -> DETECTIONS N×D×6 (x0, y0, x1, y1, score, class):
    :class:`DetectorMaps` then :class:`DetectorDecode`."""

    def __init__(self, net: nn.Module, image_size: int, average_flips: bool, score_threshold: float) -> None:
        super().__init__()
        self.encoder = DetectorMaps(net, image_size, average_flips)
        self.decoder = DetectorDecode(score_threshold)

    def maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmap probabilities and regression, flip-averaged when ``average_flips``."""
        return self.encoder(x)

    def detect(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(boxes N×D×4, scores N×D, classes N×D int32), padded (class -1, score 0)."""
        with torch.no_grad():
            heat, reg = self.encoder(x)
            return self.decoder.detect(heat, reg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heat, reg = self.encoder(x)
        return self.decoder(heat, reg)


def _traced_net(net: nn.Module, image_size: int) -> torch.jit.ScriptModule:
    net = net.to("cpu").eval()
    size = int(math.ceil(image_size / 16) * 16)
    with torch.no_grad():
        return torch.jit.trace(net, torch.zeros(1, 3, size, size), check_trace=False)


def script_export(net: nn.Module, image_size: int, average_flips: bool, score_threshold: float) -> torch.jit.ScriptModule:
    """The export as TorchScript: the network traced (EfficientNet's blocks do not script), the
    data-dependent decode/NMS scripted around it."""
    return torch.jit.script(DetectorExport(_traced_net(net, image_size), image_size, average_flips, score_threshold))


def onnx_plan(net: nn.Module, image_size: int, average_flips: bool, score_threshold: float) -> OnnxPlan:
    """What exports to ONNX: the maps (eager, CPU) as HEAT and REG, the decode scripted after them."""
    maps = DetectorMaps(net.to("cpu").eval(), image_size, average_flips).eval()
    return OnnxPlan(maps, ["HEAT", "REG"], torch.jit.script(DetectorDecode(score_threshold)))


# -- data -----------------------------------------------------------------------------------------
def resize_whole(images: list[np.ndarray], size: int) -> np.ndarray:
    """uint8 images of any size -> uint8 N×size×size×3, resized whole (boxes are normalised, so
    they stay valid; a centre crop would cut objects)."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        a = np.asarray(img)
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        a = a[..., :3].astype(np.uint8, copy=False)
        if a.shape[:2] != (size, size):
            a = np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR))
        out[i] = a
    return out


def _check_boxes(split: str, labeled: Any, concepts: list[str]) -> list[list[Box]]:
    if labeled.boxes is None:
        raise InsufficientData(f"visual_detector needs boxes: the {split} split has none")
    if len(labeled.boxes) != len(labeled.images):
        raise TrainingError(f"{split}: {len(labeled.boxes)} box lists for {len(labeled.images)} images")
    known = set(concepts)
    out = []
    for i, objs in enumerate(labeled.boxes):
        row = []
        for b in objs:
            b = Box(*b)
            if b.concept not in known:
                raise TrainingError(f"{split} image {labeled.input_ids[i]}: box concept {b.concept!r} is not a model concept")
            if not (0.0 <= b.x0 < b.x1 <= 1.0 and 0.0 <= b.y0 < b.y1 <= 1.0):
                raise TrainingError(f"{split} image {labeled.input_ids[i]}: box {tuple(b[:4])} is not normalised x0<x1, y0<y1 in [0,1]")
            row.append(b)
        out.append(row)
    return out


def run_detector(export: nn.Module, images: np.ndarray, batch_size: int = 32) -> list[list[Detection]]:
    """Detections per image from an export module (eager or scripted), scores > 0 only."""
    out: list[list[Detection]] = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            packed = export(torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))).numpy()
            b, sc, c = packed[..., :4], packed[..., 4], packed[..., 5].astype(np.int64)
            for bi, si, ci in zip(b, sc, c):
                out.append([Detection(tuple(map(float, bb)), int(cc), float(ss)) for bb, ss, cc in zip(bi, si, ci) if cc >= 0])  # type: ignore[arg-type]
    return out


def evaluate(export: nn.Module, images: np.ndarray, boxes: list[list[Box]], concepts: list[str]) -> dict[str, Any]:
    """mAP@0.5 and per-concept AP of ``export`` on images with true boxes."""
    dets = run_detector(export, images)
    named = [[Detection(d.box, concepts[int(d.concept)], d.score) for d in img] for img in dets]
    res = mean_average_precision(named, boxes, concepts, 0.5)
    res["detections"] = named
    return res


def _metrics(res: dict[str, Any]) -> dict[str, float]:
    out = {"map_50": float(res["map"])}
    for c, ap in res["per_class_ap"].items():
        if not np.isnan(ap):
            out[f"ap_50/{c}"] = float(ap)
    return out


def boxes_png(images: np.ndarray, truth: list[list[Box]], detections: list[list[Detection]], title: str, max_images: int = 8) -> bytes:
    """A grid of scenes: true boxes dashed green, predicted boxes solid red with concept and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = min(max_images, len(images))
    cols = min(4, max(n, 1))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        s = images[i].shape[0]
        ax.imshow(images[i])
        for b in truth[i]:
            ax.add_patch(Rectangle((b.x0 * s, b.y0 * s), (b.x1 - b.x0) * s, (b.y1 - b.y0) * s, fill=False, ec="lime", lw=1.5, ls="--"))
        for d in detections[i]:
            x0, y0, x1, y1 = (v * s for v in d.box)
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="red", lw=1.5))
            ax.text(
                x0, y0 - 1, f"{d.concept} {d.score:.2f}", color="white", fontsize=7, va="bottom", bbox={"facecolor": "red", "alpha": 0.7, "pad": 1, "lw": 0}
            )
    fig.suptitle(f"{title} — dashed green: truth, red: predicted", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    # Noisy scene backgrounds compress badly: a 256-colour palette makes the report ~4× smaller.
    buf.seek(0)
    small = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(256).save(small, format="PNG", optimize=True)
    return small.getvalue()


# -- the template ---------------------------------------------------------------------------------
class VisualDetector:
    name = NAME
    kind = "detector"
    hyperparameters = deep_hyper.applicable(NAME)

    def __init__(self, pretrained: bool = True) -> None:
        self.pretrained = pretrained  # False only in unit tests (random EfficientNet weights)

    def fit(self, ctx: DeepTrainContext) -> DeepTrainResult:
        h = dict(ctx.hyper)
        data = ctx.data
        concepts = list(data.concepts)
        index = {c: i for i, c in enumerate(concepts)}
        if not concepts:
            raise InsufficientData("a detector needs at least one concept")
        if len(data.train) == 0 or len(data.validation) == 0:
            raise InsufficientData("visual_detector needs training and validation images")
        train_boxes = _check_boxes("train", data.train, concepts)
        val_boxes = _check_boxes("validation", data.validation, concepts)
        test_boxes = _check_boxes("test", data.test, concepts) if len(data.test) else []
        if not any(train_boxes):
            raise InsufficientData("visual_detector: no training image has a box")
        size = int(h["image_size"])
        net_size = int(math.ceil(size / 16) * 16)
        grid = net_size // STRIDE
        perclass = bool(h["use_perclass_regression"])
        flips = bool(h["average_horizontal_flips"])
        threshold = float(h["detection_score_threshold"])
        max_grad_norm = float(h["max_grad_norm"])
        device = ctx.device

        t0 = time.perf_counter()
        X_train = resize_whole(data.train.images, size)
        X_val = resize_whole(data.validation.images, size)
        X_test = resize_whole(data.test.images, size) if len(data.test) else None
        prep_seconds = time.perf_counter() - t0

        torch.manual_seed(ctx.seed)
        net = DetectorNet(len(concepts), perclass, str(h.get("architecture", "small_cnn")), pretrained=self.pretrained)
        net = net.to(device=device)
        mult = float(h["base_gradient_multiplier"])
        groups: list[dict[str, Any]] = [{"params": net.head_parameters(), "lr_mult": 1.0}]
        if mult > 0:
            groups.append({"params": net.trunk_parameters(), "lr_mult": mult})
        else:
            for p in net.trunk_parameters():
                p.requires_grad_(False)
        optimizer = torch.optim.AdamW(groups, lr=float(h["lrate"]), weight_decay=float(h.get("weight_decay", 1e-4)))
        export = DetectorExport(net, size, flips, threshold)

        def step(idx: np.ndarray, rng: np.random.Generator) -> float:
            x = torch.from_numpy(X_train[idx])
            objs = [train_boxes[i] for i in idx]
            if flips:  # mirrored scenes with mirrored boxes
                mirror = rng.random(len(idx)) < 0.5
                if mirror.any():
                    x = x.clone()
                    x[torch.from_numpy(mirror)] = torch.flip(x[torch.from_numpy(mirror)], dims=[2])
                    objs = [flip_boxes(o) if m else o for o, m in zip(objs, mirror)]
            heat_t, where, reg_t = build_targets(objs, index, grid)
            xin = x.to(device).permute(0, 3, 1, 2).float()
            if net_size != size:
                xin = F.interpolate(xin, size=[net_size, net_size], mode="bilinear", align_corners=False)
            xin = ((xin - _MEAN) / _SCALE).contiguous()
            logits, reg = net(xin)
            loss = detection_loss(
                logits,
                reg,
                torch.from_numpy(heat_t).to(device),
                torch.from_numpy(where).to(device),
                torch.from_numpy(reg_t).to(device),
                perclass,
            )
            return clip_and_step(optimizer, loss, max_grad_norm)

        def on_device(module: nn.Module) -> nn.Module:
            class _Dev(nn.Module):  # run on ctx.device, return CPU tensors for numpy
                def __init__(self) -> None:
                    super().__init__()
                    self.m = module

                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    return self.m(x.to(device)).cpu()

            return _Dev()

        def validate() -> dict[str, float]:
            return _metrics(evaluate(on_device(export), X_val, val_boxes, concepts))

        t1 = time.perf_counter()
        history = run_epochs(ctx, net, optimizer, len(X_train), step, validate, LoopSettings.from_hyper(h))
        train_seconds = time.perf_counter() - t1

        net.eval()
        t2 = time.perf_counter()
        val = evaluate(on_device(export), X_val, val_boxes, concepts)
        eval_seconds = time.perf_counter() - t2
        test = evaluate(on_device(export), X_test, test_boxes, concepts) if X_test is not None else None
        # The same detector with no score threshold: mAP over the whole ranked list, for reference.
        test_all = None
        if X_test is not None and threshold > 0.01:
            test_all = evaluate(on_device(DetectorExport(net, size, flips, 0.01)), X_test, test_boxes, concepts)
        module = script_export(net, size, flips, threshold)
        onnx = onnx_plan(net, size, flips, threshold)
        artifacts = {}
        if test is not None:
            artifacts["detections_test.png"] = boxes_png(X_test, test_boxes, test["detections"], f"{NAME} — test scenes")
        else:
            artifacts["detections_validation.png"] = boxes_png(X_val, val_boxes, val["detections"], f"{NAME} — validation")

        def summary(res: dict[str, Any] | None) -> dict[str, Any] | None:
            if res is None:
                return None
            return {
                "map_50": res["map"],
                "per_class_ap_50": {c: (None if np.isnan(v) else v) for c, v in res["per_class_ap"].items()},
                "gt_counts": res["gt_counts"],
                "det_counts": res["det_counts"],
            }

        return DeepTrainResult(
            kind="detector",
            module=module,
            onnx=onnx,
            image_size=size,
            outputs=[OutputSpec(OUTPUT_NAME, "TYPE_FP32", [MAX_DETECTIONS, 6])],
            primary_metric="map_50",
            validation=_metrics(val),
            test=_metrics(test) if test is not None else {},
            report={
                "architecture": net.architecture,
                "output_format": "DETECTIONS[k] = x0, y0, x1, y1 (normalised to the image), score, class index; class -1 pads",
                "max_detections": MAX_DETECTIONS,
                "detection_score_threshold": threshold,
                "use_perclass_regression": perclass,
                "average_horizontal_flips": flips,
                "history": [r.__dict__ for r in history],
                "validation": summary(val),
                "test": summary(test),
                "test_no_threshold": summary(test_all),
                "counts": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
            },
            artifacts=artifacts,
            timings={
                "prepare_seconds": prep_seconds,
                "train_seconds": train_seconds,
                "eval_seconds": eval_seconds,
                "epochs": float(len(history)),
                "images_per_second": float(np.mean([r.items_per_second for r in history])) if history else 0.0,
            },
        )


TEMPLATE = VisualDetector()
