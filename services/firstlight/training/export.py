"""Export a trained head to a Triton model repository: one Triton model per app model, one
numeric version folder per trained version (``version_policy: all`` keeps every version
servable, so Predict can pin one). The same folder layout works for the local tritonserver
and for a Triton deployment reading the repository from a volume."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from firstlight.config import REPO_ROOT
from firstlight.fsmodes import shared_dir_mode

HEAD_TEMPLATE = REPO_ROOT / "deploy" / "triton" / "templates" / "head" / "model.py"

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 256
input [ {{ name: "EMBEDDING" data_type: TYPE_FP32 dims: [ {dim} ] }} ]
output [ {{ name: "PROBS" data_type: TYPE_FP32 dims: [ -1 ] }} ]
version_policy: {{ all {{ }} }}
dynamic_batching {{ max_queue_delay_microseconds: 1000 }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


def triton_model_name(app_id: str, model_id: str) -> str:
    """Triton names allow letters, digits, '_', '-', '.': app and model ids already fit."""
    name = f"fl.{app_id}.{model_id}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"cannot make a Triton model name from {app_id!r}/{model_id!r}")
    return name


def export_head(
    repository: Path,
    app_id: str,
    model_id: str,
    version: int,
    W: np.ndarray,
    b: np.ndarray,
    activation: str,
    concepts: list[str],
    normalize: bool = False,
) -> str:
    """Write ``repository/<name>/<version>/`` atomically and return the Triton model name."""
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"unknown activation {activation!r}")
    name = triton_model_name(app_id, model_id)
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    config = model_dir / "config.pbtxt"
    if not config.exists():
        config.write_text(CONFIG.format(name=name, dim=W.shape[1]))
    # Build the version folder beside its final place, then rename: Triton never sees half of it.
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=".v"))
    np.savez(
        tmp / "weights.npz",
        W=W.astype(np.float32),
        b=b.astype(np.float32),
        activation=np.array(activation),
        normalize=np.array(normalize),
    )
    (tmp / "concepts.json").write_text(json.dumps(concepts))
    shutil.copyfile(HEAD_TEMPLATE, tmp / "model.py")
    os.chmod(tmp, shared_dir_mode())  # mkdtemp made it 0700; Triton reads it (0755, or 0700 in the local stack)
    final = model_dir / str(version)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return name
