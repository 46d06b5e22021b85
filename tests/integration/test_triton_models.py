"""The model repository served by a real tritonserver (the one bundled with nvidia-pytriton)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from firstlight.models.backbone import (
    EMBEDDING_DIM,
    NUM_CLASSES,
    classifier_head,
    embed_and_classify,
    features_and_logits,
    general_concept_names,
    load_efficientnet,
)
from firstlight.models.preprocess import batch_from_images
from firstlight.triton.client import TritonModels, TritonUnavailable
from firstlight.triton.server import LocalTritonServer, TritonStartupError, default_model_repository

pytestmark = pytest.mark.integration

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def server() -> Iterator[LocalTritonServer]:
    with LocalTritonServer(default_model_repository(), ["backbone", "general"]) as s:
        yield s


@pytest.fixture(scope="module")
def models(server: LocalTritonServer) -> Iterator[TritonModels]:
    with TritonModels(server.grpc_url, timeout_s=60) as m:
        yield m


@pytest.fixture(scope="module")
def local_model() -> torch.nn.Module:
    return load_efficientnet()


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Real photos: chelsea (a cat), coffee, astronaut, rocket + one noise image."""
    imgs = [Image.fromarray(f()) for f in (data.chelsea, data.coffee, data.astronaut, data.rocket)]
    noise = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    return np.concatenate([batch_from_images(imgs), noise[None]])


def test_backbone_matches_in_process(models: TritonModels, local_model: torch.nn.Module, photos: np.ndarray) -> None:
    emb, probs = embed_and_classify(local_model, photos)
    served_emb = models.embed(photos)
    served_probs = models.classify(photos)
    assert served_emb.shape == (len(photos), EMBEDDING_DIM) and served_emb.dtype == np.float32
    assert served_probs.shape == (len(photos), NUM_CLASSES) and served_probs.dtype == np.float32
    np.testing.assert_allclose(served_emb, emb, atol=1e-4)
    np.testing.assert_allclose(served_probs, probs, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(served_emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(served_probs.sum(axis=1), 1.0, atol=1e-4)


def test_chunked_forward_matches_one_pass(local_model: torch.nn.Module, photos: np.ndarray) -> None:
    """model.py runs CPU batches as chunks of CPU_FORWARD_CHUNK (a flat stub heap): same numbers."""
    emb, probs = embed_and_classify(local_model, photos)
    chunked_emb, chunked_probs = embed_and_classify(local_model, photos, max_chunk=2)  # 2 + 2 + 1
    assert chunked_emb.shape == emb.shape and chunked_probs.shape == probs.shape
    np.testing.assert_allclose(chunked_emb, emb, atol=1e-4)
    np.testing.assert_allclose(chunked_probs, probs, atol=1e-4)
    same_emb, _ = embed_and_classify(local_model, photos, max_chunk=len(photos))  # no split
    np.testing.assert_array_equal(same_emb, emb)


def test_general_recognises_the_cat(models: TritonModels, photos: np.ndarray) -> None:
    probs = models.classify(photos[:1])[0]
    top3 = [int(i) for i in np.argsort(-probs)[:3]]
    names = general_concept_names()
    assert CAT_CLASSES & set(top3), [names[i] for i in top3]


def test_batch_larger_than_max_batch_size(models: TritonModels, local_model: torch.nn.Module, photos: np.ndarray) -> None:
    assert models.max_batch_size("backbone") == 4  # the bundled CPU config (firstlight.triton.tuning)
    big = np.concatenate([photos] * 7)[:33]  # 33 > 4: nine concurrent requests
    emb = models.embed(big)
    assert emb.shape == (33, EMBEDDING_DIM)
    ref, _ = embed_and_classify(local_model, photos)
    np.testing.assert_allclose(emb[30:33], ref[0:3], atol=1e-4)  # rows straddling the split
    assert models.embed(photos[:0]).shape == (0, EMBEDDING_DIM)


def test_health_and_metrics(server: LocalTritonServer, models: TritonModels) -> None:
    assert models.is_ready()
    with urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=10) as r:
        assert r.status == 200
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        text = r.read().decode()
    assert 'nv_inference_count{model="backbone"' in text


def test_classifier_head_applies_to_raw_features(local_model: torch.nn.Module, photos: np.ndarray) -> None:
    feats, logits = features_and_logits(local_model, photos[:2])
    w, b = classifier_head()
    assert w.shape == (NUM_CLASSES, EMBEDDING_DIM) and b.shape == (NUM_CLASSES,)
    np.testing.assert_allclose(feats.numpy() @ w.T + b, logits.numpy(), atol=1e-3)


def test_unreachable_server_is_retryable_error(server: LocalTritonServer) -> None:
    dead = TritonModels("127.0.0.1:1", timeout_s=2)
    assert not dead.is_ready()
    with pytest.raises(TritonUnavailable):
        dead.embed(np.zeros((1, 224, 224, 3), dtype=np.uint8))
    with TritonModels(server.grpc_url) as live, pytest.raises(ValueError):
        live.embed(np.zeros((1, 32, 32, 3), dtype=np.uint8))


def test_startup_failure_reports_the_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TritonStartupError, match="no_such_model"):
        LocalTritonServer(default_model_repository(), ["no_such_model"], startup_timeout_s=60).start()


def test_module_entry_point_runs_until_sigterm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from firstlight.triton.server import _free_port

    port = _free_port("127.0.0.1")
    cmd = [sys.executable, "-m", "firstlight.triton.server", "--models", "backbone", "--grpc-port", str(port),
           "--http-port", str(_free_port("127.0.0.1")), "--metrics-port", str(_free_port("127.0.0.1")),
           "--log-file", str(tmp_path / "triton.log")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        TritonModels(f"127.0.0.1:{port}").wait_ready(timeout=120, models=("backbone",))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:  # SIGTERM first: main() then stops its tritonserver (own session)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert "triton ready" in out, out
