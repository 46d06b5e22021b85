"""visual_embedder template: losses, schedule, and tiny real fits on animal-mnist (in-memory context)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from firstlight.datasets import ANIMAL_CLASSES, _animal_arrays
from firstlight.training.deep import embedder as E
from firstlight.training.deep.context import DeepData, EpochReport, JobCancelled, LabeledImages


@dataclass
class MemoryContext:
    data: DeepData
    hyper: dict[str, Any]
    work_dir: Path
    device: str = "cpu"
    seed: int = 0
    rows: list[EpochReport] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    cancel_after: int | None = None
    calls: int = 0

    def report(self, row: EpochReport) -> None:
        self.rows.append(row)

    def check_cancelled(self) -> None:
        self.calls += 1
        if self.cancel_after is not None and self.calls > self.cancel_after:
            raise JobCancelled()

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self.checkpoint = state

    def load_checkpoint(self) -> dict[str, Any] | None:
        return self.checkpoint


def _split(classes: list[str], per_class: int, offset: int) -> LabeledImages:
    images, labels = _animal_arrays()
    ids, imgs, labs = [], [], []
    for name in classes:
        idx = np.flatnonzero(labels == ANIMAL_CLASSES.index(name))[offset : offset + per_class]
        for i in idx:
            ids.append(f"am-{i}")
            imgs.append(np.repeat(images[i][:, :, None], 3, axis=2))
            labs.append([name])
    return LabeledImages(ids, imgs, labs)


@pytest.fixture(scope="module")
def data() -> DeepData:
    classes = ["bear", "bird", "cat", "giraffe"]
    return DeepData(classes, _split(classes, 12, 0), _split(classes, 6, 100), _split(classes, 6, 200))


def test_lrate_schedule_steps_at_init_epochs_then_every_step_epochs() -> None:
    hyper = {"lrate": 0.1, "init_epochs": 2, "step_epochs": 3}
    assert [round(E.lrate_at(hyper, e), 6) for e in range(1, 9)] == [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
    assert E.base_lrate({"per_128_lrate": 0.256, "batch_size": 64}) == pytest.approx(0.128)
    assert E.base_lrate({"per_item_lrate": 0.001, "batch_size": 16, "lrate": 5.0}) == pytest.approx(0.016)


def test_batch_hard_triplet_picks_hardest_pairs() -> None:
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.05], [0.05, 1.0]]), dim=1)
    y = torch.tensor([0, 0, 1, 1])
    # anchors 0,1: hardest positive at distance 1, hardest negative ~0 → ~1.2; anchors 2,3: ~0.9 + 0.2
    loss = E.batch_hard_triplet(emb, y, margin=0.2)
    assert loss.item() == pytest.approx(1.15, abs=0.01)
    separated = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert E.batch_hard_triplet(separated, y).item() == 0.0


def test_arcface_margin_penalises_the_true_class() -> None:
    head = E.ArcFace(2, 2, scale=10.0, margin=0.3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    emb = torch.tensor([[1.0, 0.0]])
    with_margin = head(emb, torch.tensor([0])).item()
    head.margin = 0.0
    assert with_margin > head(emb, torch.tensor([0])).item()


def test_wccn_whitens_within_class_scatter_and_helps_new_classes() -> None:
    rng = np.random.default_rng(0)
    # 8-d features: classes differ along axes 0-3; axes 4-7 carry large nuisance variation that
    # every class shares (the situation where raw cosine similarity fails)
    scale = np.array([0.3, 0.3, 0.3, 0.3, 3.0, 3.0, 3.0, 3.0])

    def draw(centres: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(len(centres)), n)
        return centres[y] + rng.normal(size=(len(y), 8)) * scale, y

    seen = np.zeros((4, 8))
    seen[:, :4] = 3 * np.eye(4)
    x, y = draw(seen, 50)
    p, mean = E.wccn_projection(x, y, dim=8, shrinkage=0.0)
    z = (x - mean) @ p
    within = sum(((z[y == c] - z[y == c].mean(0)).T @ (z[y == c] - z[y == c].mean(0))) for c in range(4)) / len(z)
    assert np.allclose(within, np.eye(8), atol=1e-6)
    # new classes (other centres on the same discriminative axes) become far easier one-shot
    new = np.zeros((3, 8))
    new[:, :4] = 3 * rng.normal(size=(3, 4))
    xn, yn = draw(new, 30)
    p, mean = E.wccn_projection(x, y, dim=8, shrinkage=0.5)
    whitened, raw = E.oneshot_accuracy((xn - mean) @ p, yn, episodes=100), E.oneshot_accuracy(xn, yn, episodes=100)
    assert whitened > 0.95 and whitened > raw + 0.08  # measured 0.98 vs 0.86


def test_new_concept_probe_leaves_concepts_out_and_needs_four() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 1280)).astype(np.float32)
    y = np.repeat(np.arange(6), 10)
    feats = torch.from_numpy(centres[y] + 0.3 * rng.normal(size=(60, 1280)).astype(np.float32))
    y_val = np.repeat(np.arange(6), 4)
    val = torch.from_numpy(centres[y_val] + 0.3 * rng.normal(size=(24, 1280)).astype(np.float32))
    hyper = {"embedding_dim": 16, "num_epochs": 2, "batch_size": 16, "image_size": 32}
    asked = []
    got = E.new_concept_probe(hyper, feats, feats, feats, val, y, y_val, seed=0, device="cpu", check=lambda: asked.append(1))
    # well-separated concepts: the probe's head and the base features both tell new ones apart
    assert got["new_concept_oneshot_accuracy"] > 0.9 and got["base_new_concept_oneshot_accuracy"] > 0.9
    assert asked  # cancellable between batches
    assert got == E.new_concept_probe(hyper, feats, feats, feats, val, y, y_val, seed=0, device="cpu")  # seeded
    three = y < 3
    assert E.new_concept_probe(hyper, feats[three], feats[three], feats[three], val[y_val < 3], y[three], y_val[y_val < 3], seed=0, device="cpu") == {}


def test_oneshot_accuracy_on_separable_and_random_embeddings() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    centers = np.eye(4, 8)
    clean = centers[y] + 0.01 * rng.normal(size=(40, 8))
    assert E.oneshot_accuracy(clean, y) == 1.0
    noise = rng.normal(size=(40, 8))
    assert E.oneshot_accuracy(noise, y, episodes=200) < 0.5
    # support from one set, queries from another (one query per class is enough)
    queries = (centers[np.arange(4)] + 0.01, np.arange(4))
    assert E.oneshot_accuracy(clean, y, queries=queries) == 1.0
    assert E.oneshot_accuracy(clean, y, queries=(queries[0], np.array([3, 2, 1, 0]))) == 0.0
    assert np.isnan(E.oneshot_accuracy(clean[:10], y[:10], queries=(*queries[:1], np.arange(4))))  # one class only


@pytest.mark.parametrize("loss", ["arcface", "triplet"])
def test_frozen_fit_returns_normalised_uint8_module_and_reports(tmp_path: Path, data: DeepData, loss: str) -> None:
    torch.set_num_threads(1)
    ctx = MemoryContext(data, {"loss": loss, "embedding_dim": 16, "image_size": 32, "num_epochs": 3, "test_freq": 2, "batch_size": 16}, tmp_path)
    result = E.TEMPLATE.fit(ctx)
    assert result.kind == "embedder" and result.primary_metric in result.validation
    assert 0.0 <= result.validation["oneshot_accuracy"] <= 1.0 and "knn_accuracy" in result.test
    # 4 concepts and a frozen backbone: versions are judged by the new-concept probe
    assert result.primary_metric == "new_concept_oneshot_accuracy"
    assert 0.0 <= result.validation["new_concept_oneshot_accuracy"] <= 1.0
    assert 0.0 <= result.validation["base_new_concept_oneshot_accuracy"] <= 1.0
    # test_freq=2: metrics on epoch 2 and the last one only
    assert [bool(r.metrics) for r in ctx.rows] == [False, True, True]
    assert all(math.isfinite(r.loss) for r in ctx.rows)
    pixels = torch.from_numpy(E.to_pixels(data.test.images[:3], 32))
    (out,) = result.module(pixels)
    assert out.shape == (3, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    # the exported module is the head on flip-averaged backbone features (what the frozen fit and
    # bench/embedder_oneshot.py compute from cached features)
    feats = E.VisualEmbedder._eval_features(result.module.net, pixels.numpy(), "cpu")
    with torch.no_grad():
        assert torch.allclose(result.module.net.project(feats), out, atol=1e-5)
    traced = torch.jit.trace(result.module, pixels)
    assert torch.allclose(traced(pixels)[0], out, atol=1e-5)
    assert ctx.checkpoint is not None and ctx.checkpoint["epoch"] == 3


def test_arcface_training_lowers_loss_and_separates_training_concepts(tmp_path: Path, data: DeepData) -> None:
    torch.set_num_threads(1)
    ctx = MemoryContext(
        data,
        {"embedding_dim": 32, "image_size": 64, "num_epochs": 15, "lrate": 0.003, "init_epochs": 15, "batch_size": 16, "test_freq": 15, "head_init": "random"},
        tmp_path,
    )
    result = E.TEMPLATE.fit(ctx)
    assert ctx.rows[-1].loss < ctx.rows[0].loss
    train_pixels = torch.from_numpy(E.to_pixels(data.train.images, 64))
    (emb,) = result.module(train_pixels)
    y = np.array([data.concepts.index(lab[0]) for lab in data.train.labels])
    assert E.oneshot_accuracy(emb.detach().numpy(), y) > 0.8  # 4 concepts: chance 0.25, base features ~0.5


def test_unfrozen_backbone_changes_and_bn_stays_frozen(tmp_path: Path, data: DeepData) -> None:
    torch.set_num_threads(1)
    ctx = MemoryContext(
        data,
        {
            "embedding_dim": 8,
            "image_size": 32,
            "num_epochs": 1,
            "base_gradient_multiplier": 1.0,
            "num_items_per_epoch": 16,
            "batch_size": 8,
            "average_horizontal_flips": False,
        },
        tmp_path,
    )
    result = E.TEMPLATE.fit(ctx)
    trained = result.module.net.backbone.state_dict()
    from firstlight.models.backbone import load_efficientnet

    base = load_efficientnet().state_dict()
    assert result.primary_metric == "oneshot_accuracy"  # no cached features: no probe
    assert not torch.equal(trained["_conv_stem.weight"], base["_conv_stem.weight"])
    assert torch.equal(trained["_bn0.running_mean"], base["_bn0.running_mean"])
    assert torch.equal(trained["_bn0.weight"], base["_bn0.weight"])


def test_cancel_and_resume_from_checkpoint(tmp_path: Path, data: DeepData) -> None:
    torch.set_num_threads(1)
    hyper = {"embedding_dim": 8, "image_size": 32, "num_epochs": 3, "batch_size": 16}
    ctx = MemoryContext(data, hyper, tmp_path, cancel_after=4)  # 48 items / 16 = 3 batches an epoch
    with pytest.raises(JobCancelled):
        E.TEMPLATE.fit(ctx)
    assert ctx.checkpoint is not None and ctx.checkpoint["epoch"] == 1
    ctx.cancel_after = None
    ctx.rows.clear()
    E.TEMPLATE.fit(ctx)
    assert [r.epoch for r in ctx.rows] == [2, 3]
