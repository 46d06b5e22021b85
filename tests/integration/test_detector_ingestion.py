"""Box labels end to end through the real services: generated scenes uploaded with their boxes as
regions (SDK → StreamInputs → metadata store), a `visual_detector` job started from the
TrainingService reads them back (GetInput) into its training data, the version is exported to the
real Triton and InferenceService.Predict returns regions. A tiny run: shapes and concepts are
checked, never accuracy."""

from __future__ import annotations

import json

import pytest

from firstlight.datasets import png_bytes
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.training.deep.scenes import generate_scenes
from firstlight.v1 import training_pb2

from .helpers import eventually

pytestmark = pytest.mark.integration

APP = "det-boxes-it"
CONCEPTS = ["bear", "bird"]
TINY = {
    "architecture": "small_cnn",
    "image_size": "64",
    "batch_size": "16",
    "num_epochs": "2",
    "init_epochs": "1",
    "step_epochs": "1",
    "detection_score_threshold": "0.0",
}


def test_detector_trains_from_ingested_boxes_and_predicts_regions(stack, client: Firstlight, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client.create_app(APP)
    scenes = generate_scenes(41, split="train", seed=1, size=64, classes=CONCEPTS)
    items = [UploadItem(png_bytes(s.image), id=f"scene-{n:03d}", regions=list(s.boxes)) for n, s in enumerate(scenes[:40])]
    # an image labeled by concept only: in the dataset, but not detector training data
    items.append(UploadItem(png_bytes(scenes[0].image), ["bear"], id="concept-only"))
    # an unlabeled image, boxed afterwards with the CLI
    items.append(UploadItem(png_bytes(scenes[40].image), id="cli-boxed"))
    report = client.upload(APP, items)
    assert not report.failures and len(report.input_ids) == 42

    from typer.testing import CliRunner

    from firstlight.cli import app as cli

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"cli-boxed": [[b.concept, *b[:4]] for b in scenes[40].boxes]}))
    out = CliRunner().invoke(cli, ["label-boxes", APP, str(boxes), "--data-dir", str(stack.data_dir)])
    assert out.exit_code == 0, out.output
    assert [r.concept for r in client.get_input(APP, "cli-boxed").regions] == [b.concept for b in scenes[40].boxes]

    # regions come back from GetInput, and their concepts are the input's concepts
    got = client.get_input(APP, "scene-000")
    want = scenes[0].boxes
    assert [r.concept for r in got.regions] == [b.concept for b in want]
    assert [tuple(round(v, 4) for v in (r.box.x0, r.box.y0, r.box.x1, r.box.y1)) for r in got.regions] == [tuple(round(v, 4) for v in b[:4]) for b in want]
    assert set(got.concepts) == {b.concept for b in want}

    # a bad box is INVALID_ARGUMENT naming the field: on upload (a streamed failure, not fatal)...
    bad = client.upload(APP, [UploadItem(png_bytes(scenes[1].image), id="bad-box", regions=[("bear", (0.2, 0.2, 0.4, 1.2))])])
    assert [(f.code, f.id) for f in bad.failures] == [("INVALID_ARGUMENT", "bad-box")]
    assert "regions[0].box.y1 = 1.2" in bad.failures[0].message
    # ...and on annotation (all-or-nothing)
    with pytest.raises(FirstlightError, match=r"INVALID_ARGUMENT.*regions\[0\]\.box: x0"):
        client.annotate(APP, regions={"scene-001": [("bear", (0.6, 0.1, 0.2, 0.5))]})

    client.create_dataset(APP, "boxes", concepts=CONCEPTS, fractions=(0.6, 0.2, 0.2), seed=0)
    rows: list[training_pb2.TrainingProgress] = []
    job = client.train_deep(APP, "det", "boxes", CONCEPTS, template="visual_detector", settings=TINY, on_progress=rows.append)
    assert job.state == training_pb2.JOB_STATE_SUCCEEDED, job
    [v] = client.versions(APP, "det").versions
    assert v.template == "visual_detector" and "map_50" in v.validation_metrics
    # every scene has boxes; the concept-only input is left out of the detector's data
    assert sum(json.loads(v.fit_report_json)["counts"].values()) == 41

    images = [png_bytes(s.image) for s in generate_scenes(3, split="test", seed=2, size=64, classes=CONCEPTS)]

    def served():  # type: ignore[no-untyped-def]
        try:
            return client.detect(images, model="det", app_id=APP)
        except FirstlightError as exc:  # NOT_FOUND until the inference registry has the version
            if "NOT_FOUND" not in str(exc):
                raise
            return None

    detections = eventually(served, timeout=180, what="detector served")
    # threshold 0: every heatmap peak is a region, so even an untrained head returns some (at
    # most the export's 20 rows per image)
    assert len(detections) == 3 and all(1 <= len(regions) <= 20 for regions in detections)
    for regions in detections:
        for r in regions:
            assert r.concept in CONCEPTS and 0.0 <= r.score <= 1.0
            x0, y0, x1, y1 = r.box
            assert 0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0
