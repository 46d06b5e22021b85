"""firstlight.triton.tuning: serving parameters by device, written into config.pbtxt."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from firstlight.config import DEFAULT_MODEL_REPOSITORY, TritonSettings
from firstlight.triton import tuning


def settings(**kw: object) -> TritonSettings:
    """Settings independent of the test environment (conftest sets FIRSTLIGHT_TORCH_THREADS)."""
    base: dict[str, object] = {"triton_device": "auto", "triton_instances": 0, "torch_threads": 0, "triton_max_batch": 0}
    return TritonSettings(**{**base, **kw})  # type: ignore[arg-type]


def test_cpu_defaults_are_an_instance_and_a_thread_per_core_small_batches() -> None:
    t = tuning.choose(settings(), cores=2, device="cpu")
    assert (t.kind, t.instances, t.torch_threads, t.max_batch_size) == ("KIND_CPU", 2, 2, 4)
    assert t.preferred_batch_sizes == (4,)
    assert t.queue_delay_us == 500  # a lone request waits out the whole delay
    big = tuning.choose(settings(), cores=16, device="cpu")
    assert (big.instances, big.torch_threads) == (4, 4)  # both capped
    assert (tuning.choose(settings(), cores=1, device="cpu").instances, tuning.choose(settings(), cores=1, device="cpu").torch_threads) == (1, 1)


def test_gpu_defaults_are_one_instance_large_batches() -> None:
    t = tuning.choose(settings(), cores=16, device="gpu")
    assert (t.kind, t.instances, t.max_batch_size) == ("KIND_GPU", 1, 64)
    assert max(t.preferred_batch_sizes) == 64


def test_settings_override_device_defaults() -> None:
    t = tuning.choose(settings(triton_instances=3, torch_threads=2, triton_max_batch=4, triton_queue_delay_us=0), cores=2, device="cpu")
    assert (t.instances, t.torch_threads, t.max_batch_size, t.queue_delay_us) == (3, 2, 4, 0)
    assert t.preferred_batch_sizes == (4,)  # never above the max batch


def test_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRSTLIGHT_TRITON_DEVICE", "gpu")
    monkeypatch.setenv("FIRSTLIGHT_TRITON_MAX_BATCH", "32")
    t = tuning.choose(TritonSettings(), cores=2)
    assert (t.kind, t.max_batch_size) == ("KIND_GPU", 32)
    monkeypatch.setenv("FIRSTLIGHT_TRITON_DEVICE", "tpu")
    with pytest.raises(ValueError, match="triton_device"):
        TritonSettings()


def test_tune_repository_rewrites_backbone_and_caps_the_ensemble(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY, repo)
    t = tuning.BackboneTuning("KIND_GPU", 1, 2, 64, (16, 32, 64), 5000)
    tuning.tune_repository(repo, t)
    text = (repo / "backbone" / "config.pbtxt").read_text()
    assert "max_batch_size: 64" in text
    assert "preferred_batch_size: [ 16, 32, 64 ]" in text and "max_queue_delay_microseconds: 5000" in text
    assert "count: 1" in text and "kind: KIND_GPU" in text and "KIND_CPU" not in text.split("instance_group")[1]
    assert 'string_value: "2"' in text
    assert 'name: "EMBEDDING"' in text and "# EfficientNet-Lite0" in text  # the rest is kept
    assert "max_batch_size: 64" in (repo / "general" / "config.pbtxt").read_text()
    # Idempotent, and back to CPU values.
    cpu = tuning.BackboneTuning("KIND_CPU", 2, 1, 8, (4, 8), 2000)
    tuning.tune_repository(repo, cpu)
    tuning.tune_repository(repo, cpu)
    text = (repo / "backbone" / "config.pbtxt").read_text()
    assert text.count("dynamic_batching {") == 1 and "count: 2" in text and "kind: KIND_CPU" in text
    assert (repo / "backbone" / "config.pbtxt").read_text() == text


def test_bundled_config_holds_the_two_core_cpu_defaults() -> None:
    """deploy/ is what the Docker image and k8s base serve: the CPU defaults for 2 cores."""
    text = (DEFAULT_MODEL_REPOSITORY / "backbone" / "config.pbtxt").read_text()
    t = tuning.choose(settings(), cores=2, device="cpu")
    assert tuning.tune_backbone_config(text, t) == text


def test_unrecognised_config_is_an_error_not_a_silent_no_op() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        tuning.tune_backbone_config('name: "backbone"\n', tuning.choose(settings(), cores=2, device="cpu"))
