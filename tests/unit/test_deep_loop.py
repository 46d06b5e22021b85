"""The shared deep training loop: each hyperparameter it handles has its effect (schedule, epoch
length, test_freq, flips, cancellation, checkpoint/resume, warm-up, clipping, the divergence
guard and its restarts at a lower rate)."""

import numpy as np
import pytest
import torch
from torch import nn

from firstlight.training.deep.context import DeepData, JobCancelled, LabeledImages, TrainingDiverged
from firstlight.training.deep.loop import (
    DivergenceGuard,
    LocalContext,
    LoopSettings,
    batches,
    clip_and_step,
    epoch_order,
    hflip_nhwc,
    lr_factor,
    num_batches,
    predict,
    prepare_images,
    random_hflip,
    run_epochs,
    warmup_factor,
)

torch.set_num_threads(1)


def test_lr_schedule_steps_at_init_epochs_then_every_step_epochs():
    factors = [lr_factor(e, init_epochs=3, step_epochs=2) for e in range(1, 10)]
    assert factors == pytest.approx([1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert [lr_factor(e, 0, 1) for e in (1, 2)] == pytest.approx([0.1, 0.01])


def test_epoch_order_one_pass_or_num_items():
    rng = np.random.default_rng(0)
    one = epoch_order(10, 0, rng)
    assert sorted(one) == list(range(10))
    many = epoch_order(10, 25, rng)
    assert len(many) == 25 and sorted(many[:10]) == list(range(10)) and sorted(many[10:20]) == list(range(10))
    few = epoch_order(10, 4, rng)
    assert len(few) == 4 and len(set(few)) == 4
    assert [len(b) for b in batches(many, 8)] == [8, 8, 8, 1]
    assert num_batches(10, 25, 8) == 4 and num_batches(10, 0, 8) == 2


def test_flips():
    x = torch.arange(2 * 2 * 3 * 1).reshape(2, 2, 3, 1)
    assert torch.equal(hflip_nhwc(x)[0, 0, :, 0], torch.tensor([2, 1, 0]))
    rng = np.random.default_rng(0)
    flipped = [bool(torch.equal(random_hflip(x[:1], rng), hflip_nhwc(x[:1]))) for _ in range(200)]
    assert 60 < sum(flipped) < 140  # about half
    assert torch.equal(random_hflip(x, rng, p=0.0), x)


def test_predict_average_flips():
    # a "model" that reads the left-most column: mirror-averaging mixes in the right-most one
    fn = lambda x: x[:, 0, 0, :1].float()  # noqa: E731
    img = np.zeros((1, 4, 4, 3), np.uint8)
    img[0, :, 0] = 10
    img[0, :, 3] = 30
    assert predict(fn, img, batch_size=4, device="cpu")[0, 0] == 10
    assert predict(fn, img, batch_size=4, device="cpu", average_flips=True)[0, 0] == 20


def test_prepare_images_resizes_any_size_and_gray():
    out = prepare_images([np.zeros((28, 28, 3), np.uint8), np.full((50, 70), 255, np.uint8)], 32)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8 and out[1].min() == 255


def _data(n=12):
    imgs = [np.zeros((8, 8, 3), np.uint8)] * n
    li = LabeledImages([str(i) for i in range(n)], imgs, [["a"]] * n)
    return DeepData(["a", "b"], li, li, li)


class _Toy:
    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Linear(3, 1)
        self.opt = torch.optim.SGD([{"params": self.model.parameters(), "lr_mult": 1.0}], lr=0.1, momentum=0.9)
        self.steps = 0

    def step(self, idx, rng):
        self.steps += 1
        loss = (self.model(torch.ones(len(idx), 3)) - 1).pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def _settings(**kw):
    base = dict(num_epochs=5, batch_size=4, lrate=0.1, init_epochs=2, step_epochs=2, test_freq=2, num_items_per_epoch=0)
    base.update(kw)
    return LoopSettings(**base)


def test_run_epochs_schedule_test_freq_and_batches(tmp_path):
    toy, ctx = _Toy(), LocalContext(_data(), {}, tmp_path, device="cpu")
    rows = run_epochs(ctx, toy.model, toy.opt, 12, toy.step, lambda: {"accuracy": 0.5}, _settings())
    assert [r.epoch for r in rows] == [1, 2, 3, 4, 5] and ctx.rows == rows
    assert [r.lrate for r in rows] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    assert toy.opt.param_groups[0]["lr"] == pytest.approx(0.001)
    # metrics on epochs 2 and 4 (test_freq) and 5 (the last); none on the others
    assert [bool(r.metrics) for r in rows] == [False, True, False, True, True]
    assert toy.steps == 5 * 3  # 12 items / batch 4
    assert rows[-1].loss < rows[0].loss


def test_num_items_per_epoch_changes_batches(tmp_path):
    toy, ctx = _Toy(), LocalContext(_data(), {}, tmp_path, device="cpu")
    run_epochs(ctx, toy.model, toy.opt, 12, toy.step, dict, _settings(num_epochs=2, num_items_per_epoch=40))
    assert toy.steps == 2 * 10


def test_cancel_between_batches(tmp_path):
    toy, ctx = _Toy(), LocalContext(_data(), {}, tmp_path, device="cpu")
    original = toy.step

    def step(idx, rng):
        if toy.steps == 4:
            ctx.cancel()
        return original(idx, rng)

    with pytest.raises(JobCancelled):
        run_epochs(ctx, toy.model, toy.opt, 12, step, dict, _settings())
    assert toy.steps == 5 and len(ctx.rows) == 1  # stopped in epoch 2, right after the cancel


def test_resume_from_checkpoint_continues_the_epoch_counter_and_matches_an_uninterrupted_run(tmp_path):
    # uninterrupted reference
    ref = _Toy()
    ref_rows = run_epochs(LocalContext(_data(), {}, tmp_path / "ref", device="cpu"), ref.model, ref.opt, 12, ref.step, dict, _settings())
    # killed after epoch 3 (cancel at the start of epoch 4), then a fresh process resumes
    first = _Toy()
    ctx = LocalContext(_data(), {}, tmp_path / "job", device="cpu")

    def step(idx, rng):
        if first.steps == 9:
            ctx.cancel()
        return first.step(idx, rng)

    with pytest.raises(JobCancelled):
        run_epochs(ctx, first.model, first.opt, 12, step, dict, _settings())
    assert [r.epoch for r in ctx.rows] == [1, 2, 3]
    second = _Toy()  # new weights, new optimizer: all state comes from the checkpoint
    ctx2 = LocalContext(_data(), {}, tmp_path / "job", device="cpu")
    rows = run_epochs(ctx2, second.model, second.opt, 12, second.step, dict, _settings())
    assert [r.epoch for r in ctx2.rows] == [4, 5]  # only the remaining epochs ran
    assert [r.epoch for r in rows] == [1, 2, 3, 4, 5] and second.steps == 6
    assert [r.loss for r in rows] == pytest.approx([r.loss for r in ref_rows], rel=1e-5)
    assert torch.allclose(second.model.weight, ref.model.weight, atol=1e-6)


# -- warm-up, clipping and the divergence guard ------------------------------------------------------
def test_warmup_ramps_linearly_then_holds():
    assert [warmup_factor(s, 4) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    assert warmup_factor(0, 0) == 1.0


def test_warmup_epochs_ramp_the_rate_of_each_step(tmp_path):
    toy, ctx = _Toy(), LocalContext(_data(), {}, tmp_path, device="cpu")
    seen = []
    original = toy.step

    def step(idx, rng):
        seen.append(toy.opt.param_groups[0]["lr"])
        return original(idx, rng)

    run_epochs(ctx, toy.model, toy.opt, 12, step, dict, _settings(num_epochs=2, warmup_epochs=1))
    # 3 batches per epoch: the first epoch ramps 1/3, 2/3, 3/3 of lrate, the second holds it
    assert seen == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.1, 0.1])
    assert ctx.rows[0].lrate == pytest.approx(0.1)  # the row reports the scheduled rate


def test_clip_and_step_bounds_the_gradient_norm():
    w = nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=1.0)
    clip_and_step(opt, (w - 100.0).pow(2).sum(), max_grad_norm=1.0)
    assert float(w.detach().norm()) == pytest.approx(1.0, rel=1e-5)  # a step of lr × (a unit-norm gradient)
    w2 = nn.Parameter(torch.zeros(4))
    loss = clip_and_step(torch.optim.SGD([w2], lr=1.0), (w2 - 100.0).pow(2).sum(), max_grad_norm=0)
    assert loss == pytest.approx(4 * 100.0**2) and float(w2.detach().norm()) == pytest.approx(400.0)  # 0: no clipping


def test_guard_fires_on_non_finite_and_rising_losses():
    g = DivergenceGuard()
    assert g.batch(0.7) is None and g.start_loss == 0.7
    assert "nan" in g.batch(float("nan"))
    assert "inf" in DivergenceGuard().epoch(1, float("inf"))
    g = DivergenceGuard(start_loss=0.7)
    assert g.epoch(1, 1.3) is None
    assert "rose from 0.7" in g.epoch(2, 1.5)


# Epoch losses measured in the unit test's fine-tune over 6 epochs (5 seeds; chance = ln 2): runs at
# the old lrate 0.01 that ended at accuracy 0.5, and runs that learned, slowly or fast.
_STUCK = [[1.764, 0.72, 0.701, 0.676, 0.667, 0.648], [0.69, 0.70, 0.695, 0.693, 0.702, 0.707]]
_LEARNING = [[0.917, 0.912, 0.779, 0.676, 0.387, 0.35], [1.115, 0.673, 0.658, 0.614, 0.377, 0.275], [0.533, 0.502, 0.447, 0.291, 0.284, 0.15]]


@pytest.mark.parametrize("losses", _STUCK)
def test_guard_fires_when_the_loss_stays_at_chance(losses):
    g = DivergenceGuard(chance_loss=float(np.log(2)), start_loss=5.0)  # a start that never trips "rose"
    fired = [e for e, loss in enumerate(losses, 1) if g.epoch(e, loss)]
    assert fired and fired[0] == 3


@pytest.mark.parametrize("losses", _LEARNING)
def test_guard_lets_slow_and_fast_learning_through(losses):
    g = DivergenceGuard(chance_loss=float(np.log(2)), start_loss=0.7)
    assert [g.epoch(e, loss) for e, loss in enumerate(losses, 1)] == [None] * len(losses)
    g = DivergenceGuard(start_loss=0.7)  # no chance level given: only non-finite and rising losses count
    assert g.epoch(3, 0.69) is None and g.epoch(4, 0.69) is None


class _Quadratic:
    """loss = (w - 10)², plain SGD: w -> w - 2·lr·(w - 10) converges for lr < 1 (in one step at 0.5)
    and diverges above 1, on any machine."""

    def __init__(self):
        self.model = nn.Module()
        self.model.w = nn.Parameter(torch.zeros(()))
        self.opt = torch.optim.SGD([{"params": [self.model.w], "lr_mult": 1.0}], lr=0.1)

    def step(self, idx, rng):
        return clip_and_step(self.opt, (self.model.w - 10.0).pow(2), 0.0)


def test_divergence_restarts_from_the_initial_weights_at_a_third_of_the_rate(tmp_path):
    q, ctx = _Quadratic(), LocalContext(_data(), {}, tmp_path, device="cpu")
    settings = _settings(lrate=4.5, init_epochs=10, divergence_retries=2)
    rows = run_epochs(ctx, q.model, q.opt, 12, q.step, dict, settings)
    assert settings.lrate == pytest.approx(0.5) and len(settings.restarts) == 2  # 4.5 and 1.5 diverged
    assert "lrate 4.5" in settings.restarts[0] and "restarting from the initial weights at lrate 1.5" in settings.restarts[0]
    notes = [r.note for r in ctx.rows if r.note]
    assert notes == settings.restarts  # the progress stream says so
    assert [r.epoch for r in rows] == [1, 2, 3, 4, 5]  # the history is the run that learned
    assert float(q.model.w.detach()) == pytest.approx(10.0) and rows[-1].loss == pytest.approx(0.0)
    # the lowered rate is in the checkpoint: a resumed job keeps it
    again = _settings(lrate=4.5, init_epochs=10, divergence_retries=2)
    run_epochs(LocalContext(_data(), {}, tmp_path, device="cpu"), _Quadratic().model, _Quadratic().opt, 12, q.step, dict, again)
    assert again.lrate == pytest.approx(0.5) and again.restarts == settings.restarts


def test_divergence_fails_the_job_with_the_reason_when_retries_run_out(tmp_path):
    q, ctx = _Quadratic(), LocalContext(_data(), {}, tmp_path, device="cpu")
    with pytest.raises(TrainingDiverged, match=r"diverged at lrate 1\.5 \(after 1 restart.*rose from 100"):
        run_epochs(ctx, q.model, q.opt, 12, q.step, dict, _settings(lrate=4.5, init_epochs=10, divergence_retries=1))
    assert ctx.rows[-1].note.endswith("stopped")
