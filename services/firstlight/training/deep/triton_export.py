"""Export a deep template's trained module to the Triton model repository.

Layout (the same ``fl.<app>.<model>`` naming and one numeric folder per version as the heads in
:mod:`firstlight.training.export`, so Predict can pin a version)::

    <repository>/fl.<app>.<model>/
        config.pbtxt            # Python backend, dynamic batching, IMAGE uint8 [-1,-1,3] in
        config.pytorch.pbtxt    # the same model for a production (NGC) Triton's libtorch backend
        <version>/model.pt      # TorchScript: uint8 N×S×S×3 -> outputs (normalisation inside)
        <version>/model.onnx    # the same in ONNX (the detector: its maps), when it exports cleanly
        <version>/decode.pt     # detector only: TorchScript decode/NMS after the ONNX maps
        <version>/model.py      # Python-backend runner: ONNX Runtime on CPU, model.pt on GPU
        <version>/meta.json     # kind, image size, outputs, concepts, the ONNX graph's outputs

Image and output dimensions are left variable (-1) in the config so versions trained at different
``image_size`` (or embedding sizes) live under one Triton model. The embedded tritonserver only
bundles the Python backend; an NGC Triton can serve ``model.pt`` natively by swapping
``config.pytorch.pbtxt`` in for ``config.pbtxt`` (its libtorch backend names tensors
``<NAME>__<index>``). Versions exported before ``model.onnx`` existed keep their own model.py and
are served by TorchScript as before (firstlight.models.deep_runtime).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from firstlight.config import REPO_ROOT
from firstlight.fsmodes import shared_dir_mode
from firstlight.models.ort import OPSET
from firstlight.training.deep.context import DeepTrainResult
from firstlight.training.deep.onnx_export import export_graph
from firstlight.training.export import triton_model_name

DEEP_TEMPLATE = REPO_ROOT / "deploy" / "triton" / "templates" / "deep" / "model.py"
ONNX_FILE = "model.onnx"
POSTPROCESS_FILE = "decode.pt"
MAX_BATCH_SIZE = 64

_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: {max_batch}
input [ {{ name: "IMAGE" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] }} ]
output [
{outputs}
]
version_policy: {{ all {{ }} }}
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
# No instance kind: Triton puts the instance on a GPU when it has one (model.py runs model.pt on
# CUDA there), else on CPU (model.onnx in ONNX Runtime when the version has it, else model.pt).
instance_group [ {{ count: 1 }} ]
"""

_PYTORCH_CONFIG = """# Production variant for an NGC Triton image (tritonserver with the libtorch backend): rename to
# config.pbtxt there. It serves the same <version>/model.pt without Python; clients name tensors
# IMAGE__0 and {first_output}__0 (the libtorch backend's <name>__<index> convention).
name: "{name}"
backend: "pytorch"
max_batch_size: {max_batch}
input [ {{ name: "IMAGE__0" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] }} ]
output [
{outputs}
]
version_policy: {{ all {{ }} }}
dynamic_batching {{ preferred_batch_size: [ 16, 32, 64 ] max_queue_delay_microseconds: 2000 }}
instance_group [ {{ kind: KIND_GPU count: 1 }} ]
"""


def _output_lines(result: DeepTrainResult, suffix: str = "") -> str:
    return ",\n".join(
        f'  {{ name: "{o.name}{suffix.format(i=i)}" data_type: {o.dtype} dims: [ {", ".join("-1" for _ in o.dims)} ] }}' for i, o in enumerate(result.outputs)
    )


def to_torchscript(module: torch.nn.Module, image_size: int) -> torch.jit.ScriptModule:
    """Trace the eval-mode CPU module on a uint8 batch (tracing handles third-party layers that
    scripting rejects); the traced graph keeps the batch dimension dynamic."""
    module = module.eval().to("cpu")
    example = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8)
    with torch.inference_mode():
        traced = torch.jit.trace(module, example, check_trace=False)
        ref, got = module(example), traced(example)
    ref_t = ref if isinstance(ref, (tuple, list)) else (ref,)
    got_t = got if isinstance(got, (tuple, list)) else (got,)
    for a, b in zip(ref_t, got_t):
        if not torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-3):
            raise RuntimeError("the traced module disagrees with the eager one (data-dependent control flow?)")
    return traced


def export_deep(repository: Path, app_id: str, model_id: str, version: int, result: DeepTrainResult, concepts: list[str], onnx: bool = True) -> str:
    """Write ``repository/<name>/<version>/`` atomically (built beside, then renamed) and the
    model's configs; return the Triton model name. ``onnx=False`` writes TorchScript only (what
    versions exported before ONNX look like)."""
    name = triton_model_name(app_id, model_id)
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    traced = to_torchscript(result.module, result.image_size)
    graph = export_graph(result) if onnx else None
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=".v"))
    torch.jit.save(traced, str(tmp / "model.pt"))
    shutil.copyfile(DEEP_TEMPLATE, tmp / "model.py")
    meta: dict = {
        "kind": result.kind,
        "image_size": result.image_size,
        "outputs": [{"name": o.name, "dtype": o.dtype, "dims": o.dims} for o in result.outputs],
        "concepts": concepts,
        "primary_metric": result.primary_metric,
    }
    if graph is not None:
        (tmp / ONNX_FILE).write_bytes(graph.model)
        if graph.postprocess is not None:
            torch.jit.save(graph.postprocess, str(tmp / POSTPROCESS_FILE))
        meta["onnx"] = {
            "file": ONNX_FILE,
            "opset": OPSET,
            "outputs": graph.outputs,
            "postprocess": POSTPROCESS_FILE if graph.postprocess is not None else None,
            "max_abs_diff": graph.max_abs_diff,  # against torch on a random batch, at export
        }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    os.chmod(tmp, shared_dir_mode())  # mkdtemp made it 0700; Triton reads it (0755, or 0700 in the local stack)
    final = model_dir / str(version)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    (model_dir / "config.pbtxt").write_text(_CONFIG.format(name=name, max_batch=MAX_BATCH_SIZE, outputs=_output_lines(result)))
    (model_dir / "config.pytorch.pbtxt").write_text(
        _PYTORCH_CONFIG.format(name=name, max_batch=MAX_BATCH_SIZE, outputs=_output_lines(result, "__{i}"), first_output=result.outputs[0].name)
    )
    return name


def load_exported(repository: Path, triton_model: str, version: int | str) -> tuple[torch.jit.ScriptModule, dict]:
    """The TorchScript module and meta of an exported version (evaluation in-process, tests)."""
    folder = repository / triton_model / str(version)
    meta = json.loads((folder / "meta.json").read_text())
    return torch.jit.load(str(folder / "model.pt"), map_location="cpu").eval(), meta


def run_exported(module: torch.jit.ScriptModule, pixels: np.ndarray, batch_size: int = 64) -> list[np.ndarray]:
    """Outputs of an exported module over uint8 N×S×S×3 pixels, batched, as numpy arrays."""
    outs: list[list[np.ndarray]] = []
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            y = module(torch.from_numpy(np.ascontiguousarray(pixels[start : start + batch_size])))
            y = y if isinstance(y, (tuple, list)) else (y,)
            outs.append([t.float().numpy() for t in y])
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))] if outs else []
