"""Explanations of a classifier built on the backbone: Grad-CAM on the backbone's last feature
map, and the faithfulness check the issue asks for.

For a head on the stored embedding (``logits = W · normalize(mean_hw(F)) + b``, F the last
feature map [1280, h, w]) the head is differentiable through the pooling, so Grad-CAM is the
usual: channel weights = spatial mean of ∂logit/∂F, map = ReLU(Σ_c weight_c · F_c), upsampled
bilinearly to the input and scaled to [0, 1]. Runs on the torch modules (whatever serves).

Faithfulness: masking the most salient ``fraction`` of the image should lower the predicted
concept's probability much more than masking the same number of pixels chosen at random (the
random drop averaged over draws). Both masks take the same fill, by default the image blurred
(a masked area loses its detail but adds no edges of its own, as a flat colour would). The
random pixels can be scattered, a random smooth region shaped like the salient one, or — with
``grid`` — random cells against the top cells: scattered pixels (salt-and-pepper over the whole
image) are a different, much harsher perturbation than a region of the same area, and the map
is as coarse as the feature map. Defaults (Grad-CAM++, blur) are the principled best measured in
docs/results/data_quality.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_MEAN, _SCALE = 127.0, 128.0


def _prep(batch_uint8: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(batch_uint8)).to(device)
    return x.permute(0, 3, 1, 2).float().sub(_MEAN).div(_SCALE).contiguous(memory_format=torch.channels_last)


def head_logits(model: torch.nn.Module, W: np.ndarray, b: np.ndarray, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(feature map [N, C, h, w], logits [N, K]) of a linear head on the L2-normalised pooled embedding."""
    fmap = model.extract_features(x)
    emb = F.normalize(fmap.mean(dim=(2, 3)), dim=1)
    Wt = torch.as_tensor(W, dtype=torch.float32, device=x.device)
    bt = torch.as_tensor(b, dtype=torch.float32, device=x.device)
    return fmap, emb @ Wt.T + bt


def _cams(fmap: torch.Tensor, W: np.ndarray, b: np.ndarray, target: torch.Tensor, objective: str, variant: str) -> torch.Tensor:
    """Raw (un-upsampled, un-scaled) maps [N, h, w] of ``target`` per row of ``fmap``. The map
    only needs ∂logit/∂F, so the backward pass runs through the pooling and the head alone:
    ``fmap`` is a detached leaf (no gradient through the backbone, its parameters untouched,
    hence safe to run from several threads)."""
    Wt = torch.as_tensor(W, dtype=torch.float32, device=fmap.device)
    bt = torch.as_tensor(b, dtype=torch.float32, device=fmap.device)
    return cams_through(fmap, lambda leaf: F.normalize(leaf.mean(dim=(2, 3)), dim=1) @ Wt.T + bt, target, objective, variant)


def cams_through(
    fmap: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, objective: str = "logit", variant: str = "gradcam++"
) -> torch.Tensor:
    """Raw maps [N, h, w] of ``target`` through any differentiable ``head`` (feature map ->
    logits): a linear head on the pooled embedding, or a deep classifier's own pooling and head."""
    if variant not in ("gradcam", "gradcam++"):
        raise ValueError(f"unknown Grad-CAM variant {variant!r}")
    with torch.enable_grad():
        leaf = fmap.detach().requires_grad_(True)
        logits = head(leaf)
        out = logits if objective == "logit" else torch.log_softmax(logits, 1)
        (g,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), leaf)
    fm = fmap.detach()
    if variant == "gradcam":
        weights = g.mean(dim=(2, 3), keepdim=True)
    else:
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + fm.sum(dim=(2, 3), keepdim=True) * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        weights = (alpha * F.relu(g)).sum(dim=(2, 3), keepdim=True)
    return F.relu((weights * fm).sum(1))


def _scaled(cam: torch.Tensor) -> torch.Tensor:
    """Each map [N, h, w] scaled to [0, 1] (a flat map stays 0)."""
    lo = cam.flatten(1).min(1).values[:, None, None]
    hi = cam.flatten(1).max(1).values[:, None, None]
    return (cam - lo) / (hi - lo).clamp_min(1e-12)


def gradcam(
    model: torch.nn.Module,
    W: np.ndarray,
    b: np.ndarray,
    batch_uint8: np.ndarray,
    target: np.ndarray | None = None,
    objective: str = "logit",
    variant: str = "gradcam++",
) -> tuple[np.ndarray, np.ndarray]:
    """(saliency [N, H, W] float32 in [0, 1], target concept index per image: the given one or
    the predicted one). ``variant`` "gradcam++": channel weights from the positive gradients only,
    each location weighted by Grad-CAM++'s closed-form alpha (Chattopadhay et al. 2018, with the
    exponential-output identity), so one strong object part is not averaged away by the rest."""
    if variant not in ("gradcam", "gradcam++"):
        raise ValueError(f"unknown Grad-CAM variant {variant!r}")
    device = next(model.parameters()).device
    with torch.no_grad():
        fmap, logits = head_logits(model, W, b, _prep(batch_uint8, device))
    t = torch.as_tensor(target if target is not None else logits.argmax(1).cpu().numpy(), device=device)
    cam = _cams(fmap, W, b, t, objective, variant)[:, None]
    cam = F.interpolate(cam, size=batch_uint8.shape[1:3], mode="bilinear", align_corners=False)[:, 0]
    return _scaled(cam).cpu().numpy().astype(np.float32), t.cpu().numpy()


@dataclass(frozen=True)
class ImageExplanation:
    """One image through a head: its probabilities, its embedding, and the raw map (the feature
    map's grid, scaled to [0, 1]) of each of its top concepts."""

    proba: np.ndarray  # [K]
    embedding: np.ndarray  # [D], L2-normalised: the stored embeddings' space
    top: list[int]  # concept indices, highest probability first
    maps: np.ndarray  # [len(top), h, w] float32


def explain_image(
    model: torch.nn.Module, W: np.ndarray, b: np.ndarray, image_uint8: np.ndarray, top_k: int, activation: str = "softmax", variant: str = "gradcam++"
) -> ImageExplanation:
    """One forward pass through the backbone, then one cheap backward through the head per
    concept of the ``top_k`` most probable (``activation``: "softmax" or "sigmoid")."""
    device = next(model.parameters()).device
    with torch.no_grad():
        fmap, logits = head_logits(model, W, b, _prep(np.array(image_uint8[None]), device))  # a copy: PIL arrays are read-only
        emb = F.normalize(fmap.mean(dim=(2, 3)), dim=1)[0]
        proba = torch.sigmoid(logits[0]) if activation == "sigmoid" else torch.softmax(logits[0], 0)
    k = max(1, min(top_k, len(proba)))
    top = [int(i) for i in torch.argsort(proba, descending=True)[:k]]
    cams = _cams(fmap.expand(k, -1, -1, -1), W, b, torch.as_tensor(top, device=device), "logit", variant)
    return ImageExplanation(proba.cpu().numpy().astype(np.float32), emb.cpu().numpy().astype(np.float32), top, _scaled(cams).cpu().numpy().astype(np.float32))


def embedding(model: torch.nn.Module, image_uint8: np.ndarray) -> np.ndarray:
    """The backbone's L2-normalised embedding of one image (the stored embeddings' space)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        fmap = model.extract_features(_prep(np.array(image_uint8[None]), device))
        return F.normalize(fmap.mean(dim=(2, 3)), dim=1)[0].cpu().numpy().astype(np.float32)


def explain_deep(
    module: torch.jit.ScriptModule, image_uint8: np.ndarray, top_k: int, activation: str = "softmax", variant: str = "gradcam++"
) -> ImageExplanation:
    """:func:`explain_image` for a deep classifier split in two (training's GetDeepExplainer:
    ``module`` pixels -> last feature map, ``module.head`` feature map -> logits). Its
    ``embedding`` is empty: the network has no backbone embedding of its own."""
    with torch.no_grad():
        fmap = module(torch.from_numpy(np.array(image_uint8[None])))  # a copy: PIL arrays are read-only
        logits = module.head(fmap)
        proba = torch.sigmoid(logits[0]) if activation == "sigmoid" else torch.softmax(logits[0], 0)
    k = max(1, min(top_k, len(proba)))
    top = [int(i) for i in torch.argsort(proba, descending=True)[:k]]
    cams = cams_through(fmap.expand(k, -1, -1, -1), module.head, torch.as_tensor(top), "logit", variant)
    return ImageExplanation(proba.numpy().astype(np.float32), np.zeros(0, np.float32), top, _scaled(cams).numpy().astype(np.float32))


def overlay_png(image_uint8: np.ndarray, saliency: np.ndarray, alpha: float = 0.5) -> bytes:
    """The saliency map over the image (red = salient) as PNG bytes."""
    import io

    from PIL import Image

    heat = np.zeros_like(image_uint8, dtype=np.float32)
    heat[..., 0] = 255 * saliency
    heat[..., 2] = 255 * (1 - saliency)
    out = (1 - alpha) * image_uint8.astype(np.float32) + alpha * heat
    buf = io.BytesIO()
    Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Faithfulness:
    n: int
    drop_salient: float  # mean drop of the predicted concept's probability, top-salient pixels masked
    drop_random: float  # the same with random pixels masked
    ratio: float


def _fills(imgs: np.ndarray, fill: str) -> np.ndarray:
    """What a masked pixel becomes, per image and pixel [N, H, W, 3]: the image's mean colour,
    or the image blurred (Gaussian, σ = 1/28 of the side: a masked area keeps its coarse colour
    and loses its detail, so the mask adds no edges of its own)."""
    if fill == "mean":
        return np.broadcast_to(imgs.reshape(len(imgs), -1, 3).mean(1).astype(np.uint8)[:, None, None], imgs.shape).copy()
    if fill == "blur":
        from PIL import Image, ImageFilter

        r = max(1.0, imgs.shape[1] / 28)
        return np.stack([np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(r))) for a in imgs])
    raise ValueError(f"unknown fill {fill!r}")


def _random_pixels(rng: np.random.Generator, H: int, Wd: int, k: int, smooth: bool) -> np.ndarray:
    if not smooth:
        return rng.choice(H * Wd, k, replace=False)
    r = torch.from_numpy(rng.random((1, 1, max(1, H // 32), max(1, Wd // 32)), dtype=np.float32))
    up = F.interpolate(r, size=(H, Wd), mode="bilinear", align_corners=False)[0, 0].numpy().ravel()
    return np.argpartition(-up, k)[:k]


def _prob(model: torch.nn.Module, W: np.ndarray, b: np.ndarray, arr: np.ndarray, target: torch.Tensor) -> np.ndarray:
    _, z = head_logits(model, W, b, _prep(arr, target.device))
    return torch.softmax(z, 1).gather(1, target)[:, 0].cpu().numpy()


def faithfulness(
    model: torch.nn.Module,
    W: np.ndarray,
    b: np.ndarray,
    batch_uint8: np.ndarray,
    fraction: float = 0.2,
    seed: int = 0,
    chunk: int = 8,
    grid: int = 0,
    fill: str = "blur",
    objective: str = "logit",
    variant: str = "gradcam++",
    draws: int = 5,
    smooth_random: bool = False,
) -> Faithfulness:
    """``grid`` 0: the top ``fraction`` of pixels of the bilinearly upsampled map (a smooth
    region) vs ``draws`` draws of the same number of uniformly random pixels (their drops
    averaged); ``grid`` g: the top cells of a g×g grid vs random cells. Both masks take the same
    ``fill``. ``smooth_random`` (``grid`` 0): the random pixels are instead the top ``fraction``
    of a random map at the feature map's resolution (1/32 of the side) upsampled the same way, so
    the random mask has the salient mask's count *and* shape statistics, at a random place."""
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    drops_s, drops_r = [], []
    for s in range(0, len(batch_uint8), chunk):
        imgs = batch_uint8[s : s + chunk]
        sal, target = gradcam(model, W, b, imgs, objective=objective, variant=variant)
        n_px = sal[0].size
        k = round(fraction * n_px)
        H, Wd = sal.shape[1:]
        fills = _fills(imgs, fill)
        masked_s = imgs.copy()
        masked_r = [imgs.copy() for _ in range(draws)]
        for i in range(len(imgs)):
            if grid:
                cells = sal[i][: H // grid * grid, : Wd // grid * grid].reshape(grid, H // grid, grid, Wd // grid).mean((1, 3)).ravel()
                kc = round(fraction * grid * grid)
                chosen = [(masked_s, np.argsort(-cells)[:kc])] + [(m, rng.choice(grid * grid, kc, replace=False)) for m in masked_r]
                for m, cs in chosen:
                    for c in cs:
                        y, x = divmod(int(c), grid)
                        sl = (i, slice(y * H // grid, (y + 1) * H // grid), slice(x * Wd // grid, (x + 1) * Wd // grid))
                        m[sl] = fills[sl]
                continue
            top = np.argpartition(-sal[i].ravel(), k)[:k]
            for m, idx in [(masked_s, top)] + [(m, _random_pixels(rng, H, Wd, k, smooth_random)) for m in masked_r]:
                m[i].reshape(-1, 3)[idx] = fills[i].reshape(-1, 3)[idx]
        with torch.inference_mode():
            tt = torch.as_tensor(target, device=device)[:, None]
            p0, ps = _prob(model, W, b, imgs, tt), _prob(model, W, b, masked_s, tt)
            pr = np.mean([_prob(model, W, b, m, tt) for m in masked_r], axis=0)
        drops_s += list(p0 - ps)
        drops_r += list(p0 - pr)
    ds, dr = float(np.mean(drops_s)), float(np.mean(drops_r))
    return Faithfulness(len(drops_s), ds, dr, ds / dr if dr > 0 else float("inf"))
