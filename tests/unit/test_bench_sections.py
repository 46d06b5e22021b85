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


def test_photos_section_is_registered_and_its_rows_hold_the_goals() -> None:
    from bench import photos

    assert "photos" in bench_main.parse([]).sections and "photos" not in bench_main.STACKLESS
    stages = {"decode_cpu_s": 0.03, "preprocess_cpu_s": 0.001, "forward_cpu_s": 0.01}
    result = {
        "best_img_per_s": 20.0, "naive_img_per_s": 4.0, "best_img_per_s_after": 18.0,
        "stages_best": stages, "stages_naive": {**stages, "decode_cpu_s": 0.2},
        "decode_shift": {"cosine_min": 0.99, "cosine_mean": 0.995, "near_duplicate_cosine_mean": 0.98, "top1_agreement": 1.0, "self_retrieval_at_1": 1.0, "n": 24},  # noqa: E501
        "product": {"img_per_s": 17.0, "cpu_s_per_image": {"ingestion": 0.03, "embedding": 0.01, "triton": 0.01, "search": 0.002, "broker": 0.001}},
        "predict": {1: {"served": 15.0, "bare": 20.0}, 8: {"served": 30.0, "bare": 20.0}},
        "phone_formats": {"jpeg": {"ms": 26.0, "mb": 2.7}, "heic": {"ms": 400.0, "mb": 2.0}, "avif": {"ms": 130.0, "mb": 0.7}},
    }  # fmt: skip
    rows = photos.rows(result)
    assert any(r.benchmark.startswith("12 MP decode for the model: HEIC") and r.ratio == "15.4× slower" for r in rows)
    goals = {r.benchmark: r.met for r in rows if r.goal}
    assert goals == {"12 MP ingest → searchable (median round)": True, "12 MP Predict c=1": False, "12 MP Predict c=8": True}


def test_photos_ceilings_come_from_the_measured_parts() -> None:
    from bench import photos

    stages = {"decode_cpu_s": 0.024, "preprocess_cpu_s": 0.002, "forward_cpu_s": 0.016}  # 2-thread forward
    result = {
        "stages_best": stages,
        "floor": {"ms": {"bare": 32.0, "grpc": 2.0, "ort": 6.0, "triton": 10.0}, "triton_extra_ms": 4.0, "floor_ms": 38.0, "ceiling": 32.0 / 38.0},
        "predict": {1: {"served": 20.0, "bare": 30.0}},
        "batching": {"batch": 4, "cpu_s_batch1": 0.010, "cpu_s_batched": 0.008},
    }
    c1, c8 = photos.ceiling_rows(result)
    assert c1.ratio == "ceiling 0.84×" and "served 50.0 ms" in c1.baseline
    # Against the cheaper bare forward (10 ms at one thread): 36 ms, batched at best 34 ms.
    assert c8.ratio.startswith("c=8 ceiling 1.06×") and "36 ms" in c8.baseline


def test_gateway_is_a_section_of_make_bench() -> None:
    assert "gateway" in bench_main.parse([]).sections and "gateway" not in bench_main.STACKLESS
    assert bench_main.parse(["--only", "gateway"]).sections == ["gateway"]


def test_video_section_needs_no_stack() -> None:
    assert bench_main.parse(["--only", "video"]).sections == ["video"]
    assert "video" in bench_main.STACKLESS


def test_deep_serving_needs_no_stack() -> None:
    assert bench_main.parse(["--only", "deep-serving"]).sections == ["deep_serving"]
    assert "deep_serving" in bench_main.STACKLESS and "deep_serving" in bench_main.parse([]).sections


def test_int8_study_needs_no_stack_and_holds_the_issues_rule() -> None:
    from bench import int8

    assert bench_main.parse(["--only", "int8"]).sections == ["int8"]
    assert "int8" in bench_main.STACKLESS and "int8" in bench_main.parse([]).sections
    fam = {
        "n": 5000,
        "top1_agreement": 0.996,
        "confident_n": 10,
        "top1_agreement_confident": 1.0,
        "top1_in_top5": 1.0,
        "cosine_min": 0.9,
        "cosine_p01": 0.95,
        "cosine_mean": 0.99,
    }
    transfer = {k: {"mean": v} for k, v in {"fp32": 0.900, "knn_fp32": 0.9, "qdq": 0.897, "qdq_mixed": 0.896, "qdq_knn_mixed": 0.9}.items()}
    speed = {b: {"fp32": {"median": 9.0}, "qdq": {"median": 4.5}} for b in ("1", "4")}
    result = {"cpu": "x", "accuracy": {"families": {"qdq": {"all": fam, "animal-mnist": fam, "photo crops": fam}}, "transfer": transfer}, "speed": speed}
    (row,) = int8.rows(result)
    assert row.met is True  # 99.6 % agreement, 0.4 pp transfer loss, 2× faster
    result["accuracy"]["transfer"]["qdq_mixed"] = {"mean": 0.894}  # the mixed index loses 0.6 pp
    assert int8.rows(result)[0].met is False
    result["accuracy"]["transfer"]["qdq_mixed"] = {"mean": 0.9}
    result["accuracy"]["families"]["qdq"]["all"] = {**fam, "top1_agreement": 0.99}
    assert int8.rows(result)[0].met is False
