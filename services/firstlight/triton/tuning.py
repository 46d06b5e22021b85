"""Serving parameters of the backbone by device, written into a model repository's config.pbtxt.

Measured on the 2-core CPU dev machine (bench/README.md): the forward pass is compute-bound and
batches above 4 are slower *per image* than small ones (memory-bound: 1.4x at 8, 3-6x at 64). On
CPU the backbone runs in ONNX Runtime as one instance per core (up to 4), each with a thread per
core (up to 4) that waits passively: concurrent requests land on different instances, a lone
one gets every core (docs/results/photos.md, issue 17), while on a GPU
one instance takes large batches. ``FIRSTLIGHT_TRITON_*`` settings (config.TritonSettings)
override each choice; the local stack applies them to its runtime copy of the repository, and
``python -m firstlight.triton.tuning --device gpu REPO`` does it for a deployed repository.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from firstlight.config import TritonSettings

BACKBONE = "backbone"
#: Ensembles over the backbone: Triton rejects an ensemble whose max_batch_size exceeds a step's.
ENSEMBLES = ("general",)


@dataclass(frozen=True)
class BackboneTuning:
    kind: str  # "KIND_CPU" | "KIND_GPU"
    instances: int
    torch_threads: int
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    queue_delay_us: int


def detect_device() -> str:
    """ "gpu" when torch sees CUDA (the same test model.py makes), else "cpu"."""
    try:
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - no torch here means no GPU serving either
        return "cpu"


def choose(settings: TritonSettings, cores: int | None = None, device: str | None = None) -> BackboneTuning:
    """The tuning for this host: settings win, device defaults fill the rest."""
    cores = max(1, cores or os.cpu_count() or 1)
    device = device or (detect_device() if settings.triton_device == "auto" else settings.triton_device)
    if device == "gpu":
        instances = settings.triton_instances or 1
        threads = settings.torch_threads or 2  # only pre/post-processing runs on the CPU
        max_batch = settings.triton_max_batch or 64
        preferred = (16, 32, max_batch)
        delay = settings.triton_queue_delay_us if settings.triton_queue_delay_us is not None else 5000
        kind = "KIND_GPU"
    else:
        # ONNX Runtime (the CPU default since issue 17): as many instances as cores (at most 4:
        # each is a stub process holding the weights) with up to 4 intra-op threads each, so a
        # lone request's forward pass can use the cores that are idle (Predict at concurrency 1)
        # while concurrent requests still land on separate instances. Idle threads wait
        # passively (onnx_backbone: no spinning), so oversubscription under load costs CPU, not
        # a burnt core: +0.3-0.7 ms per image in a bare session, +2 ms per photo in Triton
        # during uploads (~3% of the product's CPU; FIRSTLIGHT_TORCH_THREADS=1 gives it back).
        # The torch tuning (cores + 1 single-threaded instances) served Predict at 0.64-0.77x
        # the bare 2-thread session at concurrency 1 (docs/results/photos.md).
        threads = settings.torch_threads or max(1, min(4, cores))
        instances = settings.triton_instances or max(1, min(4, cores))
        # Batches of 4: per image, a batch of 8 costs ~1.4x the CPU of a batch of 2-4 on this
        # CPU (single thread, 224 px: 19-28 ms against 14-15 ms; bench/README.md), the
        # activations of bigger batches no longer fitting in the core's cache.
        max_batch = settings.triton_max_batch or 4
        preferred = (max_batch,)
        # 0.5 ms: below a preferred-size batch Triton holds a request for the whole delay, which
        # a lone request pays in full (2 ms was ~9% of a 22 ms Predict); under load requests
        # queue behind busy instances and batches form without waiting.
        delay = settings.triton_queue_delay_us if settings.triton_queue_delay_us is not None else 500
        kind = "KIND_CPU"
    preferred = tuple(sorted({p for p in preferred if 1 <= p <= max_batch}))
    return BackboneTuning(kind, instances, threads, max_batch, preferred, delay)


def _sub(pattern: str, repl: str, text: str, what: str) -> str:
    new, n = re.subn(pattern, repl, text, count=1, flags=re.MULTILINE)
    if n != 1:
        raise ValueError(f"config.pbtxt: cannot find {what} to tune")
    return new


def tune_backbone_config(text: str, t: BackboneTuning) -> str:
    """Rewrite the tunable fields of backbone/config.pbtxt, keeping everything else (comments too)."""
    text = _sub(r"^max_batch_size:\s*\d+", f"max_batch_size: {t.max_batch_size}", text, "max_batch_size")
    preferred = ", ".join(str(p) for p in t.preferred_batch_sizes)
    batching = f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n  max_queue_delay_microseconds: {t.queue_delay_us}\n}}"
    new, n = re.subn(r"^dynamic_batching\s*\{.*?^\}", lambda _: batching, text, count=1, flags=re.MULTILINE | re.DOTALL)
    if n != 1:
        raise ValueError("config.pbtxt: cannot find dynamic_batching to tune")
    text = new
    text = _sub(r"(instance_group\s*\[\s*\{[^}]*?count:\s*)\d+", rf"\g<1>{t.instances}", text, "instance_group count")
    text = _sub(r"(instance_group\s*\[\s*\{[^}]*?kind:\s*)KIND_\w+", rf"\g<1>{t.kind}", text, "instance_group kind")
    new, n = re.subn(
        r'(key:\s*"FIRSTLIGHT_TORCH_THREADS"[^}]*?string_value:\s*")\d+(")',
        rf"\g<1>{t.torch_threads}\g<2>",
        text,
        count=1,
        flags=re.DOTALL,
    )
    if n != 1:
        raise ValueError("config.pbtxt: cannot find the FIRSTLIGHT_TORCH_THREADS parameter to tune")
    return new


def tune_repository(repository: Path, t: BackboneTuning) -> None:
    """Apply ``t`` to ``repository``'s backbone and cap its ensembles' batch size to match."""
    path = repository / BACKBONE / "config.pbtxt"
    path.write_text(tune_backbone_config(path.read_text(), t))
    for name in ENSEMBLES:
        cfg = repository / name / "config.pbtxt"
        if cfg.exists():
            cfg.write_text(_sub(r"^max_batch_size:\s*\d+", f"max_batch_size: {t.max_batch_size}", cfg.read_text(), "max_batch_size"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firstlight.triton.tuning", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repository", type=Path, help="model repository holding backbone/ (edited in place)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None, help="default: FIRSTLIGHT_TRITON_DEVICE or auto")
    p.add_argument("--cores", type=int, default=None, help="CPU cores Triton may use (default: this host's)")
    args = p.parse_args(argv)
    settings = TritonSettings()
    device = None if args.device in (None, "auto") else args.device
    t = choose(settings, cores=args.cores, device=device)
    tune_repository(args.repository, t)
    print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
