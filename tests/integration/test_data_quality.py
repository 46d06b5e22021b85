"""The data health check through the running stack (RunHealthCheck, SDK health_check): a small
planted app — exact copies under other ids, mirrored copies, blank images, a few digits among
animals — and the report finds them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.sdk import Firstlight, FirstlightError, UploadItem

from .test_curation import digit_pngs

pytestmark = pytest.mark.integration

APP = "quality-it"
CONCEPTS = ["bird", "dog", "zebra"]


def _mirror(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buf, "PNG")
    return buf.getvalue()


def _blank(level: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28, 3), level, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def planted(client: Firstlight) -> dict:
    client.create_app(APP)
    base = datasets.animal_mnist(20, seed=31, classes=CONCEPTS)
    exact = {f"copy-{i}": base[i * 7][0] for i in range(3)}
    # copy-0 and its source are two frames of one video
    clip = {"copy-0": {"video_id": "clip-0"}, base[0][0]: {"video_id": "clip-0"}}
    items = [UploadItem(d, [c], id=i, metadata=clip.get(i, {})) for i, c, d in base]
    mirrored = {f"mirror-{i}": base[i * 11 + 1][0] for i in range(3)}
    by_id = {i: (c, d) for i, c, d in base}
    items += [UploadItem(by_id[src][1], [by_id[src][0]], id=new, metadata=clip.get(new, {})) for new, src in exact.items()]
    items += [UploadItem(_mirror(by_id[src][1]), [by_id[src][0]], id=new) for new, src in mirrored.items()]
    items += [UploadItem(_blank(v), [CONCEPTS[k]], id=f"blank-{k}") for k, v in enumerate((0, 128, 255))]
    items += [UploadItem(d, [], id=f"digit-{n}") for n, d in enumerate(digit_pngs(3))]
    assert not client.upload(APP, items).failures
    client.wait_indexed(APP, len(items), timeout=300)
    return {"exact": exact, "mirrored": mirrored, "n": len(items)}


def test_health_check_finds_the_planted_problems(client: Firstlight, planted: dict) -> None:
    resp = client.health_check(APP, max_examples=50)
    checks = {c.name: c for c in resp.checks}
    assert resp.examined == planted["n"]
    groups = [(set(g.input_ids), g.kind) for g in resp.duplicate_groups]
    for new, src in planted["exact"].items():
        assert ({new, src}, "exact") in groups
    near = set().union(*(m for m, k in groups if k == "near")) if groups else set()
    assert sum(new in near and src in near for new, src in planted["mirrored"].items()) >= 2
    assert set(checks["corrupt_or_blank"].input_ids) == {"blank-0", "blank-1", "blank-2"}
    assert checks["duplicates"].status in ("warn", "fail")
    top = [o.input_id for o in resp.outliers[:8]]
    assert sum(i.startswith("digit-") for i in top) >= 2, top
    assert resp.status == "fail" and "| duplicates |" in resp.markdown
    assert {f.input_id for f in resp.flagged_images} >= {"blank-0", "blank-1", "blank-2"}


def test_frames_of_one_video_are_not_duplicates(client: Firstlight, planted: dict) -> None:
    resp = client.health_check(APP, group_key="video_id", max_examples=50)
    groups = [set(g.input_ids) for g in resp.duplicate_groups]
    assert {"copy-0", planted["exact"]["copy-0"]} not in groups
    assert {"copy-1", planted["exact"]["copy-1"]} in groups


def test_health_check_of_a_dataset_reports_leaks(client: Firstlight, planted: dict) -> None:
    ds = client.create_dataset(APP, "main", concepts=CONCEPTS, fractions=(0.5, 0.25, 0.25), seed=0)
    # the check ran when the version was frozen and is recorded with it (3 exact copies of 69: ≥ 1 % warns)
    checks = {c.name: c for c in ds.health.checks}
    assert checks.keys() >= {"duplicates", "leaks", "tiny_concepts"} and checks["duplicates"].status in ("warn", "fail"), ds.health
    assert ds.health.status in ("warn", "fail")
    client.create_model(APP, "animals", CONCEPTS, exist_ok=True)
    if ds.health.status == "fail":  # e.g. a copy in another split: refused when asked
        with pytest.raises(FirstlightError, match=r"FAILED_PRECONDITION.*fails its health check"):
            client.start_training(APP, "animals", "main", require_passing_check=True)
    else:  # a warning refuses nothing
        client.start_training(APP, "animals", "main", require_passing_check=True)
    resp = client.health_check(APP, dataset_id="main", images=False)
    checks = {c.name: c for c in resp.checks}
    assert checks["leaks"].status in ("pass", "fail") and checks["corrupt_or_blank"].status == "skip"
    assert checks["imbalance"].status == "pass" and checks["tiny_concepts"].status == "pass"
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.health_check(APP, dataset_id="no-such-dataset")
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT"):
        client.health_check(APP, near_duplicate_threshold=0.2)


def test_embedding_map(client: Firstlight, planted: dict) -> None:
    ids, coords, labels = client.embedding_map(APP, method="pca")
    assert len(ids) == planted["n"] and coords.shape == (planted["n"], 2)
    assert set(labels) == set(CONCEPTS) | {""}  # the digits are unlabeled


def test_worst_slices_of_a_trained_version(client: Firstlight, planted: dict) -> None:
    try:
        client.create_dataset(APP, "main", concepts=CONCEPTS, fractions=(0.5, 0.25, 0.25), seed=0)
    except FirstlightError:
        pass  # made by the test above
    client.create_model(APP, "animals", CONCEPTS, exist_ok=True)
    client.train(APP, "animals", "main")
    resp = client.worst_slices(APP, "animals", split="test", min_size=3)
    assert resp.count > 10 and 0.0 <= resp.accuracy <= 1.0 and resp.split == "test"
    assert resp.slices and {s.field for s in resp.slices} <= {"concept", "cluster", "q_brightness", "q_contrast", "q_blur"}
    assert all(s.count >= 3 and s.accuracy_low <= s.accuracy <= s.accuracy_high for s in resp.slices)
    # ranked by the Brier score by default, each figure within its interval
    assert resp.rank_by == "brier" and 0.0 <= resp.brier <= 2.0 and 0.0 <= resp.f1 <= 1.0
    assert all(s.brier_low <= s.brier <= s.brier_high and s.f1_low <= s.f1 <= s.f1_high for s in resp.slices)
    gaps = [s.rank_gap for s in resp.slices]
    assert gaps == sorted(gaps, reverse=True)
    by_accuracy = client.worst_slices(APP, "animals", split="test", min_size=3, rank_by="accuracy")
    gaps = [s.confident_gap for s in by_accuracy.slices]
    assert by_accuracy.rank_by == "accuracy" and gaps == sorted(gaps, reverse=True) and gaps == [s.rank_gap for s in by_accuracy.slices]
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT"):
        client.worst_slices(APP, "animals", split="holdout")
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT: rank_by must be one of"):
        client.worst_slices(APP, "animals", rank_by="auc")


def test_a_new_users_folder_through_the_cli(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Upload a folder of class sub-folders with the CLI, then `firstlight check` and `map`."""
    from typer.testing import CliRunner

    from firstlight.cli import app as cli

    folder = tmp_path / "photos"
    datasets.export_animal_mnist(folder, per_class=8, seed=41)
    for k, src in enumerate(sorted((folder / "cat").glob("*.png"))[:5]):  # five copies under other names
        (src.parent / f"copy-{k}.png").write_bytes(src.read_bytes())
    (folder / "bear" / "blank.png").write_bytes(_blank(0))
    runner = CliRunner()
    up = runner.invoke(cli, ["upload", "cli-check", str(folder), "--data-dir", str(stack.data_dir)])
    assert up.exit_code == 0, up.output
    out = runner.invoke(cli, ["check", "cli-check", "--examples", "3", "--data-dir", str(stack.data_dir)])
    assert out.exit_code == 1, out.output  # a failing check (duplicates: 5 of 86 ≥ 5 %) exits 1
    assert "fail" in out.output and "exact duplicates" in out.output
    # dedupe: a dry run says what would go; --yes keeps one of each group and deletes the rest
    dry = runner.invoke(cli, ["dedupe", "cli-check", "--data-dir", str(stack.data_dir)])
    assert dry.exit_code == 0 and dry.output.count("would keep") >= 5 and "dry run" in dry.output, dry.output
    done = runner.invoke(cli, ["dedupe", "cli-check", "--yes", "--data-dir", str(stack.data_dir)])
    assert done.exit_code == 0 and done.output.count("kept ") >= 5, done.output
    with Firstlight.from_stack(stack.data_dir) as fl:
        assert not [g for g in fl.health_check("cli-check").duplicate_groups if g.kind == "exact"]
    png = tmp_path / "map.png"
    m = runner.invoke(cli, ["map", "cli-check", "--out", str(png), "--data-dir", str(stack.data_dir)])
    assert m.exit_code == 0, m.output
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_keep_one_through_the_sdk(client: Firstlight, planted: dict) -> None:
    """After the other tests: keep a source, delete its exact copy; a digit is no copy of an animal."""
    src = planted["exact"]["copy-2"]
    with pytest.raises(FirstlightError, match="FAILED_PRECONDITION"):
        client.keep_one(APP, src, ["digit-0"])
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.keep_one(APP, src, ["no-such-input"])
    resp = client.keep_one(APP, src, ["copy-2"])
    assert resp.kept == src and list(resp.deleted_input_ids) == ["copy-2"] and resp.kind == "exact"
    assert "copy-2" not in {i for g in client.health_check(APP, max_examples=50).duplicate_groups for i in g.input_ids}
