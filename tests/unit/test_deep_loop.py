"""The shared deep training loop: each hyperparameter it handles has its effect (schedule, epoch
length, test_freq, flips, cancellation, checkpoint/resume)."""

import numpy as np
import pytest
import torch
from torch import nn

from firstlight.training.deep.context import DeepData, JobCancelled, LabeledImages
from firstlight.training.deep.loop import (
    LocalContext,
    LoopSettings,
    batches,
    epoch_order,
    hflip_nhwc,
    lr_factor,
    num_batches,
    predict,
    prepare_images,
    random_hflip,
    run_epochs,
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
    run_epochs(ctx, toy.model, toy.opt, 12, toy.step, lambda: {}, _settings(num_epochs=2, num_items_per_epoch=40))
    assert toy.steps == 2 * 10


def test_cancel_between_batches(tmp_path):
    toy, ctx = _Toy(), LocalContext(_data(), {}, tmp_path, device="cpu")
    original = toy.step

    def step(idx, rng):
        if toy.steps == 4:
            ctx.cancel()
        return original(idx, rng)

    with pytest.raises(JobCancelled):
        run_epochs(ctx, toy.model, toy.opt, 12, step, lambda: {}, _settings())
    assert toy.steps == 5 and len(ctx.rows) == 1  # stopped in epoch 2, right after the cancel


def test_resume_from_checkpoint_continues_the_epoch_counter_and_matches_an_uninterrupted_run(tmp_path):
    # uninterrupted reference
    ref = _Toy()
    ref_rows = run_epochs(LocalContext(_data(), {}, tmp_path / "ref", device="cpu"), ref.model, ref.opt, 12, ref.step, lambda: {}, _settings())
    # killed after epoch 3 (cancel at the start of epoch 4), then a fresh process resumes
    first = _Toy()
    ctx = LocalContext(_data(), {}, tmp_path / "job", device="cpu")

    def step(idx, rng):
        if first.steps == 9:
            ctx.cancel()
        return first.step(idx, rng)

    with pytest.raises(JobCancelled):
        run_epochs(ctx, first.model, first.opt, 12, step, lambda: {}, _settings())
    assert [r.epoch for r in ctx.rows] == [1, 2, 3]
    second = _Toy()  # new weights, new optimizer: all state comes from the checkpoint
    ctx2 = LocalContext(_data(), {}, tmp_path / "job", device="cpu")
    rows = run_epochs(ctx2, second.model, second.opt, 12, second.step, lambda: {}, _settings())
    assert [r.epoch for r in ctx2.rows] == [4, 5]  # only the remaining epochs ran
    assert [r.epoch for r in rows] == [1, 2, 3, 4, 5] and second.steps == 6
    assert [r.loss for r in rows] == pytest.approx([r.loss for r in ref_rows], rel=1e-5)
    assert torch.allclose(second.model.weight, ref.model.weight, atol=1e-6)
