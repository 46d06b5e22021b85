"""Explanations of a prediction through the running stack: a transfer head trained on a small
animal set, then ExplainPrediction over gRPC (SDK), HTTP (gateway) and the CLI — the overlay is
a PNG of the input's aspect, the explained score is the one serving predicts (torch for the
map, ONNX Runtime / Triton for serving: the same head on the same embedding), the evidence is
labeled with the concept, and unknown things are NOT_FOUND."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.sdk import Firstlight, FirstlightError, UploadItem

from .helpers import eventually

pytestmark = pytest.mark.integration

APP = "explain-it"
CONCEPTS = ["cat", "dog", "horse"]


@pytest.fixture(scope="module")
def trained(client: Firstlight) -> dict:
    client.create_app(APP)
    base = datasets.animal_mnist(12, seed=7, classes=CONCEPTS)
    items = [UploadItem(d, [c], id=i) for i, c, d in base]
    items.append(UploadItem(datasets.sample_photo("chelsea"), [], id="chelsea"))  # 451×300, unlabeled
    assert not client.upload(APP, items).failures
    client.wait_indexed(APP, len(items), timeout=300)
    client.create_dataset(APP, "main", concepts=CONCEPTS, fractions=(0.7, 0.3, 0.0), seed=0)
    client.create_model(APP, "animals", CONCEPTS, exist_ok=True)
    client.train(APP, "animals", "main")
    return {"labels": {i: c for i, c, _ in base}, "bytes": {i: d for i, _, d in base}}


def test_explain_a_stored_input(client: Firstlight, trained: dict) -> None:
    resp = client.explain(APP, "animals", input_id="chelsea", top_k=2, evidence=3)
    assert resp.model_version == "1" and resp.method == "gradcam++" and (resp.image_width, resp.image_height) == (451, 300)
    assert [c.concept for c in resp.concepts] and len(resp.concepts) == 2
    # the score explained is the one serving predicts on the same image
    photo = datasets.sample_photo("chelsea")

    def predicted() -> dict[str, float] | None:
        try:
            return dict(client.predict([photo], model="animals", app_id=APP, top_k=3)[0])
        except FirstlightError:  # the inference service learns of the version from an event
            return None

    served = eventually(predicted, timeout=60, what="trained model served")
    for c in resp.concepts:
        assert abs(c.score - served[c.concept]) < 0.02, (c.concept, c.score, served)
        over = Image.open(io.BytesIO(c.overlay_png))
        assert over.format == "PNG" and abs(over.width / over.height - 451 / 300) < 0.01
        sal = np.asarray(c.saliency).reshape(c.map_height, c.map_width)
        assert (c.map_height, c.map_width) == (7, 7) and sal.min() >= 0 and abs(sal.max() - 1) < 1e-5
        assert len(c.evidence) == 3 and all(trained["labels"][e.input_id] == c.concept and c.concept in e.concepts for e in c.evidence)
    assert Image.open(io.BytesIO(resp.grid_png)).format == "PNG"
    box = resp.model_input_box
    assert 0 < box.x0 < box.x1 < 1 and box.y0 == pytest.approx(16 / 256, abs=1e-3)  # the center crop of a landscape photo


def test_explain_image_bytes_the_cli_and_the_errors(stack, client: Firstlight, trained: dict, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from firstlight.cli import app as cli

    # the bytes of a training example (evidence is drawn from the train split): it is its own nearest evidence
    input_id = client.explain(APP, "animals", input_id="chelsea", top_k=1).concepts[0].evidence[0].input_id
    concept = trained["labels"][input_id]
    resp = client.explain(APP, "animals", image=trained["bytes"][input_id], top_k=3, method="gradcam")
    assert resp.input_id == "" and len(resp.concepts) == 3 and resp.method == "gradcam"
    nearest = {c.concept: c.evidence[0] for c in resp.concepts}
    assert nearest[concept].input_id == input_id and nearest[concept].similarity > 0.99
    out = tmp_path / "explain.png"
    run = CliRunner().invoke(cli, ["explain", APP, "animals", "chelsea", "--out", str(out), "--data-dir", str(stack.data_dir)])
    assert run.exit_code == 0, run.output
    assert Image.open(out).format == "PNG" and "chelsea" in run.output
    for kw, code in [
        ({"input_id": "no-such-input"}, "NOT_FOUND"),
        ({"input_id": "chelsea", "version": "9"}, "NOT_FOUND"),
        ({"input_id": "chelsea", "top_k": 11}, "INVALID_ARGUMENT"),
        ({"image": b"not an image"}, "INVALID_ARGUMENT"),
    ]:
        with pytest.raises(FirstlightError, match=code):
            client.explain(APP, "animals", **kw)
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.explain(APP, "no-such-model", input_id="chelsea")


def test_explain_over_http(stack, trained: dict) -> None:  # type: ignore[no-untyped-def]
    admin = {"Authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.gateway_url, timeout=120, headers=admin) as gw:
        url = f"/v1/apps/{APP}/models/animals/versions/serving/explain"
        r = gw.post(url, json={"input_id": "chelsea", "top_k": 1})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == "1" and len(body["concepts"]) == 1
        assert Image.open(io.BytesIO(base64.b64decode(body["concepts"][0]["overlay_png"]))).size[0] > 0
        r = gw.post(url + "?format=png", json={"input_id": "chelsea"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and Image.open(io.BytesIO(r.content)).format == "PNG"
        r = gw.post(url, json={"input_id": "no-such-input"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND", r.text
        r = gw.post(url, json={"input_id": "chelsea", "base64": "AAAA"})
        assert r.status_code == 400, r.text
