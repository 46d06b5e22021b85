"""visual_detector: generated scenes, targets, NMS, decode, flip averaging, hyperparameters, a tiny
training run and its TorchScript export; the inference-side region decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from firstlight.domain.errors import InsufficientData, InvalidSetting, TrainingError
from firstlight.inference.detections import concepts_of, detector_pixels, regions
from firstlight.training.deep import hyper as deep_hyper
from firstlight.training.deep.context import Box
from firstlight.training.deep.detector import (
    MAX_DETECTIONS,
    TEMPLATE,
    DetectorExport,
    DetectorNet,
    build_targets,
    decode,
    flip_boxes,
    nms,
)
from firstlight.training.deep.loop import LocalContext
from firstlight.training.deep.scenes import generate_scenes, scene_data, split_indices

CLASSES = ["bear", "bird", "giraffe"]


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- scenes ------------------------------------------------------------------------------------------
def test_scenes_are_deterministic_and_boxes_valid() -> None:
    a = generate_scenes(6, seed=3, size=64, classes=CLASSES)
    b = generate_scenes(6, seed=3, size=64, classes=CLASSES)
    c = generate_scenes(6, seed=4, size=64, classes=CLASSES)
    assert all(np.array_equal(x.image, y.image) and x.boxes == y.boxes for x, y in zip(a, b))
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(a, c))
    for s in a:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert 1 <= len(s.boxes) <= 3
        for box in s.boxes:
            assert 0 <= box.x0 < box.x1 <= 1 and 0 <= box.y0 < box.y1 <= 1 and box.concept in CLASSES


def test_scene_boxes_are_tight_around_the_pasted_animal() -> None:
    # On a constant background, the pixels that differ from it lie inside the union of the boxes.
    s = generate_scenes(20, seed=0, size=96, classes=CLASSES)
    for scene in s:
        inside = np.zeros((96, 96), dtype=bool)
        for b in scene.boxes:
            inside[int(b.y0 * 96) : int(np.ceil(b.y1 * 96)), int(b.x0 * 96) : int(np.ceil(b.x1 * 96))] = True
        assert inside.mean() < 0.9  # boxes do not cover the scene


def test_splits_draw_from_disjoint_animal_images() -> None:
    tr, va, te = (split_indices(s, CLASSES) for s in ("train", "validation", "test"))
    for c in CLASSES:
        assert not set(tr[c]) & set(va[c]) and not set(tr[c]) & set(te[c]) and not set(va[c]) & set(te[c])
        assert len(tr[c]) + len(va[c]) + len(te[c]) == 1000
    data = scene_data(4, 2, 2, size=64, classes=CLASSES)
    assert data.train.boxes is not None and data.train.labels[0] == sorted({b.concept for b in data.train.boxes[0]})


# -- targets, NMS, decode ---------------------------------------------------------------------------
def test_targets_peak_at_box_centres() -> None:
    heat, where, reg = build_targets([[Box(0.25, 0.25, 0.75, 0.5, "bird")]], {"bear": 0, "bird": 1}, 8)
    assert heat.shape == (1, 2, 8, 8) and heat[0, 0].max() == 0.0
    assert heat[0, 1, 3, 4] == 1.0 and heat[0, 1].sum() > 1.0  # Gaussian around the centre cell
    assert where.tolist() == [[0, 1, 3, 4]]
    np.testing.assert_allclose(reg[0], [0.0, 0.0, np.log(4.0), np.log(2.0)], atol=1e-6)
    assert flip_boxes([Box(0.1, 0.2, 0.3, 0.4, "x")]) == [Box(0.7, 0.2, 0.9, 0.4, "x")]


def test_nms_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    boxes = torch.tensor([[0, 0, 1, 1], [0.05, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3]], dtype=torch.float32)
    scores = torch.tensor([0.6, 0.9, 0.5, 0.4])
    classes = torch.tensor([0, 0, 1, 0])
    keep = nms(boxes, scores, classes, 0.5).tolist()
    assert keep == [1, 2, 3]  # box 0 overlaps the better box 1 of its class; box 2 is another class
    assert nms(boxes, scores, torch.tensor([0, 1, 2, 3]), 0.5).tolist() == [1, 0, 2, 3]
    assert nms(boxes[:0], scores[:0], classes[:0], 0.5).tolist() == []


def test_decode_finds_a_planted_peak_and_pads() -> None:
    heat = torch.zeros(1, 2, 8, 8)
    heat[0, 1, 3, 4] = 0.9
    heat[0, 1, 3, 5] = 0.5  # a neighbour, not a peak
    heat[0, 0, 6, 1] = 0.2  # below the threshold
    reg = torch.zeros(1, 8, 8, 8)
    reg[0, 4:8, 3, 4] = torch.tensor([0.5, 0.5, np.log(2.0), np.log(4.0)])
    boxes, scores, classes = decode(heat, reg, 0.3, 5, 100, 0.5)
    assert boxes.shape == (1, 5, 4) and scores.shape == (1, 5) and classes.dtype == torch.int32
    assert classes[0].tolist() == [1, -1, -1, -1, -1]
    assert scores[0, 0] == pytest.approx(0.9)
    # centre (4.5, 3.5) cells of 8, size 2×4 cells -> x 3.5..5.5, y 1.5..5.5 (/8)
    np.testing.assert_allclose(boxes[0, 0].numpy(), [3.5 / 8, 1.5 / 8, 5.5 / 8, 5.5 / 8], atol=1e-6)
    # class-agnostic regression reads the single group whatever the class
    b2, _, _ = decode(heat, reg[:, 4:8], 0.3, 5, 100, 0.5)
    np.testing.assert_allclose(b2[0, 0].numpy(), boxes[0, 0].numpy(), atol=1e-6)


def test_flip_averaging_is_mirror_symmetric() -> None:
    # With average_horizontal_flips, a mirrored image gives the mirrored maps: the same heatmap
    # flipped, centre offsets dx -> 1 - dx, everything else flipped.
    torch.manual_seed(0)
    net = DetectorNet(3, True).eval()
    export = DetectorExport(net, 64, True, 0.3).eval()
    x = torch.from_numpy(np.stack([s.image for s in generate_scenes(2, size=64, classes=CLASSES)]))
    with torch.no_grad():
        heat, reg = export.maps(x)
        heat_m, reg_m = export.maps(torch.flip(x, dims=[2]))
    torch.testing.assert_close(heat_m, torch.flip(heat, dims=[3]))
    g, gm = reg.reshape(2, 3, 4, 8, 8), torch.flip(reg_m.reshape(2, 3, 4, 8, 8), dims=[4])
    torch.testing.assert_close(gm[:, :, 0], 1.0 - g[:, :, 0])
    torch.testing.assert_close(gm[:, :, 1:], g[:, :, 1:])
    # without averaging the net itself is not symmetric
    plain = DetectorExport(net, 64, False, 0.3).eval()
    with torch.no_grad():
        assert not torch.allclose(plain.maps(x)[0], torch.flip(plain.maps(torch.flip(x, dims=[2]))[0], dims=[3]))


def test_perclass_regression_changes_the_head() -> None:
    assert DetectorNet(5, True).reg.out_channels == 20
    assert DetectorNet(5, False).reg.out_channels == 4


# -- hyperparameters and data errors ------------------------------------------------------------------
def test_detector_hyperparameters() -> None:
    h = deep_hyper.parse_deep("visual_detector", {"detection_score_threshold": "0.5", "use_perclass_regression": "false"})
    assert h["detection_score_threshold"] == 0.5 and h["use_perclass_regression"] is False
    assert h["architecture"] == "small_cnn"
    assert set(TEMPLATE.hyperparameters) >= {"average_horizontal_flips", "detection_score_threshold", "use_perclass_regression", "base_gradient_multiplier"}
    with pytest.raises(InvalidSetting) as e:
        deep_hyper.parse_deep("visual_detector", {"logreg": "true"})
    assert e.value.key == "logreg"
    with pytest.raises(InvalidSetting) as e:
        deep_hyper.parse_deep("visual_detector", {"detection_score_threshold": "1.5"})
    assert e.value.key == "detection_score_threshold"


def _ctx(data, **given):  # type: ignore[no-untyped-def]
    h = deep_hyper.parse_deep("visual_detector", {"image_size": 64, "batch_size": 16, **given})
    return LocalContext(data, h, seed=0, device="cpu", resume=False)


def test_data_without_boxes_is_refused() -> None:
    data = scene_data(4, 2, 2, size=64, classes=CLASSES)
    data.train.boxes = None
    with pytest.raises(InsufficientData):
        TEMPLATE.fit(_ctx(data, num_epochs=1))
    data = scene_data(4, 2, 2, size=64, classes=CLASSES)
    data.validation.boxes[0] = [Box(0.5, 0.5, 0.4, 0.9, "bear")]
    with pytest.raises(TrainingError, match="not normalised"):
        TEMPLATE.fit(_ctx(data, num_epochs=1))
    data = scene_data(4, 2, 2, size=64, classes=CLASSES)
    data.train.boxes[1] = [Box(0.1, 0.1, 0.4, 0.4, "unicorn")]
    with pytest.raises(TrainingError, match="unicorn"):
        TEMPLATE.fit(_ctx(data, num_epochs=1))


# -- a tiny training run ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    data = scene_data(64, 16, 16, size=64, classes=CLASSES)
    ctx = _ctx(data, num_epochs=3, init_epochs=3, detection_score_threshold=0.05, test_freq=2)
    return data, ctx, TEMPLATE.fit(ctx)


def test_template_trains_and_reports(trained) -> None:  # type: ignore[no-untyped-def]
    _data, ctx, res = trained
    losses = [r.loss for r in ctx.rows]
    assert len(losses) == 3 and losses[-1] < losses[0]
    # test_freq=2: validation metrics at epoch 2 and at the last epoch only
    assert [bool(r.metrics) for r in ctx.rows] == [False, True, True]
    assert res.kind == "detector" and res.primary_metric == "map_50"
    assert 0.0 <= res.validation["map_50"] <= 1.0 and "map_50" in res.test
    assert [(o.name, o.dtype, o.dims) for o in res.outputs] == [("DETECTIONS", "TYPE_FP32", [MAX_DETECTIONS, 6])]
    assert res.artifacts["detections_test.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert set(res.report["test"]["per_class_ap_50"]) == set(CLASSES)


def test_exported_module_returns_boxes(trained) -> None:  # type: ignore[no-untyped-def]
    data, _, res = trained
    x = torch.from_numpy(np.stack(data.test.images[:4]))
    packed = res.module(x)
    assert packed.shape == (4, MAX_DETECTIONS, 6) and packed.dtype == torch.float32
    boxes, scores, classes = packed[..., :4], packed[..., 4], packed[..., 5]
    assert float(boxes.min()) >= 0.0 and float(boxes.max()) <= 1.0
    valid = classes >= 0
    assert bool(valid.any()), "a threshold of 0.05 should leave some detections"
    assert set(classes[valid].tolist()) <= {0.0, 1.0, 2.0}
    assert bool((scores[valid] >= 0.05).all()) and bool((scores[~valid] == 0).all())
    assert bool((boxes[valid][:, 2] >= boxes[valid][:, 0]).all())
    # The module is TorchScript (what the Triton export saves), and survives a save/load.
    import io

    buf = io.BytesIO()
    torch.jit.save(res.module, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(x), packed)


def test_predictor_returns_regions_of_a_detector_model(trained) -> None:  # type: ignore[no-untyped-def]
    # The inference core's detector route, with the exported module standing in for Triton.
    from firstlight.config import ImageLimits
    from firstlight.datasets import png_bytes
    from firstlight.inference.core import Predictor
    from firstlight.inference.registry import Registry
    from firstlight.v1 import events_pb2

    data, _, res = trained

    class ModuleAsTriton:
        def infer_images(self, model, version, pixels, output="PROBS"):  # type: ignore[no-untyped-def]
            assert (model, version, output, pixels.shape[1:]) == ("fl.app.det", "1", "DETECTIONS", (64, 64, 3))
            return res.module(torch.from_numpy(pixels)).numpy()

    registry = Registry()
    registry.apply(
        events_pb2.ModelVersionReady(
            app_id="app",
            model_id="det",
            version="1",
            triton_model="fl.app.det",
            concepts=CLASSES,
            kind="detector",
            image_size=64,
            serving=True,
        )
    )
    predictor = Predictor(ModuleAsTriton(), ImageLimits(), registry)
    images = data.test.images[:3]
    model, ranked, found = predictor.predict_regions([png_bytes(im) for im in images], app_id="app", model_id="det")
    assert model.kind == "detector" and len(found) == 3 and any(found)
    direct = res.module(torch.from_numpy(np.stack(images))).numpy()
    for i, regs in enumerate(found):
        valid = direct[i, direct[i, :, 5] >= 0]
        assert [(CLASSES[int(v[5])], round(float(v[4]), 5)) for v in valid] == [(r.concept, round(r.score, 5)) for r in regs]
        np.testing.assert_allclose([r.box for r in regs] or np.zeros((0, 4)), valid[:, :4], atol=1e-6)
        assert dict(ranked[i]) == {c: max(r.score for r in regs if r.concept == c) for c in {r.concept for r in regs}}
    # An image of another size is resized whole: boxes stay normalised to it.
    big = np.asarray(Image.fromarray(images[0]).resize((160, 96)))
    _, _, found_big = predictor.predict_regions([png_bytes(big)], app_id="app", model_id="det")
    assert all(0 <= v <= 1 for r in found_big[0] for v in r.box)
    _, _, capped = predictor.predict_regions([png_bytes(images[0])], app_id="app", model_id="det", top_k=1, concepts=["bear"])
    assert len(capped[0]) <= 1 and all(r.concept == "bear" for r in capped[0])


# -- inference-side decoding -------------------------------------------------------------------------
def test_regions_from_detector_outputs() -> None:
    from firstlight.inference.detections import regions_from_packed

    boxes = np.array([[[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 1.2], [0, 0, 0, 0]]], dtype=np.float32)
    scores = np.array([[0.4, 0.8, 0.0]], dtype=np.float32)
    classes = np.array([[0, 1, -1]], dtype=np.int32)
    out = regions(boxes, scores, classes, ["cat", "dog"])
    assert [(r.concept, round(r.score, 2)) for r in out[0]] == [("dog", 0.8), ("cat", 0.4)]
    assert out[0][0].box == pytest.approx((0.5, 0.5, 0.9, 1.0))  # clipped to the image
    assert [r.concept for r in regions(boxes, scores, classes, ["cat", "dog"], min_score=0.5)[0]] == ["dog"]
    assert [r.concept for r in regions(boxes, scores, classes, ["cat", "dog"], allowed=np.array([0]))[0]] == ["cat"]
    assert len(regions(boxes, scores, classes, ["cat", "dog"], top_k=1)[0]) == 1
    assert concepts_of(out[0]) == [("dog", pytest.approx(0.8)), ("cat", pytest.approx(0.4))]
    with pytest.raises(ValueError):
        regions(boxes, scores[:, :2], classes, ["cat", "dog"])
    packed = np.concatenate([boxes, scores[..., None], classes[..., None].astype(np.float32)], axis=-1)
    assert regions_from_packed(packed, ["cat", "dog"]) == out
    with pytest.raises(ValueError):
        regions_from_packed(packed[..., :5], ["cat", "dog"])


def test_detector_pixels_resize_whole_images() -> None:
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    img.paste((0, 0, 255), (150, 0, 200, 100))  # right quarter blue: must survive (no centre crop)
    px = detector_pixels([img, img.convert("L")], 64)
    assert px.shape == (2, 64, 64, 3) and px.dtype == np.uint8
    assert px[0, 32, 60, 2] > 200 and px[0, 32, 10, 0] > 200


def test_base_gradient_multiplier_zero_freezes_the_trunk() -> None:
    data = scene_data(16, 4, 0, size=64, classes=CLASSES)
    res = TEMPLATE.fit(_ctx(data, num_epochs=1, base_gradient_multiplier=0.0))
    torch.manual_seed(0)  # the template seeds with ctx.seed before building its network
    fresh = DetectorNet(len(CLASSES), True)
    trained_params = dict(res.module.encoder.net.named_parameters())
    trunk = {n for n, _ in fresh.trunk.named_parameters() if not n.startswith("lat")}
    assert trunk
    for name, p in fresh.named_parameters():
        same = torch.equal(p.detach(), trained_params[name].detach())
        assert same == (name.removeprefix("trunk.") in trunk), name
