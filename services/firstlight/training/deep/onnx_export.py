"""ONNX export of a deep version, so CPU Triton instances serve it in ONNX Runtime
(firstlight.models.deep_runtime; 3-4.5x torch on the backbone, docs/results/photos.md).

The graph is the exported module itself (uint8 N×S×S×3 in, normalisation and flip averaging
inside) or, when that has data-dependent control flow (the detector's NMS), the template's
:class:`~firstlight.training.deep.context.OnnxPlan`: a forward graph plus a TorchScript
postprocess. torch's legacy (TorchScript) exporter at opset 17, the batch axis dynamic. Before a
graph ships, ONNX Runtime must reproduce torch on a fresh batch within ``TOLERANCE``; a graph
that fails to export or to agree is left out and the version is served by TorchScript only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from firstlight.models.ort import INPUT, cpu_session, export_image_graph
from firstlight.training.deep.context import DeepTrainResult, OnnxPlan

log = logging.getLogger(__name__)

#: Largest |ORT - torch| accepted at export (outputs are probabilities, unit embeddings, heatmaps
#: and box regressions of a few units); measured figures are ~1e-6 (meta.json "max_abs_diff").
TOLERANCE = 1e-4


@dataclass
class OnnxGraph:
    model: bytes
    outputs: list[str]
    postprocess: Any  # TorchScript module or None
    max_abs_diff: float


def plan_of(result: DeepTrainResult) -> OnnxPlan:
    """The template's plan, or the whole exported module with the served output names."""
    return result.onnx or OnnxPlan(result.module, [o.name for o in result.outputs])


def to_onnx(forward: torch.nn.Module, image_size: int, output_names: list[str]) -> bytes:
    """The eval-mode CPU ``forward`` as an ONNX graph: IMAGE uint8 [batch, S, S, 3] -> outputs."""
    return export_image_graph(forward.eval().to("cpu"), image_size, output_names)


def max_abs_diff(forward: torch.nn.Module, model: bytes, output_names: list[str], pixels: np.ndarray) -> float:
    """Largest |ONNX Runtime - torch| over every output for ``pixels`` (the same input tensor)."""
    session = cpu_session(model, threads=1)
    got = session.run(output_names, {INPUT: np.ascontiguousarray(pixels)})
    with torch.inference_mode():
        ref = forward(torch.from_numpy(np.ascontiguousarray(pixels)))
    ref_t = ref if isinstance(ref, (tuple, list)) else (ref,)
    if len(ref_t) != len(got):
        raise RuntimeError(f"the graph has {len(got)} outputs, torch {len(ref_t)}")
    diffs = []
    for a, b in zip(ref_t, got):
        a_np = a.float().numpy()
        if a_np.shape != b.shape:
            raise RuntimeError(f"output shape {b.shape} in ONNX Runtime, {a_np.shape} in torch")
        diffs.append(float(np.abs(a_np - b.astype(np.float32)).max()) if a_np.size else 0.0)
    return max(diffs)


def export_graph(result: DeepTrainResult, seed: int = 0) -> OnnxGraph | None:
    """The checked graph of ``result``, or None (logged) when it does not export or agree: the
    version is then served by TorchScript alone."""
    plan = plan_of(result)
    size = result.image_size
    try:
        model = to_onnx(plan.forward, size, plan.output_names)
        # 3 images: another batch size than the export example's 2 checks the dynamic axis.
        pixels = np.random.default_rng(seed).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
        diff = max_abs_diff(plan.forward, model, plan.output_names, pixels)
    except Exception as exc:  # noqa: BLE001 - an exporter gap must not fail the training job
        log.warning("%s: no ONNX graph (%s: %s); the version is served by TorchScript", result.kind, type(exc).__name__, exc)
        return None
    if not diff <= TOLERANCE:
        log.warning("%s: ONNX Runtime differs from torch by %.3g (> %g); the version is served by TorchScript", result.kind, diff, TOLERANCE)
        return None
    return OnnxGraph(model, list(plan.output_names), plan.postprocess, diff)
