"""Explanations of a classifier built on the backbone: Grad-CAM on the backbone's last feature
map, and the faithfulness check the issue asks for.

For a head on the stored embedding (``logits = W · normalize(mean_hw(F)) + b``, F the last
feature map [1280, h, w]) the head is differentiable through the pooling, so Grad-CAM is the
usual: channel weights = spatial mean of ∂logit/∂F, map = ReLU(Σ_c weight_c · F_c), upsampled
bilinearly to the input and scaled to [0, 1]. Runs on the torch modules (whatever serves).

Faithfulness: masking the most salient ``fraction`` of the image (set to the normalisation's
zero, gray 127) should lower the predicted concept's probability much more than masking the
same area chosen at random. Both masks are made of the same cells (``grid`` × ``grid``), since
scattered random pixels (salt-and-pepper over the whole image) are a different, much harsher
perturbation than a blob of the same area, and Grad-CAM's map is as coarse as the feature map.
"""

from __future__ import annotations

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


def gradcam(
    model: torch.nn.Module, W: np.ndarray, b: np.ndarray, batch_uint8: np.ndarray, target: np.ndarray | None = None, objective: str = "logit"
) -> tuple[np.ndarray, np.ndarray]:
    """(saliency [N, H, W] float32 in [0, 1], target concept index per image: the given one or
    the predicted one)."""
    device = next(model.parameters()).device
    x = _prep(batch_uint8, device)
    with torch.enable_grad():
        fmap, logits = head_logits(model, W, b, x)
        fmap.retain_grad()
        t = torch.as_tensor(target if target is not None else logits.argmax(1).detach().cpu().numpy(), device=device)
        out = logits if objective == "logit" else torch.log_softmax(logits, 1)
        out.gather(1, t[:, None]).sum().backward()
        weights = fmap.grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * fmap).sum(1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=batch_uint8.shape[1:3], mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).min(1).values[:, None, None]
    hi = cam.flatten(1).max(1).values[:, None, None]
    cam = (cam - lo) / (hi - lo).clamp_min(1e-12)
    model.zero_grad(set_to_none=True)
    return cam.cpu().numpy().astype(np.float32), t.cpu().numpy()


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


def faithfulness(
    model: torch.nn.Module,
    W: np.ndarray,
    b: np.ndarray,
    batch_uint8: np.ndarray,
    fraction: float = 0.2,
    seed: int = 0,
    chunk: int = 8,
    grid: int = 0,
    mean_fill: bool = True,
    objective: str = "logit",
) -> Faithfulness:
    """``grid`` 0: mask single pixels (top-salient vs uniformly random pixels)."""
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    drops_s, drops_r = [], []
    for s in range(0, len(batch_uint8), chunk):
        imgs = batch_uint8[s : s + chunk]
        sal, target = gradcam(model, W, b, imgs, objective=objective)
        n_px = sal[0].size
        k = round(fraction * n_px)
        masked_s = imgs.copy()
        masked_r = imgs.copy()
        H, Wd = sal.shape[1:]
        # masked area takes the image's mean colour (gray 127 is foreign to e.g. silhouettes on black)
        fill = imgs.reshape(len(imgs), -1, 3).mean(1).astype(np.uint8) if mean_fill else np.full((len(imgs), 3), 127, np.uint8)
        for i in range(len(imgs)):
            if grid:
                cells = sal[i][: H // grid * grid, : Wd // grid * grid].reshape(grid, H // grid, grid, Wd // grid).mean((1, 3)).ravel()
                kc = round(fraction * grid * grid)
                for m, chosen in ((masked_s, np.argsort(-cells)[:kc]), (masked_r, rng.choice(grid * grid, kc, replace=False))):
                    for c in chosen:
                        y, x = divmod(int(c), grid)
                        m[i, y * H // grid : (y + 1) * H // grid, x * Wd // grid : (x + 1) * Wd // grid] = fill[i]
                continue
            top = np.argpartition(-sal[i].ravel(), k)[:k]
            rnd = rng.choice(n_px, k, replace=False)
            for m, idx in ((masked_s, top), (masked_r, rnd)):
                flat = m[i].reshape(-1, 3)
                flat[idx] = fill[i]
        with torch.inference_mode():
            probs = []
            for arr in (imgs, masked_s, masked_r):
                _, z = head_logits(model, W, b, _prep(arr, device))
                probs.append(torch.softmax(z, 1).gather(1, torch.as_tensor(target, device=device)[:, None])[:, 0].cpu().numpy())
        drops_s += list(probs[0] - probs[1])
        drops_r += list(probs[0] - probs[2])
    ds, dr = float(np.mean(drops_s)), float(np.mean(drops_r))
    return Faithfulness(len(drops_s), ds, dr, ds / dr if dr > 0 else float("inf"))
