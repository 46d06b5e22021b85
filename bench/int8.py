"""An int8-quantised backbone, measured against fp32 before anything serves it (issue 17).

The exported EfficientNet-Lite0 graph (firstlight.models.onnx_backbone) is quantised statically
with ``onnxruntime.quantization`` (per-channel int8 weights, uint8 activations, MinMax
calibration on bundled images disjoint from the evaluation set), in the variants listed in
VARIANTS, and each is compared with fp32 on thousands of bundled images:

* **ImageNet concepts**: top-1 agreement with fp32 (and fp32's top-1 within the int8 top 5) on
  animal-mnist silhouettes, the photos the installed packages ship (scikit-image, scikit-learn,
  matplotlib) and random augmented crops of those photos (scale, aspect, flip, brightness,
  contrast), and scikit-image's LFW face subset, beside two yardsticks: fp32 against itself on the same images shifted by one pixel or re-saved
  as JPEG quality 95 (how fragile top-1 is on these images for any change);
* **embeddings**: cosine between the fp32 and int8 vector of each image (min, 1st percentile, mean);
* **transfer**: logistic regression on animal-mnist embeddings (stratified 5-fold, several
  seeds): fp32 → fp32, int8 → int8, and mixed (trained on fp32 vectors, queried with int8 ones:
  a head trained before a switch), plus 1-NN accuracy with int8 queries in an fp32 index;
* **speed**: CPU ms per image (``time.process_time``, one intra-op thread, no spinning) at batch 1
  and 4, fp32 and each variant in interleaved rounds, median round.

The issue's rule for a default: ≤ 0.5 pp loss, i.e. top-1 agreement ≥ 99.5 % and transfer
accuracy within 0.5 pp, and faster. An OpenVINO fp32 row on the same graph (outputs vs ORT, CPU
ms per image) is added when ``openvino`` imports (it is not a project dependency). Needs no stack:

    python -m bench.int8            # or: python -m bench --only int8
    python -m bench.int8 --quick
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from bench.common import Row, cpu_name

RESULTS = Path(__file__).parent / "results"
#: Photos the installed packages ship (file names; read from disk, never fetched).
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "color.png", "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)  # fmt: skip
#: name -> (quant format, nodes kept in fp32). "first_last_fp32" keeps the stem conv (it sees raw
#: pixels) and the classifier Gemm in fp32: the usual first fix when a quantised net drifts.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "qdq": ("QDQ", ()),
    "qdq_first_last_fp32": ("QDQ", ("/_conv_stem/Conv", "/_fc/Gemm")),
    "qoperator": ("QOperator", ()),
}
RULE_PP = 0.5  # the allowance for a default


def _shift_one_pixel(x: np.ndarray) -> np.ndarray:
    return np.roll(x, 1, axis=2)


def _jpeg_95(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for i, a in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=95)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


#: Yardsticks for the agreement figures: fp32 itself on the same images after a change nobody
#: would call a different image, i.e. how fragile top-1 is on these images anyway.
YARDSTICKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "fp32, image shifted by one pixel": _shift_one_pixel,
    "fp32, image re-saved as JPEG quality 95": _jpeg_95,
}


# --- the bundled images -------------------------------------------------------------------------


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA"):  # transparent areas on white, as a viewer shows them
        back = Image.new("RGB", img.size, (255, 255, 255))
        back.paste(img.convert("RGBA"), mask=img.convert("RGBA").split()[-1])
        return back
    return img.convert("RGB")


def bundled_photos() -> list[tuple[str, Image.Image]]:
    """(name, RGB image) for every photo shipped by scikit-image, scikit-learn and matplotlib."""
    import matplotlib
    import skimage.data
    import sklearn.datasets

    out = []
    root = Path(skimage.data.__file__).parent
    for name in SKIMAGE_PHOTOS:
        out.append((f"skimage/{name}", _rgb(Image.open(root / name))))
    sk = Path(sklearn.datasets.__file__).parent / "images"
    for name in ("china.jpg", "flower.jpg"):
        out.append((f"sklearn/{name}", _rgb(Image.open(sk / name))))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    out.append(("matplotlib/grace_hopper.jpg", _rgb(Image.open(hopper))))
    return out


def _crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A RandomResizedCrop-like view: 8-100 % of the area, aspect 3/4-4/3, flip, light jitter."""
    w, h = img.size
    for _ in range(10):
        area = rng.uniform(0.08, 1.0) * w * h
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if 16 <= cw <= w and 16 <= ch <= h:
            break
    else:
        cw, ch = w, h
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.8, 1.2)))
    return ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.8, 1.2)))


def photo_crops(per_photo: int, seed: int) -> Iterator[np.ndarray]:
    """Model inputs of ``per_photo`` random crops of every bundled photo."""
    from firstlight.models.preprocess import to_model_input

    rng = np.random.default_rng(seed)
    for _, img in bundled_photos():
        for _ in range(per_photo):
            yield to_model_input(_crop(img, rng))


def whole_photos() -> Iterator[np.ndarray]:
    from firstlight.models.preprocess import to_model_input

    return (to_model_input(img) for _, img in bundled_photos())


def animal_indices(n: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """``n`` animal-mnist indices, balanced over the 10 classes, none of ``exclude``."""
    from firstlight import datasets

    _, labels = datasets._animal_arrays()
    rng = np.random.default_rng(seed)
    out = []
    for c in range(len(datasets.ANIMAL_CLASSES)):
        idx = np.setdiff1d(np.flatnonzero(labels == c), exclude if exclude is not None else [])
        out.append(rng.choice(idx, size=min(n // len(datasets.ANIMAL_CLASSES), len(idx)), replace=False))
    return np.sort(np.concatenate(out))


def animal_inputs(indices: np.ndarray) -> Iterator[np.ndarray]:
    """Model inputs of animal-mnist images as the services make them (a PNG decoded, upscaled)."""
    from firstlight import datasets
    from firstlight.models.preprocess import to_model_input

    images, _ = datasets._animal_arrays()
    for i in indices:
        yield to_model_input(Image.open(io.BytesIO(datasets.png_bytes(images[i]))))


def lfw_faces() -> Iterator[np.ndarray]:
    """scikit-image's LFW subset (200 grey 25×25 crops: 100 faces, 100 not), as model inputs."""
    import skimage.data

    from firstlight.models.preprocess import to_model_input

    arr = np.load(Path(skimage.data.__file__).parent / "lfw_subset.npy")
    for a in arr:
        yield to_model_input(Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)))


def batched(items: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    chunk: list[np.ndarray] = []
    for x in items:
        chunk.append(x)
        if len(chunk) == size:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


# --- quantisation -------------------------------------------------------------------------------


def calibration_inputs(animals: int, crops_per_photo: int, exclude_animals: np.ndarray) -> np.ndarray:
    """Calibration batch: animal-mnist images outside the evaluation set and photo crops of another seed."""
    parts = list(animal_inputs(animal_indices(animals, seed=101, exclude=exclude_animals)))
    parts += list(photo_crops(crops_per_photo, seed=101))
    return np.stack(parts)


def quantize(fp32: Path, out: Path, fmt: str, fp32_nodes: tuple[str, ...], calib: np.ndarray) -> Path:
    """Static int8 quantisation: per-channel int8 weights, uint8 activations (MLAS's fast u8s8
    path on x86), MinMax ranges from ``calib``. The graph is pre-processed first (shape inference,
    constant folding of the exporter's padding arithmetic), as onnxruntime recommends."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from firstlight.models.ort import INPUT

    pre = out.parent / f"{fp32.stem}.pre.onnx"  # shared by the variants
    if not pre.is_file():
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calib[i : i + 8] for i in range(0, len(calib), 8))

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.batches, None)
            return None if b is None else {INPUT: b}

    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=list(fp32_nodes),
    )
    return out


# --- accuracy -----------------------------------------------------------------------------------


def top5(probs: np.ndarray) -> np.ndarray:
    return np.argsort(-probs, axis=1)[:, :5]


def agreement(ref_top5: np.ndarray, q_top5: np.ndarray, ref_emb: np.ndarray, q_emb: np.ndarray, ref_p1: np.ndarray) -> dict[str, float]:
    """Top-1 agreement (also where fp32's top-1 probability ``ref_p1`` is ≥ 0.5: a flip between
    near-tied concepts is not the same failure as a confident one) and embedding cosines."""
    cos = np.sum(ref_emb * q_emb, axis=1)  # both L2-normalised by the graph
    same = ref_top5[:, 0] == q_top5[:, 0]
    confident = ref_p1 >= 0.5
    return {
        "n": len(cos),
        "top1_agreement": float(np.mean(same)),
        "confident_n": int(confident.sum()),
        "top1_agreement_confident": float(np.mean(same[confident])) if confident.any() else float("nan"),
        "top1_in_top5": float(np.mean([r in q for r, q in zip(ref_top5[:, 0], q_top5)])),
        "cosine_min": float(cos.min()),
        "cosine_p01": float(np.percentile(cos, 1)),
        "cosine_mean": float(cos.mean()),
    }


def transfer(ref: np.ndarray, qs: dict[str, np.ndarray], labels: np.ndarray, seeds: tuple[int, ...]) -> dict[str, Any]:
    """Logistic-regression accuracy (stratified 5-fold per seed) of fp32 and of each int8 variant,
    and mixed: the fp32 classifier queried with int8 vectors (a head trained before a switch);
    1-NN accuracy with fp32 references and fp32 or int8 queries (an index built before a switch)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    acc: dict[str, list[float]] = {"fp32": [], "knn_fp32": []}
    for name in qs:
        acc.update({f"{name}": [], f"{name}_mixed": [], f"{name}_knn_mixed": []})

    def fit(x: np.ndarray, y: np.ndarray) -> Any:
        return LogisticRegression(C=1.0, max_iter=1000).fit(x, y)

    for seed in seeds:
        for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(ref, labels):
            clf = fit(ref[train], labels[train])
            acc["fp32"].append(float(clf.score(ref[test], labels[test])))
            acc["knn_fp32"].append(_knn(ref[train], labels[train], ref[test], labels[test]))
            for name, q in qs.items():
                acc[name].append(float(fit(q[train], labels[train]).score(q[test], labels[test])))
                acc[f"{name}_mixed"].append(float(clf.score(q[test], labels[test])))
                acc[f"{name}_knn_mixed"].append(_knn(ref[train], labels[train], q[test], labels[test]))
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": len(v)} for k, v in acc.items()}


def _knn(index: np.ndarray, index_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray) -> float:
    nearest = np.argmax(queries @ index.T, axis=1)  # cosine: the vectors are L2-normalised
    return float(np.mean(index_labels[nearest] == query_labels))


# --- speed --------------------------------------------------------------------------------------


def cpu_ms_per_image(runners: dict[str, Callable[[np.ndarray], Any]], pixels: np.ndarray, calls: int, rounds: int) -> dict[str, dict[str, Any]]:
    """CPU ms per image (process time, all threads) of each runner on ``pixels``, in interleaved
    rounds (rotated order), median round; wall ms per image beside it (the host is shared)."""
    names = list(runners)
    for fn in runners.values():
        fn(pixels)  # warm-up
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                runners[name](pixels)
            images = calls * len(pixels)
            cpu[name].append((time.process_time() - c0) * 1e3 / images)
            wall[name].append((time.perf_counter() - w0) * 1e3 / images)
    return {n: {"median": float(np.median(cpu[n])), "min": float(np.min(cpu[n])), "rounds": cpu[n], "wall_median": float(np.median(wall[n]))} for n in names}


def ort_runner(path: Path, threads: int = 1) -> Callable[[np.ndarray], Any]:
    from firstlight.models.onnx_backbone import OUTPUTS
    from firstlight.models.ort import INPUT, cpu_session

    session = cpu_session(path, threads)
    return lambda x: session.run(list(OUTPUTS), {INPUT: x})


def openvino_runners(path: Path) -> dict[str, Callable[[np.ndarray], Any]] | None:
    """OpenVINO CPU plugin on the same graph: 1 stream 1 thread, and the LATENCY hint with 2
    threads; None when openvino is not importable (it is not a project dependency)."""
    try:
        import openvino as ov
    except ImportError:
        return None
    from firstlight.models.onnx_backbone import OUTPUTS

    core = ov.Core()
    model = core.read_model(str(path))
    configs = {
        "openvino_1t": {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "1", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"},
        "openvino_latency_2t": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": "2", "INFERENCE_PRECISION_HINT": "f32"},
    }
    out: dict[str, Callable[[np.ndarray], Any]] = {}
    for name, cfg in configs.items():
        request = core.compile_model(model, "CPU", cfg).create_infer_request()

        def run(x: np.ndarray, request: Any = request) -> list[np.ndarray]:
            request.infer({0: x})
            return [request.get_tensor(name).data.copy() for name in OUTPUTS]

        out[name] = run
    return out


# --- the section --------------------------------------------------------------------------------


def evaluate(fp32: Path, variants: dict[str, Path], quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Top-1/cosine per image family and transfer accuracy, fp32 vs each variant."""
    from firstlight import datasets

    ref = ort_runner(fp32, threads=2)
    qs = {name: ort_runner(p, threads=2) for name, p in variants.items()}
    for name, change in YARDSTICKS.items():
        qs[name] = lambda x, change=change: ref(change(x))
    n_animals, per_photo = (600, 10) if quick else (3000, 100)
    eval_animals = animal_indices(n_animals, seed=7)
    families = {
        "animal-mnist": lambda: animal_inputs(eval_animals),
        "photo crops": lambda: photo_crops(per_photo, seed=7),
        "photos (whole)": whole_photos,
        "lfw faces": lfw_faces,
    }
    out: dict[str, Any] = {"families": {}, "eval_animals": eval_animals}
    embs: dict[str, dict[str, list[np.ndarray]]] = {}
    tops: dict[str, dict[str, list[np.ndarray]]] = {}
    p1: dict[str, list[np.ndarray]] = {}  # fp32's top-1 probability per image
    for family, make in families.items():
        t0 = time.perf_counter()
        embs[family] = {k: [] for k in ("fp32", *qs)}
        tops[family] = {k: [] for k in ("fp32", *qs)}
        p1[family] = []
        for batch in batched(make(), 16):
            for name, fn in (("fp32", ref), *qs.items()):
                e, p = fn(batch)
                embs[family][name].append(e)
                tops[family][name].append(top5(p))
                if name == "fp32":
                    p1[family].append(p.max(axis=1))
        log(f"  {family}: {sum(len(e) for e in embs[family]['fp32'])} images in {time.perf_counter() - t0:.0f}s")
    for name in qs:
        per: dict[str, Any] = {}
        for family in families:
            per[family] = agreement(
                np.concatenate(tops[family]["fp32"]),
                np.concatenate(tops[family][name]),
                np.concatenate(embs[family]["fp32"]),
                np.concatenate(embs[family][name]),
                np.concatenate(p1[family]),
            )
        per["all"] = agreement(
            np.concatenate([t for f in families for t in tops[f]["fp32"]]),
            np.concatenate([t for f in families for t in tops[f][name]]),
            np.concatenate([e for f in families for e in embs[f]["fp32"]]),
            np.concatenate([e for f in families for e in embs[f][name]]),
            np.concatenate([x for f in families for x in p1[f]]),
        )
        out["families"][name] = per
    _, labels = datasets._animal_arrays()
    y = labels[eval_animals]
    seeds = (0,) if quick else (0, 1)
    t0 = time.perf_counter()
    out["transfer"] = transfer(np.concatenate(embs["animal-mnist"]["fp32"]), {n: np.concatenate(embs["animal-mnist"][n]) for n in variants}, y, seeds)
    out["yardsticks"] = {name: out["families"].pop(name) for name in YARDSTICKS}
    log(f"  transfer ({len(seeds)} seeds × 5 folds) in {time.perf_counter() - t0:.0f}s")
    out["eval_animals"] = len(eval_animals)
    return out


def run(quick: bool = False, log: Callable[[str], None] = print, variants: tuple[str, ...] = tuple(VARIANTS)) -> dict:
    from firstlight.models.onnx_backbone import cached_onnx

    cpu = cpu_name() or os.uname().machine
    out: dict[str, Any] = {"cpu": cpu, "onnxruntime": _ort_version()}
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        fp32 = cached_onnx(Path(tmp))
        t0 = time.perf_counter()
        eval_animals = animal_indices(600 if quick else 3000, seed=7)
        calib = calibration_inputs(100 if quick else 200, 2 if quick else 4, eval_animals)
        calib = calib[: len(calib) // 8 * 8]  # whole batches of 8 (histogram calibrators need equal shapes)
        paths = {name: quantize(fp32, Path(tmp) / f"{name}.onnx", *VARIANTS[name], calib) for name in variants}
        out["calibration_images"] = len(calib)
        out["quantize_s"] = time.perf_counter() - t0
        log(f"  quantised {', '.join(paths)} on {len(calib)} calibration images in {out['quantize_s']:.0f}s")
        out["model_mb"] = {"fp32": fp32.stat().st_size / 2**20, **{n: p.stat().st_size / 2**20 for n, p in paths.items()}}
        out["accuracy"] = evaluate(fp32, paths, quick, log)
        runners = {"fp32": ort_runner(fp32), **{n: ort_runner(p) for n, p in paths.items()}}
        calls, rounds = (5, 3) if quick else (20, 5)
        out["speed"] = {}
        for batch in (1, 4):
            pixels = next(batched(photo_crops(2, seed=3), batch))
            out["speed"][str(batch)] = cpu_ms_per_image(runners, pixels, max(1, calls * 4 // batch), rounds)
            log("  batch " + str(batch) + ": " + ", ".join(f"{n} {v['median']:.2f} ms" for n, v in out["speed"][str(batch)].items()))
        out["openvino"] = openvino_compare(fp32, calls, rounds, log)
    out["rows"] = [r.as_dict() for r in rows(out)]
    return out


def openvino_compare(fp32: Path, calls: int, rounds: int, log: Callable[[str], None]) -> dict[str, Any] | None:
    ov = openvino_runners(fp32)
    if ov is None:
        log("  openvino not importable: no OpenVINO row")
        return None
    import openvino

    ort1, ort2 = ort_runner(fp32, 1), ort_runner(fp32, 2)
    res: dict[str, Any] = {"version": openvino.__version__.split("-")[0], "max_abs_diff": {}}
    for batch in (1, 4):
        pixels = next(batched(photo_crops(2, seed=5), batch))
        want = ort1(pixels)
        for name, fn in ov.items():
            got = fn(pixels)
            res["max_abs_diff"][f"{name} batch {batch}"] = max(float(np.abs(a - b).max()) for a, b in zip(want, got))
        res[str(batch)] = cpu_ms_per_image({"ort_1t": ort1, "ort_2t": ort2, **ov}, pixels, max(1, calls * 4 // batch), rounds)
        log("  openvino batch " + str(batch) + ": " + ", ".join(f"{n} {v['median']:.2f} ms" for n, v in res[str(batch)].items()))
    return res


def meets_rule(acc: dict[str, Any], name: str) -> bool:
    """The issue's rule: top-1 agreement ≥ 99.5 % over all images and transfer within 0.5 pp."""
    t = acc["transfer"]
    agree = acc["families"][name]["all"]["top1_agreement"]
    loss_pp = 100 * (t["fp32"]["mean"] - min(t[name]["mean"], t[f"{name}_mixed"]["mean"]))
    return agree >= 1 - RULE_PP / 100 and loss_pp <= RULE_PP


def rows(r: dict[str, Any]) -> list[Row]:
    cpu = r.get("cpu", "?")
    out = []
    acc = r["accuracy"]
    for name, per in acc["families"].items():
        a, t = per["all"], acc["transfer"]
        sp1, sp4 = r["speed"]["1"], r["speed"]["4"]
        out.append(
            Row(
                f"int8 backbone ({name}) vs fp32, {a['n']} bundled images, ONNX Runtime, {cpu}",
                f"top-1 agreement {100 * a['top1_agreement']:.2f} % (animal-mnist {100 * per['animal-mnist']['top1_agreement']:.2f}, "
                f"photo crops {100 * per['photo crops']['top1_agreement']:.2f}; {100 * a['top1_agreement_confident']:.2f} where fp32 p ≥ 0.5, "
                f"n={a['confident_n']}); cosine min {a['cosine_min']:.3f} mean {a['cosine_mean']:.4f}; "
                f"transfer {100 * t[name]['mean']:.2f} % (mixed {100 * t[name + '_mixed']['mean']:.2f} %, "
                f"1-NN mixed {100 * t[name + '_knn_mixed']['mean']:.2f} %)",
                f"fp32 transfer {100 * t['fp32']['mean']:.2f} % (1-NN {100 * t['knn_fp32']['mean']:.2f} %)",
                f"CPU ms/img b1 {sp1[name]['median']:.2f} vs {sp1['fp32']['median']:.2f} ({sp1['fp32']['median'] / sp1[name]['median']:.2f}×), "
                f"b4 {sp4[name]['median']:.2f} vs {sp4['fp32']['median']:.2f} ({sp4['fp32']['median'] / sp4[name]['median']:.2f}×)",
                "≤ 0.5 pp loss (agreement ≥ 99.5 %, transfer within 0.5 pp) and faster, to be a default",
                meets_rule(acc, name) and sp1[name]["median"] < sp1["fp32"]["median"],
            )
        )
    for name, y in acc.get("yardsticks", {}).items():
        a = y["all"]
        out.append(
            Row(
                f"yardstick: {name} vs fp32, same {a['n']} images, {cpu}",
                f"top-1 agreement {100 * a['top1_agreement']:.2f} % (animal-mnist {100 * y['animal-mnist']['top1_agreement']:.2f}, "
                f"photo crops {100 * y['photo crops']['top1_agreement']:.2f}); cosine min {a['cosine_min']:.3f} mean {a['cosine_mean']:.4f}",
                "how far top-1 agreement falls on these images for a change that keeps the image",
                "",
            )
        )
    ov = r.get("openvino")
    if ov:
        for batch in ("1", "4"):
            s = ov[batch]
            diff = max(v for k, v in ov["max_abs_diff"].items() if k.endswith(f"batch {batch}"))
            out.append(
                Row(
                    f"OpenVINO {ov['version']} fp32 vs ONNX Runtime, same graph, batch {batch}, {cpu}",
                    f"CPU ms/img 1 thread {s['openvino_1t']['median']:.2f}, LATENCY 2 threads {s['openvino_latency_2t']['median']:.2f} "
                    f"(wall {s['openvino_latency_2t']['wall_median']:.2f}); max |diff| {diff:.1e}",
                    f"ORT 1 thread {s['ort_1t']['median']:.2f}, 2 threads {s['ort_2t']['median']:.2f} (wall {s['ort_2t']['wall_median']:.2f})",
                    f"{s['ort_1t']['median'] / s['openvino_1t']['median']:.2f}× (1 thread)",
                )
            )
    return out


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.int8", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="600 animal-mnist images and 10 crops per photo; shorter timing")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    args = p.parse_args(argv)
    result = run(quick=args.quick, variants=tuple(v for v in args.variants.split(",") if v))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "int8.json").write_text(json.dumps(result, indent=2, default=_json))
    for r in result["rows"]:
        print(f"| {r['benchmark']} | {r['figure']} | {r['baseline']} | {r['ratio']} | {r['goal']} {r['met']} |")
    return 0


def _json(x: Any) -> Any:
    return x.tolist() if isinstance(x, np.ndarray) else float(x)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
