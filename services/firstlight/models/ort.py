"""ONNX Runtime sessions as every Firstlight graph runs them on CPU (the backbone, deep templates).

fp32, all graph optimisations, ``threads`` intra-op threads, sequential execution. ``spin`` lets
idle threads spin-wait between operators: lower latency on a dedicated host, a burnt core on a
shared one (off by default, like OMP_WAIT_POLICY=PASSIVE for the torch stubs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(model: Path | bytes, threads: int = 1, spin: bool = False) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider (``model``: a file or its bytes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
