"""`python -m bench` section selection: deep training runs without a stack (a GPU host can run it
alone), and picks the device by itself."""

import pytest
import torch

from bench import __main__ as bench_main
from bench import deep_training


def test_deep_training_alone_needs_no_stack() -> None:
    args = bench_main.parse(["--only", "deep-training"])
    assert args.sections == ["deep_training"]
    assert all(s in bench_main.STACKLESS for s in args.sections)
    assert "deep_training" in bench_main.parse([]).sections  # part of a full `make bench`


def test_unknown_section_is_refused() -> None:
    with pytest.raises(SystemExit):
        bench_main.parse(["--only", "deep"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU host only")
def test_cpu_uses_the_training_service_thread_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRSTLIGHT_TRAIN_THREADS", "3")
    assert deep_training.device_and_threads() == ("cpu", 3)
    monkeypatch.delenv("FIRSTLIGHT_TRAIN_THREADS")
    assert deep_training.device_and_threads() == ("cpu", 1)  # TrainingSettings.train_threads' default


def test_video_section_needs_no_stack() -> None:
    assert bench_main.parse(["--only", "video"]).sections == ["video"]
    assert "video" in bench_main.STACKLESS
