"""The pieces every deep template's torch loop shares.

- :func:`lr_factor` — the step schedule: the base rate for ``init_epochs`` epochs, then ×0.1 every
  ``step_epochs`` epochs.
- :func:`epoch_order` / :func:`batches` — which training items an epoch visits: one shuffled pass,
  or ``num_items_per_epoch`` items drawn by cycling through fresh shuffles (so an epoch can be
  shorter or longer than the training set); split into ``batch_size`` batches.
- :func:`random_hflip` (training augmentation) and :func:`predict` (evaluation in batches on the
  device, optionally averaging each image's prediction with its mirror's:
  ``average_horizontal_flips``).
- :func:`run_epochs` — the epoch loop: schedule, cancel checks between batches, validation every
  ``test_freq`` epochs and at the last, one progress row per epoch, a checkpoint (model, optimizer,
  epoch, RNG states, history) after every epoch, and resume from the last checkpoint.
- :class:`LocalContext` — an in-process :class:`DeepTrainContext` (scripts, tests; the service
  subclasses it to stream progress and persist checkpoints under its data dir).
- :func:`prepare_images` — decode-free resizing of a split to a uint8 N×S×S×3 array.
"""

from __future__ import annotations

import copy
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from firstlight.models.preprocess import to_model_input
from firstlight.training.deep.context import DeepData, EpochReport, JobCancelled, TrainingDiverged

CHECKPOINT_NAME = "checkpoint.pt"


def default_device() -> str:
    """cuda when a GPU is visible, else cpu: the same code runs on both."""
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- schedule -------------------------------------------------------------------------------------
def lr_factor(epoch: int, init_epochs: int, step_epochs: int) -> float:
    """Multiplier of the base learning rate in 1-based ``epoch``: 1 for epochs 1..init_epochs, then
    0.1 for the next ``step_epochs`` epochs, 0.01 for the next, ..."""
    if epoch <= init_epochs:
        return 1.0
    steps = 1 + (epoch - init_epochs - 1) // max(1, step_epochs)
    return 0.1**steps


def set_lr(optimizer: torch.optim.Optimizer, lrate: float) -> None:
    """Each param group's rate is ``lrate × group['lr_mult']`` (the backbone's group carries
    base_gradient_multiplier, the head's 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lrate * float(group.get("lr_mult", 1.0))


# -- sampling ---------------------------------------------------------------------------------------
def epoch_order(n: int, num_items_per_epoch: int, rng: np.random.Generator) -> np.ndarray:
    """Indices an epoch visits: a permutation of ``range(n)`` when ``num_items_per_epoch`` is 0,
    else that many indices made of successive fresh permutations (every item is seen before any is
    repeated)."""
    if n <= 0:
        raise ValueError("no training items")
    count = n if num_items_per_epoch <= 0 else num_items_per_epoch
    parts, have = [], 0
    while have < count:
        perm = rng.permutation(n)
        parts.append(perm)
        have += n
    return np.concatenate(parts)[:count]


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def num_batches(n: int, num_items_per_epoch: int, batch_size: int) -> int:
    count = n if num_items_per_epoch <= 0 else num_items_per_epoch
    return -(-count // batch_size)


# -- augmentation and prediction --------------------------------------------------------------------
def hflip_nhwc(x: torch.Tensor) -> torch.Tensor:
    """Mirror a N×H×W×C batch left-right."""
    return torch.flip(x, dims=[2])


def random_hflip(x: torch.Tensor, rng: np.random.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image of a N×H×W×C batch with probability ``p`` (training augmentation)."""
    mask = torch.from_numpy(rng.random(x.shape[0]) < p).to(x.device)
    if not bool(mask.any()):
        return x
    out = x.clone()
    out[mask] = hflip_nhwc(x[mask])
    return out


def predict(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray,
    *,
    batch_size: int,
    device: str,
    average_flips: bool = False,
) -> np.ndarray:
    """``fn`` over uint8 N×S×S×3 ``images`` in batches on ``device`` (no grad) -> float32 numpy.
    With ``average_flips`` the output is the mean of ``fn(x)`` and ``fn(mirror(x))``."""
    outs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            y = fn(x)
            if average_flips:
                y = (y + fn(hflip_nhwc(x))) / 2
            outs.append(y.float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def prepare_images(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """uint8 RGB images of any size -> uint8 N×size×size×3 (resize shorter side, center crop)."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        out[i] = to_model_input(Image.fromarray(arr.astype(np.uint8, copy=False)), size)
    return out


# -- the loop -------------------------------------------------------------------------------------
@dataclass
class LoopSettings:
    num_epochs: int
    batch_size: int
    lrate: float
    init_epochs: int
    step_epochs: int
    test_freq: int
    num_items_per_epoch: int = 0
    warmup_epochs: int = 0
    divergence_retries: int = 0
    # The loss of the best constant prediction, for the guard's "stuck at chance" check (None: off,
    # for losses without such a level).
    chance_loss: float | None = None
    # Filled in by run_epochs: why each restart at a lower rate happened.
    restarts: list[str] = field(default_factory=list)

    @classmethod
    def from_hyper(cls, h: Mapping[str, Any], *, chance_loss: float | None = None) -> LoopSettings:
        return cls(
            num_epochs=int(h["num_epochs"]),
            batch_size=int(h["batch_size"]),
            lrate=float(h["lrate"]),
            init_epochs=int(h["init_epochs"]),
            step_epochs=int(h["step_epochs"]),
            test_freq=int(h["test_freq"]),
            num_items_per_epoch=int(h.get("num_items_per_epoch", 0) or 0),
            warmup_epochs=int(h.get("warmup_epochs", 0) or 0),
            divergence_retries=int(h.get("divergence_retries", 0) or 0),
            chance_loss=chance_loss,
        )


def is_test_epoch(epoch: int, num_epochs: int, test_freq: int) -> bool:
    return epoch % test_freq == 0 or epoch == num_epochs


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the learning rate at 0-based optimisation ``step``: a linear ramp
    1/W, 2/W, ..., 1 over the first ``warmup_steps`` steps, then 1."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def clip_and_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float) -> float:
    """Backward, clip the global gradient norm to ``max_grad_norm`` (0: no clipping), step.
    Returns the loss as a float."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    return float(loss.detach())


class DivergenceGuard:
    """Tells a diverging run from a learning one, from the losses alone (pure; unit-tested).

    The reference is the run's first batch loss, computed before any step. A run has diverged when
    a loss is not finite, when an epoch's mean loss is above ``blowup`` × that start, or, given the
    loss of the best constant prediction (``chance_loss``: the entropy of the training labels),
    when from epoch 3 on an epoch's mean loss is still within ``near`` of that chance level and has
    not fallen below ``near`` × the best earlier epoch: the model predicts the concept frequencies
    whatever the image. Both are what an unstable learning rate did (measured, 5 seeds, 6 epochs
    of the unit test's fine-tune at lrate 0.01: two runs rose to 1.8/5.5 and then sat at 0.69-0.71 =
    ln 2 with accuracy 0.5); slow but real learning passes (0.917, 0.912, 0.779, 0.676, ...)."""

    def __init__(
        self, *, chance_loss: float | None = None, blowup: float = 2.0, near: float = 0.97, start_loss: float | None = None, epoch_losses: Sequence[float] = ()
    ) -> None:
        self.chance_loss = chance_loss
        self.blowup = blowup
        self.near = near
        self.start_loss = start_loss
        self.epoch_losses = list(epoch_losses)

    def batch(self, loss: float) -> str | None:
        if not np.isfinite(loss):
            return f"the loss became {loss}"
        if self.start_loss is None:
            self.start_loss = float(loss)
        return None

    def epoch(self, epoch: int, mean_loss: float) -> str | None:
        earlier, self.epoch_losses = self.epoch_losses, [*self.epoch_losses, float(mean_loss)]
        start = self.start_loss
        if not np.isfinite(mean_loss):
            return f"the loss of epoch {epoch} is {mean_loss}"
        if start is not None and start > 0 and mean_loss > self.blowup * start:
            return f"the loss rose from {start:.4g} at the start to {mean_loss:.4g} in epoch {epoch}"
        chance = self.chance_loss
        if chance and epoch >= 3 and earlier and mean_loss >= self.near * chance and mean_loss >= self.near * min(earlier):
            return (
                f"the loss stayed at chance level ({mean_loss:.4g} in epoch {epoch}; predicting the concept "
                f"frequencies gives {chance:.4g}): the model does not learn"
            )
        return None


class _Diverged(Exception):
    def __init__(self, reason: str, row: EpochReport) -> None:
        super().__init__(reason)
        self.reason = reason
        self.row = row


def run_epochs(
    ctx: Any,  # DeepTrainContext
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    n_train: int,
    step: Callable[[np.ndarray, np.random.Generator], float],
    evaluate: Callable[[], dict[str, float]],
    settings: LoopSettings,
) -> list[EpochReport]:
    """Train for ``settings.num_epochs`` epochs, resuming after the last checkpoint if there is one.

    ``step(batch_indices, rng)`` does one optimisation step on those training items (the model is in
    train mode) and returns the batch's mean loss; ``evaluate()`` returns validation metrics (the
    model is put in eval mode around it). Returns the progress rows of all epochs, resumed ones
    included.

    A :class:`DivergenceGuard` watches the losses. When it fires, the run restarts from the initial
    weights at a third of the learning rate (``settings.lrate`` is lowered and the reason appended to
    ``settings.restarts``; the progress row of the abandoned epoch says so in its ``note``), at most
    ``settings.divergence_retries`` times; after that :class:`TrainingDiverged` is raised with the
    reason, so the job fails saying why instead of serving a model that learned nothing."""
    initial = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
    state = ctx.load_checkpoint()
    if state is not None:
        settings.lrate = float(state.get("lrate", settings.lrate))
        settings.restarts[:] = list(state.get("restarts", []))
    while True:
        try:
            return _attempt(ctx, model, optimizer, n_train, step, evaluate, settings, state)
        except _Diverged as d:
            state = None
            if len(settings.restarts) >= settings.divergence_retries:
                d.row.note = f"training diverged at lrate {settings.lrate:g}: {d.reason}; stopped"
                ctx.report(d.row)
                tried = "" if not settings.restarts else f" (after {len(settings.restarts)} restart(s) at lower rates)"
                raise TrainingDiverged(
                    f"training diverged at lrate {settings.lrate:g}{tried}: {d.reason}; try a lower lrate, a larger batch_size or warmup_epochs"
                ) from None
            lowered = settings.lrate / 3.0
            d.row.note = f"training diverged at lrate {settings.lrate:g}: {d.reason}; restarting from the initial weights at lrate {lowered:.3g}"
            settings.restarts.append(d.row.note)
            settings.lrate = lowered
            model.load_state_dict(initial[0])
            optimizer.load_state_dict(copy.deepcopy(initial[1]))
            # A restart that is killed before its first epoch ends resumes as a restart.
            ctx.save_checkpoint(_checkpoint(model, optimizer, 0, None, [], settings, None))
            ctx.report(d.row)


def _checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    rng: np.random.Generator | None,
    history: list[EpochReport],
    settings: LoopSettings,
    start_loss: float | None,
) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "rng": rng.bit_generator.state if rng is not None else None,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "history": [asdict(r) for r in history],
        "lrate": settings.lrate,
        "restarts": list(settings.restarts),
        "start_loss": start_loss,
    }


def _attempt(
    ctx: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    n_train: int,
    step: Callable[[np.ndarray, np.random.Generator], float],
    evaluate: Callable[[], dict[str, float]],
    settings: LoopSettings,
    state: dict[str, Any] | None,
) -> list[EpochReport]:
    rng = np.random.default_rng(ctx.seed)
    torch.manual_seed(ctx.seed)
    history: list[EpochReport] = []
    start_epoch = 1
    guard = DivergenceGuard(chance_loss=settings.chance_loss)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("rng") is not None:
            rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history = [EpochReport(**row) for row in state["history"]]
        start_epoch = int(state["epoch"]) + 1
        guard.start_loss = state.get("start_loss")
        guard.epoch_losses = [r.loss for r in history]
    per_epoch = num_batches(n_train, settings.num_items_per_epoch, settings.batch_size)
    warmup_steps = settings.warmup_epochs * per_epoch
    for epoch in range(start_epoch, settings.num_epochs + 1):
        started = time.perf_counter()
        lrate = settings.lrate * lr_factor(epoch, settings.init_epochs, settings.step_epochs)
        model.train()
        losses, weights = [], []
        order = epoch_order(n_train, settings.num_items_per_epoch, rng)
        for b, idx in enumerate(batches(order, settings.batch_size)):
            ctx.check_cancelled()
            set_lr(optimizer, lrate * warmup_factor((epoch - 1) * per_epoch + b, warmup_steps))
            loss = float(step(idx, rng))
            losses.append(loss)
            weights.append(len(idx))
            reason = guard.batch(loss)
            if reason is not None:
                raise _Diverged(reason, _row(epoch, settings, losses, weights, lrate, started))
        ctx.check_cancelled()
        train_seconds = time.perf_counter() - started
        mean_loss = float(np.average(losses, weights=weights))
        reason = guard.epoch(epoch, mean_loss)
        if reason is not None:
            raise _Diverged(reason, _row(epoch, settings, losses, weights, lrate, started))
        metrics: dict[str, float] = {}
        if is_test_epoch(epoch, settings.num_epochs, settings.test_freq):
            model.eval()
            metrics = {k: float(v) for k, v in evaluate().items()}
        row = EpochReport(
            epoch=epoch,
            num_epochs=settings.num_epochs,
            loss=mean_loss,
            lrate=lrate,
            items_per_second=len(order) / max(train_seconds, 1e-9),
            seconds=time.perf_counter() - started,
            metrics=metrics,
        )
        history.append(row)
        ctx.save_checkpoint(_checkpoint(model, optimizer, epoch, rng, history, settings, guard.start_loss))
        ctx.report(row)
    model.eval()
    return history


def _row(epoch: int, settings: LoopSettings, losses: list[float], weights: list[int], lrate: float, started: float) -> EpochReport:
    """The progress row of an epoch the guard stopped part-way (no validation metrics)."""
    seconds = time.perf_counter() - started
    return EpochReport(
        epoch=epoch,
        num_epochs=settings.num_epochs,
        loss=float(np.average(losses, weights=weights)),
        lrate=lrate,
        items_per_second=sum(weights) / max(seconds, 1e-9),
        seconds=seconds,
    )


# -- an in-process context ---------------------------------------------------------------------------
class LocalContext:
    """A :class:`DeepTrainContext` for scripts and tests: checkpoints in ``work_dir``, progress
    rows collected in ``rows`` (and passed to ``on_report``), cancellation by :meth:`cancel`."""

    def __init__(
        self,
        data: DeepData,
        hyper: Mapping[str, Any],
        work_dir: Path | str | None = None,
        *,
        seed: int = 0,
        device: str | None = None,
        on_report: Callable[[EpochReport], None] | None = None,
        resume: bool = True,
    ) -> None:
        self.data = data
        self.hyper: Mapping[str, Any] = dict(hyper)
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="deep-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.device = device or default_device()
        self.rows: list[EpochReport] = []
        self._on_report = on_report
        self._cancel = threading.Event()
        self._resume = resume

    def report(self, row: EpochReport) -> None:
        self.rows.append(row)
        if self._on_report is not None:
            self._on_report(row)

    def cancel(self) -> None:
        self._cancel.set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled("training job cancelled")

    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / CHECKPOINT_NAME

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        # Write beside, then rename: a crash mid-write leaves the previous checkpoint intact.
        fd, tmp = tempfile.mkstemp(dir=self.work_dir, prefix="ckpt-", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self._resume or not self.checkpoint_path.exists():
            return None
        # Our own file (model/optimizer state, numpy RNG dict, history rows): full unpickling.
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
