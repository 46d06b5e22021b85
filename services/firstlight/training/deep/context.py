"""The contract between the training service and a deep template (``visual_classifier``,
``visual_embedder``, ``visual_detector``).

The service fetches the dataset's images, validates the hyperparameters, and hands a template a
:class:`DeepTrainContext`; the template runs its torch loop and returns a :class:`DeepTrainResult`.
The service then evaluates/promotes on ``result.validation[result.primary_metric]``, exports
``result.module`` (TorchScript, and ONNX for ONNX Runtime) to the Triton model repository, records the version and announces it
on ``model.version.ready``. Templates import no grpc, kafka or tritonclient: they are pure torch and
numpy, unit-testable with in-memory data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from firstlight.training.ports import JobCancelled  # noqa: F401 - templates raise it; the core records CANCELLED

Kind = Literal["classifier", "embedder", "detector"]


class TrainingDiverged(Exception):
    """The loss diverged (or did not fall) at every learning rate the loop's guard tried: the job
    fails with this message instead of serving a model that learned nothing."""


class Box(NamedTuple):
    """One labeled object: corners normalised to [0, 1] of the image's width/height (so they survive
    any resize of the whole image), and its concept."""

    x0: float
    y0: float
    x1: float
    y1: float
    concept: str


@dataclass
class LabeledImages:
    """Decoded images of one split. ``images[i]`` is uint8 RGB, H×W×3, any size: templates resize to
    their ``image_size`` with :func:`firstlight.models.preprocess.to_model_input`."""

    input_ids: list[str]
    images: list[np.ndarray]
    labels: list[list[str]]  # concepts per image (one for mutually exclusive sets)
    # Detection only: the objects of each image (index-aligned with ``images``); None when the
    # dataset has no boxes. ``labels[i]`` is then the set of concepts among ``boxes[i]``.
    boxes: list[list[Box]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DeepData:
    concepts: list[str]  # the model's concepts, in output order
    train: LabeledImages
    validation: LabeledImages
    test: LabeledImages


@dataclass
class EpochReport:
    """One row of the progress stream (gRPC StreamTrainingProgress and the Kafka progress topic)."""

    epoch: int  # 1-based
    num_epochs: int
    loss: float
    lrate: float  # the learning rate used in this epoch (after the step schedule)
    items_per_second: float
    seconds: float  # wall time of this epoch
    metrics: dict[str, float] = field(default_factory=dict)  # validation metrics: only on test_freq epochs
    note: str = ""  # what the loop did besides training (e.g. a restart at a lower rate), for people


class DeepTrainContext(Protocol):
    data: DeepData
    hyper: Mapping[str, Any]  # validated hyperparameters of this template (defaults filled in)
    device: str  # "cuda" when a GPU exists, else "cpu": templates move modules/batches there
    work_dir: Path  # per-job folder that survives a service restart (checkpoints, artifacts)
    seed: int

    def report(self, row: EpochReport) -> None:
        """Record progress; the service streams it and estimates the ETA."""

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled: call it between batches."""

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Persist ``state`` (model/optimizer/scheduler state dicts, epoch, rng, history) after an
        epoch; written atomically under ``work_dir``."""

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last saved state when this job is resuming after a restart, else None."""


@dataclass
class OutputSpec:
    name: str
    dtype: str  # Triton data type, e.g. "TYPE_FP32"
    dims: list[int]  # without the batch dimension; -1 for variable


@dataclass
class OnnxPlan:
    """How a template's export runs in ONNX Runtime when ``module`` itself does not export
    (data-dependent control flow): ``forward`` (eager, CPU, uint8 N×S×S×3 -> tensors named
    ``output_names``) becomes the ONNX graph and ``postprocess`` (TorchScript, or None) maps
    those tensors to the served outputs, in torch after the ORT session."""

    forward: Any
    output_names: list[str]
    postprocess: Any = None


@dataclass
class DeepTrainResult:
    kind: Kind
    # Eval-mode module on CPU whose forward takes a uint8 tensor N×S×S×3 (S = image_size, the same
    # pixels Triton receives; normalisation happens inside) and returns a tuple of tensors in the
    # order of ``outputs``. It must be scriptable with torch.jit.script or traceable.
    module: Any
    image_size: int
    outputs: list[OutputSpec]
    primary_metric: str  # key of ``validation`` used for promotion (higher is better)
    validation: dict[str, float]
    test: dict[str, float]
    report: dict[str, Any] = field(default_factory=dict)  # JSON-able: curves, per-class figures, history
    artifacts: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes (PNG plots, Markdown)
    timings: dict[str, float] = field(default_factory=dict)  # e.g. train_seconds, images_per_second
    # ONNX export of a ``module`` that does not trace to ONNX whole (the detector's NMS); None:
    # ``module`` itself is exported, its outputs named as ``outputs``.
    onnx: OnnxPlan | None = None


class DeepTemplate(Protocol):
    name: str
    kind: Kind
    hyperparameters: tuple[str, ...]  # names from the shared registry that apply to this template

    def fit(self, ctx: DeepTrainContext) -> DeepTrainResult: ...


ProgressCallback = Callable[[EpochReport], None]
