"""ONNX Runtime sessions as every Firstlight graph runs them on CPU (the backbone, deep templates),
and the one way those graphs are exported from torch.

fp32, all graph optimisations, ``threads`` intra-op threads, sequential execution. ``spin`` lets
idle threads spin-wait between operators: lower latency on a dedicated host, a burnt core on a
shared one (off by default, like OMP_WAIT_POLICY=PASSIVE for the torch stubs).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

#: Every graph's opset and input name: uint8 images [batch, S, S, 3] named IMAGE.
OPSET = 17
INPUT = "IMAGE"


def export_image_graph(module: Any, image_size: int, output_names: list[str]) -> bytes:
    """``module`` (eval mode, CPU; uint8 [batch, S, S, 3] -> outputs) as an ONNX graph with a
    dynamic batch axis, by torch's legacy TorchScript exporter (which needs the ``onnx`` package)."""
    import torch

    example = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8)
    buf = io.BytesIO()
    with torch.inference_mode():
        torch.onnx.export(
            module,
            (example,),
            buf,
            dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=output_names,
            dynamic_axes={INPUT: {0: "batch"}, **{name: {0: "batch"} for name in output_names}},
            do_constant_folding=True,
        )
    return buf.getvalue()


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
