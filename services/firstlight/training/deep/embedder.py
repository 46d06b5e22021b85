"""The ``visual_embedder`` template: metric learning on the packaged EfficientNet-Lite0 backbone.

A projection head (Linear 1280 → ``embedding_dim``) on the backbone's pooled features is trained
with ArcFace (default: additive angular margin on a normalised class-weight matrix) or a triplet
loss with batch-hard mining (``loss="triplet"``) on class-balanced batches. The output is an
L2-normalised embedding N×D, so it can replace the base model as an app's embedding model.

``base_gradient_multiplier`` scales the backbone's learning rate; 0 freezes it, and then the
backbone's features are computed once (both flips) and only the head trains — seconds on a CPU.
BatchNorm statistics of the backbone always stay frozen (fine-tuning with small batches would
otherwise wreck them). ``average_horizontal_flips`` makes the exported module (and the validation
embeddings) average the backbone features of an image and its mirror before the head.

Validation: ``oneshot_accuracy`` (the mean over fixed-seed episodes of 1 random training image per
concept as the support, every validation image a query, nearest prototype by cosine) and
``knn_accuracy`` (1-NN of each validation image among all the training images) measure the
training concepts. An embedder is for concepts it never saw, and those two move *against* that
(bench/embedder_oneshot.py: the settings that separate the training concepts best lose most on new
ones). So with a frozen backbone and at least 4 concepts the template also runs a *new-concept
probe*: the same recipe trained again (seconds, on the cached features) without a quarter of the
concepts, then one-shot on those left-out concepts — ``new_concept_oneshot_accuracy``, the primary
metric versions are promoted by, beside ``base_new_concept_oneshot_accuracy``, the base backbone's
on the same concepts (a version worth switching to beats it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from firstlight.models import backbone as bb
from firstlight.models.preprocess import to_model_input
from firstlight.training.deep import hyper as deep_hyper
from firstlight.training.deep.context import DeepTrainContext, DeepTrainResult, EpochReport, LabeledImages, OutputSpec
from firstlight.training.deep.loop import lr_factor
from firstlight.training.hyper import SettingSpec

NAME = "visual_embedder"
LOSSES = ("arcface", "triplet")
PRIMARY_METRIC = "new_concept_oneshot_accuracy"  # when the probe runs; else FALLBACK_METRIC
FALLBACK_METRIC = "oneshot_accuracy"
PROBE_MIN_CONCEPTS = 4  # leaves ≥ 2 concepts to train on and ≥ 2 to test one-shot on

# The embedder's own settings, and shared ones with an embedder-specific default. Why these
# defaults (bench/embedder_oneshot.py, 4 held-out animal-mnist concepts): a projection trained from
# scratch with ArcFace or triplet separates the training concepts (one-shot 0.95) but LOSES on new
# concepts (0.49-0.55 vs 0.64 for the base embedding), while the within-class whitening of the
# training concepts (WCCN) gains +8 points there; a low learning rate then fine-tunes from it
# without undoing that. AdamW: metric heads trained far better with it than with SGD here. Frozen
# backbone: a CPU trains the head on cached features in seconds (partial unfreezing did not help).
HEAD_INITS = ("wccn", "random")
deep_hyper.register_template(
    NAME,
    (
        SettingSpec("loss", "choice", "arcface", "metric-learning loss: ArcFace (additive angular margin) or triplet with batch-hard mining", choices=LOSSES),
        SettingSpec("embedding_dim", "int", 256, "dimension of the L2-normalised output embedding (projection head width)", 2, 1280),
        SettingSpec(
            "head_init",
            "choice",
            "wccn",
            "projection head start: within-class covariance normalisation of the training concepts' features (then PCA to embedding_dim), or random",
            choices=HEAD_INITS,
        ),
        SettingSpec(
            "wccn_shrinkage",
            "float",
            0.9,
            "shrinkage of the within-class covariance towards a scaled identity (1: plain centring + PCA)",
            0.0,
            1.0,
        ),
        SettingSpec("num_epochs", "int", 5, "training epochs", 1, 1000),
        SettingSpec("lrate", "float", 1e-4, "base learning rate of the projection head (AdamW)", 1e-7, 10.0),
        SettingSpec(
            "base_gradient_multiplier",
            "float",
            0.0,
            "learning-rate multiplier of the backbone relative to the head (0 freezes it: features are computed once)",
            0.0,
            10.0,
        ),
    ),
)
#: Defaults from the registry, used when a context's hyperparameters lack a key (in-memory tests).
DEFAULTS: dict[str, Any] = {k: s.default for k, s in deep_hyper.template_specs(NAME).items()}
HYPERPARAMETERS = deep_hyper.applicable(NAME)

ARCFACE_SCALE = 16.0  # logits = s·cos; 16 rather than the face-recognition 64: few classes here
ARCFACE_MARGIN = 0.3  # additive angular margin (radians) on the true class
TRIPLET_MARGIN = 0.2  # on cosine distance
EVAL_EPISODES = 50
_FEATURE_BATCH = 32


def setting(hyper: Mapping[str, Any], key: str) -> Any:
    value = hyper.get(key)
    return DEFAULTS[key] if value is None else value


def base_lrate(hyper: Mapping[str, Any]) -> float:
    """``per_item_lrate`` × batch, else ``per_128_lrate`` × batch / 128, else ``lrate``."""
    bs = int(setting(hyper, "batch_size"))
    if hyper.get("per_item_lrate") is not None:
        return float(hyper["per_item_lrate"]) * bs
    if hyper.get("per_128_lrate") is not None:
        return float(hyper["per_128_lrate"]) * bs / 128
    return float(setting(hyper, "lrate"))


def lrate_at(hyper: Mapping[str, Any], epoch: int) -> float:
    """Step schedule (epoch is 1-based): the base rate until ``init_epochs``, then ×0.1 at it and
    every ``step_epochs`` after."""
    return base_lrate(hyper) * lr_factor(epoch, int(setting(hyper, "init_epochs")), int(setting(hyper, "step_epochs")))


# -- the network ----------------------------------------------------------------------------------
class EmbedderNet(nn.Module):
    """Backbone → pooled features → (flip average) → Linear → L2 normalise."""

    def __init__(self, backbone: nn.Module, dim: int, average_flips: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(bb.EMBEDDING_DIM, dim)
        self.average_flips = average_flips

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float NCHW → pooled features [N,1280] (flip-averaged if configured)."""
        f = self.backbone.extract_features(x).mean(dim=(2, 3))
        if self.average_flips:
            f = 0.5 * (f + self.backbone.extract_features(torch.flip(x, dims=[3])).mean(dim=(2, 3)))
        return f

    def project(self, feats: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(feats), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))


class ExportedEmbedder(nn.Module):
    """What Triton serves: uint8 N×S×S×3 (the pixels the services send) → (embeddings N×D,)."""

    def __init__(self, net: EmbedderNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float().sub(127.0).div(128.0)
        return (self.net(x.contiguous(memory_format=torch.channels_last)),)


def to_pixels(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """uint8 RGB (any size, or H×W greyscale) → uint8 [N,size,size,3] with the backbone's geometry."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = to_model_input(Image.fromarray(np.asarray(img, dtype=np.uint8)), size)
    return out


def _normalise(pixels: np.ndarray, device: str) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).permute(0, 3, 1, 2).float()
    return x.sub_(127.0).div_(128.0).contiguous(memory_format=torch.channels_last)


def backbone_features(backbone: nn.Module, pixels: np.ndarray, device: str, flip: bool = False) -> torch.Tensor:
    """Pooled features [N,1280] of uint8 pixels, in small batches (large ones are slower on CPU)."""
    outs = []
    with torch.inference_mode():
        for s in range(0, len(pixels), _FEATURE_BATCH):
            x = _normalise(pixels[s : s + _FEATURE_BATCH], device)
            if flip:
                x = torch.flip(x, dims=[3])
            outs.append(backbone.extract_features(x).mean(dim=(2, 3)).float().cpu())
    return torch.cat(outs) if outs else torch.zeros((0, bb.EMBEDDING_DIM))


def embed_pixels(net: EmbedderNet, pixels: np.ndarray, device: str) -> np.ndarray:
    net.eval()
    outs = []
    with torch.inference_mode():
        for s in range(0, len(pixels), _FEATURE_BATCH):
            outs.append(net(_normalise(pixels[s : s + _FEATURE_BATCH], device)).cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, net.head.out_features), np.float32)


def freeze_batchnorm(module: nn.Module) -> None:
    """BN layers in eval mode with frozen affine parameters (call after every ``.train()``)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def wccn_projection(feats: np.ndarray, y: np.ndarray, dim: int, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """(P [F, dim], mean [F]) with ``(f - mean) @ P`` the embedding before normalisation: whiten
    the within-class covariance of the training concepts (shrunk towards a scaled identity:
    ``(1-s)·Cw + s·tr(Cw)/F·I``, so it is invertible with few images), then keep the ``dim``
    principal directions of the whitened features. Directions in which images of one concept
    vary (pose, stroke, position) shrink; directions that tell concepts apart grow — and that
    carries over to concepts not in training far better than a trained projection does."""
    x = feats.astype(np.float64)
    mean = x.mean(axis=0)
    cw = np.zeros((x.shape[1], x.shape[1]))
    for c in np.unique(y):
        xc = x[y == c] - x[y == c].mean(axis=0)
        cw += xc.T @ xc
    cw /= len(x)
    s = (1.0 - shrinkage) * cw + shrinkage * np.trace(cw) / cw.shape[0] * np.eye(cw.shape[0])
    lam, u = np.linalg.eigh(s)
    w = u / np.sqrt(np.maximum(lam, 1e-12))
    z = (x - mean) @ w
    lz, uz = np.linalg.eigh(np.cov(z.T))
    keep = np.argsort(lz)[::-1][: min(dim, x.shape[1])]
    return (w @ uz[:, keep]).astype(np.float32), mean.astype(np.float32)


def init_head(net: EmbedderNet, criterion: nn.Module | None, feats: torch.Tensor, y: np.ndarray, shrinkage: float) -> None:
    """WCCN start for the projection head (and ArcFace's class weights at the class centres, so
    the first steps refine the space instead of tearing it apart)."""
    p, mean = wccn_projection(feats.numpy(), y, net.head.out_features, shrinkage)
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.weight[: p.shape[1]] = torch.from_numpy(p.T)
        net.head.bias[: p.shape[1]] = torch.from_numpy(-(mean @ p))
        if isinstance(criterion, ArcFace):
            emb = net.project(feats.to(net.head.weight.device))
            yt = torch.from_numpy(y).to(emb.device)
            for c in range(criterion.weight.shape[0]):
                if (yt == c).any():
                    criterion.weight[c] = F.normalize(emb[yt == c].mean(dim=0), dim=0)


# -- losses ---------------------------------------------------------------------------------------
class ArcFace(nn.Module):
    """Additive angular margin: logits = s·cos(θ_y + m) for the true class, s·cos θ_j otherwise."""

    def __init__(self, dim: int, num_classes: int, scale: float = ARCFACE_SCALE, margin: float = ARCFACE_MARGIN) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cos = emb @ F.normalize(self.weight, dim=1).T
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = torch.cos(theta + self.margin)
        # Past π - m, cos(θ+m) would increase again: fall back to the CosFace-style penalty there.
        target = torch.where(theta + self.margin < math.pi, target, cos - self.margin * math.sin(self.margin))
        onehot = F.one_hot(y, cos.shape[1]).bool()
        return F.cross_entropy(self.scale * torch.where(onehot, target, cos), y)


def batch_hard_triplet(emb: torch.Tensor, y: torch.Tensor, margin: float = TRIPLET_MARGIN) -> torch.Tensor:
    """Per anchor: the farthest positive and the nearest negative in the batch (cosine distance)."""
    dist = 1.0 - emb @ emb.T
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool, device=emb.device)
    pos = torch.where(same & ~eye, dist, torch.full_like(dist, -1.0)).max(dim=1).values
    neg = torch.where(~same, dist, torch.full_like(dist, 4.0)).min(dim=1).values
    valid = (pos >= 0) & (neg < 4.0)  # anchors with at least one positive and one negative
    if not valid.any():
        return emb.sum() * 0.0
    return F.relu(pos - neg + margin)[valid].mean()


# -- evaluation -----------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def oneshot_accuracy(
    emb: np.ndarray,
    y: np.ndarray,
    shots: int = 1,
    episodes: int = EVAL_EPISODES,
    seed: int = 0,
    queries: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """Mean accuracy over episodes of nearest-prototype classification: each episode draws
    ``shots`` random support images per class from ``emb``/``y`` (prototype = normalised mean).
    Queries: the class's other images (classes with more than ``shots`` images), or, when
    ``queries`` = (embeddings, labels) is given, all of those (e.g. support from the training split,
    queries from the validation split: defined even with one validation image per class)."""
    rng = np.random.default_rng(seed)
    emb = _unit(emb)
    if queries is None:
        classes = [c for c in np.unique(y) if (y == c).sum() > shots]
    else:
        q_emb, q_y = _unit(queries[0]), np.asarray(queries[1])
        classes = [c for c in np.unique(y) if (y == c).sum() >= shots]
        keep = np.isin(q_y, classes)
        q_emb, q_y = q_emb[keep], q_y[keep]
        if len(q_y) == 0:
            return float("nan")
    if len(classes) < 2:
        return float("nan")
    accs = []
    for _ in range(episodes):
        protos, rest, truth = [], [], []
        for k, c in enumerate(classes):
            idx = rng.permutation(np.flatnonzero(y == c))
            protos.append(_unit(emb[idx[:shots]].mean(axis=0)))
            rest.append(idx[shots:])
            truth += [k] * (len(idx) - shots)
        if queries is None:
            pred = (emb[np.concatenate(rest)] @ np.stack(protos).T).argmax(axis=1)
            accs.append(float((pred == np.array(truth)).mean()))
        else:
            pred = np.asarray(classes)[(q_emb @ np.stack(protos).T).argmax(axis=1)]
            accs.append(float((pred == q_y).mean()))
    return float(np.mean(accs))


def knn_accuracy(train_emb: np.ndarray, train_y: np.ndarray, emb: np.ndarray, y: np.ndarray) -> float:
    if len(emb) == 0 or len(train_emb) == 0:
        return float("nan")
    nearest = (emb @ train_emb.T).argmax(axis=1)
    return float((train_y[nearest] == y).mean())


def _metrics(train_emb: np.ndarray, train_y: np.ndarray, emb: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float]:
    """One-shot: 1 training image per concept as the support, every image of the split a query."""
    out = {
        "oneshot_accuracy": oneshot_accuracy(train_emb, train_y, seed=seed, queries=(emb, y)),
        "knn_accuracy": knn_accuracy(train_emb, train_y, emb, y),
    }
    return {k: v for k, v in out.items() if not math.isnan(v)}


def new_concept_probe(
    hyper: Mapping[str, Any],
    feats: torch.Tensor,
    feats_flip: torch.Tensor,
    train_eval_feats: torch.Tensor,
    val_feats: torch.Tensor,
    y_train: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    device: str,
    check: Any = lambda: None,
) -> dict[str, float]:
    """One-shot accuracy on concepts the head never saw (see the module doc): train the same
    recipe (init, loss, schedule, batches) on the cached backbone features of all but ⌈K/4⌉ (≥ 2)
    concepts, then nearest-prototype episodes on the left-out ones — support from their training
    images, queries their validation images. Also the base backbone's accuracy on those episodes."""
    classes = np.unique(y_train)
    if len(classes) < PROBE_MIN_CONCEPTS:
        return {}
    rng = np.random.default_rng([seed, 7])
    held = rng.choice(classes, size=max(2, math.ceil(len(classes) / 4)), replace=False)
    fit, held_val = ~np.isin(y_train, held), np.isin(y_val, held)
    if not held_val.any():
        return {}
    torch.manual_seed(seed + 7)  # the probe's own head init; it runs after the main fit, so this seeds nothing else
    remap = {c: i for i, c in enumerate(np.unique(y_train[fit]))}
    y_fit = np.array([remap[c] for c in y_train[fit]], dtype=np.int64)
    dim = int(setting(hyper, "embedding_dim"))
    net = EmbedderNet(nn.Identity(), dim, average_flips=False).to(device)
    criterion: nn.Module | None = ArcFace(dim, len(remap)).to(device) if setting(hyper, "loss") == "arcface" else None
    f_fit, f_flip_fit = feats[fit], feats_flip[fit]
    if setting(hyper, "head_init") == "wccn":
        init_head(net, criterion, torch.cat([f_fit, f_flip_fit]), np.concatenate([y_fit, y_fit]), float(setting(hyper, "wccn_shrinkage")))
    params = list(net.head.parameters()) + (list(criterion.parameters()) if criterion else [])
    optimizer = torch.optim.AdamW(params, lr=base_lrate(hyper), weight_decay=1e-4)
    bs, num_items = int(setting(hyper, "batch_size")), int(setting(hyper, "num_items_per_epoch")) or len(y_fit)
    net.train()
    for epoch in range(1, int(setting(hyper, "num_epochs")) + 1):
        for g in optimizer.param_groups:
            g["lr"] = lrate_at(hyper, epoch)
        for idx in balanced_batches(y_fit, bs, num_items, rng):
            check()
            flips = torch.from_numpy(rng.random(len(idx)) < 0.5)[:, None]
            _head_step(net, criterion, optimizer, torch.where(flips, f_flip_fit[idx], f_fit[idx]).to(device), torch.from_numpy(y_fit[idx]).to(device))
    net.eval()
    support_f, support_y = train_eval_feats[~fit], y_train[~fit]
    query_f, query_y = val_feats[held_val], y_val[held_val]
    with torch.inference_mode():
        support, query = net.project(support_f.to(device)).cpu().numpy(), net.project(query_f.to(device)).cpu().numpy()
    out = {
        PRIMARY_METRIC: oneshot_accuracy(support, support_y, seed=seed, queries=(query, query_y)),
        "base_" + PRIMARY_METRIC: oneshot_accuracy(support_f.numpy(), support_y, seed=seed, queries=(query_f.numpy(), query_y)),
    }
    return {k: v for k, v in out.items() if not math.isnan(v)}


def _head_step(net: EmbedderNet, criterion: nn.Module | None, optimizer: torch.optim.Optimizer, f: torch.Tensor, yb: torch.Tensor) -> float:
    """One optimisation step of the projection head (and ArcFace's class weights) on features."""
    emb = net.project(f)
    loss = criterion(emb, yb) if criterion is not None else batch_hard_triplet(emb, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# -- sampling -------------------------------------------------------------------------------------
def balanced_batches(y: np.ndarray, batch_size: int, num_items: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of P classes × K images (K = 4 or fewer), so every anchor of a triplet batch has
    positives and negatives and ArcFace sees the classes evenly."""
    classes = np.unique(y)
    by_class = {c: np.flatnonzero(y == c) for c in classes}
    p = min(len(classes), max(2, batch_size // 4))
    k = max(2, batch_size // p)
    batches: list[np.ndarray] = []
    for _ in range(max(1, math.ceil(num_items / batch_size))):
        chosen = rng.choice(classes, size=p, replace=False)
        idx = np.concatenate([rng.choice(by_class[c], size=k, replace=len(by_class[c]) < k) for c in chosen])
        batches.append(idx)
    return batches


# -- the template ---------------------------------------------------------------------------------
def _single_labels(split: LabeledImages, concepts: list[str], what: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(concepts)}
    out = []
    for i, labels in enumerate(split.labels):
        known = [index[c] for c in labels if c in index]
        if not known:
            raise ValueError(f"{what} image {split.input_ids[i]!r} has none of the concepts")
        out.append(known[0])  # metric learning needs one class per image: the first one listed
    return np.asarray(out, dtype=np.int64)


@dataclass
class VisualEmbedder:
    name: str = NAME
    kind: str = "embedder"
    hyperparameters: tuple[str, ...] = HYPERPARAMETERS

    def fit(self, ctx: DeepTrainContext) -> DeepTrainResult:
        hyper = ctx.hyper
        device = ctx.device
        torch.manual_seed(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        loss_name = str(setting(hyper, "loss"))
        if loss_name not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss_name!r}")
        dim = int(setting(hyper, "embedding_dim"))
        size = int(setting(hyper, "image_size"))
        bs = int(setting(hyper, "batch_size"))
        epochs = int(setting(hyper, "num_epochs"))
        test_freq = max(1, int(setting(hyper, "test_freq")))
        multiplier = float(setting(hyper, "base_gradient_multiplier"))
        average_flips = bool(setting(hyper, "average_horizontal_flips"))
        frozen = multiplier == 0.0
        concepts = list(ctx.data.concepts)
        y_train = _single_labels(ctx.data.train, concepts, "training")
        y_val = _single_labels(ctx.data.validation, concepts, "validation")
        y_test = _single_labels(ctx.data.test, concepts, "test") if len(ctx.data.test) else np.zeros(0, np.int64)
        if len(np.unique(y_train)) < 2:
            raise ValueError("metric learning needs training images of at least two concepts")
        num_items = int(setting(hyper, "num_items_per_epoch")) or len(y_train)

        started = time.perf_counter()
        net = EmbedderNet(bb.load_efficientnet(device), dim, average_flips).to(device)
        net.head.to(memory_format=torch.contiguous_format)
        criterion: nn.Module | None = ArcFace(dim, len(concepts)).to(device) if loss_name == "arcface" else None
        x_train = to_pixels(ctx.data.train.images, size)
        x_val = to_pixels(ctx.data.validation.images, size)
        x_test = to_pixels(ctx.data.test.images, size)

        if frozen:
            for p in net.backbone.parameters():
                p.requires_grad_(False)
            # Features of every training image and its mirror, once: the head trains on them.
            feats = backbone_features(net.backbone, x_train, device)
            feats_flip = backbone_features(net.backbone, x_train, device, flip=True)
            val_feats = self._eval_features(net, x_val, device)
            train_eval_feats = 0.5 * (feats + feats_flip) if average_flips else feats
        if setting(hyper, "head_init") == "wccn":
            if frozen:
                init_feats = torch.cat([feats, feats_flip])
            else:  # the pretrained backbone's features, once, for the start
                init_feats = torch.cat([backbone_features(net.backbone, x_train, device), backbone_features(net.backbone, x_train, device, flip=True)])
            init_head(net, criterion, init_feats, np.concatenate([y_train, y_train]), float(setting(hyper, "wccn_shrinkage")))
        head_params = list(net.head.parameters()) + (list(criterion.parameters()) if criterion else [])
        groups = [{"params": head_params, "lr_scale": 1.0}]
        if not frozen:
            groups.append({"params": [p for n, p in net.backbone.named_parameters() if p.requires_grad and "_bn" not in n], "lr_scale": multiplier})
        optimizer = torch.optim.AdamW(groups, lr=base_lrate(hyper), weight_decay=1e-4)

        history: list[dict[str, Any]] = []
        first_epoch = 1
        state = ctx.load_checkpoint()
        if state is not None:
            net.load_state_dict(state["net"])
            if criterion is not None and state.get("criterion") is not None:
                criterion.load_state_dict(state["criterion"])
            optimizer.load_state_dict(state["optimizer"])
            history = list(state["history"])
            first_epoch = int(state["epoch"]) + 1
            rng = np.random.default_rng([ctx.seed, first_epoch])

        validation: dict[str, float] = {}
        for epoch in range(first_epoch, epochs + 1):
            t0 = time.perf_counter()
            lr = lrate_at(hyper, epoch)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            net.train()
            freeze_batchnorm(net.backbone)
            if frozen:
                net.backbone.eval()
            losses = []
            seen = 0
            for idx in balanced_batches(y_train, bs, num_items, rng):
                ctx.check_cancelled()
                yb = torch.from_numpy(y_train[idx]).to(device)
                flips = rng.random(len(idx)) < 0.5  # mirror half the images: augmentation
                if frozen:
                    f = torch.where(torch.from_numpy(flips)[:, None], feats_flip[idx], feats[idx]).to(device)
                else:
                    x = _normalise(x_train[idx], device)
                    x = torch.where(torch.from_numpy(flips).to(device)[:, None, None, None], torch.flip(x, dims=[3]), x)
                    f = net.backbone.extract_features(x.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))
                losses.append(_head_step(net, criterion, optimizer, f, yb))
                seen += len(idx)
            metrics: dict[str, float] = {}
            if epoch % test_freq == 0 or epoch == epochs:
                if frozen:
                    with torch.inference_mode():
                        tr = net.project(train_eval_feats.to(device)).cpu().numpy()
                        va = net.project(val_feats.to(device)).cpu().numpy()
                else:
                    tr, va = embed_pixels(net, x_train, device), embed_pixels(net, x_val, device)
                metrics = _metrics(tr, y_train, va, y_val, ctx.seed)
                validation = metrics
            seconds = time.perf_counter() - t0
            row = EpochReport(epoch, epochs, float(np.mean(losses)) if losses else 0.0, lr, seen / max(seconds, 1e-9), seconds, metrics)
            ctx.report(row)
            history.append({"epoch": epoch, "loss": row.loss, "lrate": lr, **{f"val_{k}": v for k, v in metrics.items()}})
            ctx.save_checkpoint(
                {
                    "net": net.state_dict(),
                    "criterion": criterion.state_dict() if criterion is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "history": history,
                }
            )
        train_seconds = time.perf_counter() - started

        net.eval()
        if frozen:  # the backbone did not change: project the cached features
            with torch.inference_mode():
                tr = net.project(train_eval_feats.to(device)).cpu().numpy()
                va = net.project(val_feats.to(device)).cpu().numpy()
                te = net.project(self._eval_features(net, x_test, device).to(device)).cpu().numpy() if len(x_test) else None
        else:
            tr, va = embed_pixels(net, x_train, device), embed_pixels(net, x_val, device)
            te = embed_pixels(net, x_test, device) if len(x_test) else None
        if not validation:  # resumed after the last epoch, or no epochs: measure now
            validation = _metrics(tr, y_train, va, y_val, ctx.seed)
        probe_started = time.perf_counter()
        if frozen:
            validation = {**validation, **new_concept_probe(
                hyper, feats, feats_flip, train_eval_feats, val_feats, y_train, y_val, ctx.seed, device, ctx.check_cancelled,
            )}  # fmt: skip
        probe_seconds = time.perf_counter() - probe_started
        test = _metrics(tr, y_train, te, y_test, ctx.seed) if te is not None else {}
        module = ExportedEmbedder(net.to("cpu")).eval()
        return DeepTrainResult(
            kind="embedder",
            module=module,
            image_size=size,
            outputs=[OutputSpec("embeddings", "TYPE_FP32", [dim])],
            primary_metric=PRIMARY_METRIC if PRIMARY_METRIC in validation else FALLBACK_METRIC,
            validation=validation,
            test=test,
            report={"history": history, "loss": loss_name, "embedding_dim": dim, "frozen_backbone": frozen, "head_init": setting(hyper, "head_init")},
            timings={
                "train_seconds": train_seconds,
                "probe_seconds": probe_seconds,
                "images_per_second": len(y_train) * max(1, epochs - first_epoch + 1) / max(train_seconds, 1e-9),
            },
        )

    @staticmethod
    def _eval_features(net: EmbedderNet, pixels: np.ndarray, device: str) -> torch.Tensor:
        f = backbone_features(net.backbone, pixels, device)
        if net.average_flips:
            f = 0.5 * (f + backbone_features(net.backbone, pixels, device, flip=True))
        return f


TEMPLATE = VisualEmbedder()
