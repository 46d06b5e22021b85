"""A visual_detector version served through the real parts: trained in-process on generated scenes
(test_detector_ingestion.py does the same from box labels uploaded through ingestion), exported with the deep Triton exporter into the stack's
model repository, announced on ``model.version.ready``, loaded by the real tritonserver (Python
backend running the maps in ONNX Runtime and the TorchScript decode + NMS), and returned as regions by InferenceService.Predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from firstlight.datasets import png_bytes
from firstlight.messaging import topics
from firstlight.messaging.bus import new_header
from firstlight.sdk import Firstlight
from firstlight.training.deep import hyper as deep_hyper
from firstlight.training.deep.detector import TEMPLATE
from firstlight.training.deep.loop import LocalContext
from firstlight.training.deep.scenes import scene_data
from firstlight.training.deep.triton_export import export_deep
from firstlight.v1 import events_pb2, inference_pb2

from .helpers import eventually
from .kafka_io import produce

pytestmark = pytest.mark.integration

APP = "det-it"
CONCEPTS = ["bear", "bird", "giraffe"]


def test_detector_version_is_served_with_regions(stack, client: Firstlight, tmp_path) -> None:  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = scene_data(48, 8, 8, size=64, classes=CONCEPTS)
        hyper = deep_hyper.parse_deep("visual_detector", {"image_size": 64, "batch_size": 16, "num_epochs": 2, "detection_score_threshold": 0.05})
        result = TEMPLATE.fit(LocalContext(data, hyper, tmp_path / "job", seed=0, device="cpu", resume=False))
    finally:
        torch.set_num_threads(threads)
    name = export_deep(stack.runtime_repository, APP, "det", 1, result, CONCEPTS)
    event = events_pb2.ModelVersionReady(
        header=new_header("test", f"{APP}/det/1"),
        app_id=APP,
        model_id="det",
        version="1",
        triton_model=name,
        concepts=CONCEPTS,
        serving=True,
        kind="detector",
        image_size=64,
    )
    produce(stack.broker.bootstrap, topics.MODEL_VERSION_READY, topics.event_key(APP, "det"), event.SerializeToString(), sign_with=stack.event_keys)

    images = data.test.images[:4]
    request = inference_pb2.PredictRequest(app_id=APP, model_id="det", images=[png_bytes(im) for im in images])

    def served():  # type: ignore[no-untyped-def]
        try:
            return client.inference.Predict(request, timeout=60)
        except Exception as exc:
            if "NOT_FOUND" not in str(exc) and "not exist" not in str(exc):
                raise
            return None

    resp = eventually(served, timeout=180, what="detector served")
    # the maps in ONNX Runtime, the decode/NMS in TorchScript after them (issue 17)
    assert f"deep model {name} v1: onnxruntime on cpu" in (stack.log_dir / "triton.log").read_text()
    assert resp.model_id == "det" and resp.model_version == "1" and len(resp.predictions) == 4
    expected = result.module(torch.from_numpy(np.stack(images))).numpy()
    assert any(p.regions for p in resp.predictions)
    for pred, want in zip(resp.predictions, expected):
        want = want[want[:, 5] >= 0]
        got = [(r.concept, r.score, r.box.x0, r.box.y0, r.box.x1, r.box.y1) for r in pred.regions]
        assert [g[0] for g in got] == [CONCEPTS[int(w[5])] for w in want]
        np.testing.assert_allclose([g[1:] for g in got] or np.zeros((0, 5)), want[:, [4, 0, 1, 2, 3]] if len(want) else np.zeros((0, 5)), atol=1e-4)
        # concepts: each concept found, with its best region's score
        assert {c.name: c.score for c in pred.concepts} == pytest.approx({c: max(g[1] for g in got if g[0] == c) for c in {g[0] for g in got}})
    # the SDK's detect() returns the same regions
    sdk = client.detect(list(request.images), model="det", app_id=APP)
    assert [[(r.concept, r.score, r.box) for r in regs] for regs in sdk] == [
        [(r.concept, r.score, (r.box.x0, r.box.y0, r.box.x1, r.box.y1)) for r in p.regions] for p in resp.predictions
    ]
    # top_k caps regions; min_score drops the weak ones
    capped = client.inference.Predict(inference_pb2.PredictRequest(app_id=APP, model_id="det", images=request.images, top_k=1, min_score=0.06), timeout=60)
    assert all(len(p.regions) <= 1 and all(r.score >= 0.06 for r in p.regions) for p in capped.predictions)
