"""The data health check through the running stack (RunHealthCheck, SDK health_check): a small
planted app — exact copies under other ids, mirrored copies, blank images, a few digits among
animals — and the report finds them."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.v1 import curation_pb2, training_pb2

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
    # a camera per input (worst slices: chosen as a categorical key) and a unique shot id (not chosen)
    items = [UploadItem(d, [c], id=i, metadata={**clip.get(i, {}), "camera": "AB"[k % 2], "shot": f"s{k}"}) for k, (i, c, d) in enumerate(base)]
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


def test_the_quality_filter_and_histogram_find_the_planted_blank_and_dark_images(client: Firstlight, stack, planted: dict, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ListInputs.quality and GetQualityHistogram through the SDK and the CLI. Margins: the
    animals' and digits' blank_fraction is at most 0.80 and their highlight at least 0.79."""
    from typer.testing import CliRunner

    from firstlight.cli import app as cli

    blanks = {"blank-0", "blank-1", "blank-2"}
    assert {i.id for i in client.list_inputs(APP, quality="blank_fraction>=0.97")} == blanks
    assert client.count_inputs(APP, quality="blank_fraction>=0.97") == 3
    assert [i.id for i in client.list_inputs(APP, quality="highlight<=0.25")] == ["blank-0"]  # black; mid-gray and white are not dark
    assert {i.id for i in client.list_inputs(APP, quality="blank_fraction:0:0.9", page_size=7)} == {i.id for i in client.list_inputs(APP)} - blanks
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.count_inputs("no-such-app", quality="blur<=1")
    hist = client.quality_histogram(APP, "blank_fraction", bins=10)
    assert (len(hist.edges), sum(hist.counts), hist.unmeasured) == (11, planted["n"], 0)
    assert hist.counts[-1] == 3 and hist.edges[-1] == 1.0  # the blanks fill the top bucket alone
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT"):
        client.quality_histogram(APP, "sharpness")

    runner = CliRunner()
    ids = runner.invoke(cli, ["inputs", APP, "--where", "blank_fraction>=0.97", "--ids-only", "--data-dir", str(stack.data_dir)])
    assert ids.exit_code == 0 and set(ids.output.split()) == blanks, ids.output
    table = runner.invoke(cli, ["inputs", APP, "--where", "highlight<0.25", "--data-dir", str(stack.data_dir)])
    assert table.exit_code == 0 and "1 input(s) of quality-it with highlight ≤ 0.25" in table.output and "blank-0" in table.output, table.output
    bad = runner.invoke(cli, ["inputs", APP, "--where", "sharpness<1", "--data-dir", str(stack.data_dir)])
    assert bad.exit_code != 0 and "unknown quality metric 'sharpness'" in bad.output, bad.output
    png = tmp_path / "hist.png"
    out = runner.invoke(cli, ["quality-histogram", APP, "blank_fraction", "--bins", "10", "--png", str(png), "--data-dir", str(stack.data_dir)])
    assert out.exit_code == 0 and f"blank_fraction over {planted['n']} inputs" in out.output and "█" in out.output, out.output
    assert png.read_bytes()[:4] == b"\x89PNG"


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


def _splits(client: Firstlight, dataset_id: str) -> dict[str, int]:
    rows = client._training().ListDatasetRows(training_pb2.ListDatasetRowsRequest(app_id=APP, dataset_id=dataset_id), timeout=60).rows
    return {r.input_id: int(r.split) for r in rows}


def test_group_duplicates_resplits_so_no_planted_copy_leaks(client: Firstlight, stack, planted: dict) -> None:  # type: ignore[no-untyped-def]
    """CreateDataset draws a split per input: a planted copy and its source land in two splits
    for some seeds, and the health check recorded with the version fails on leaks. With
    group_duplicates (SDK, then the CLI's --group-duplicates), for the same seeds, every copy
    the detector groups sits in its source's split and the leaks check passes."""
    from typer.testing import CliRunner

    from firstlight.cli import app as cli

    leaky = []
    for seed in range(3):
        plain = client.create_dataset(APP, f"plain-{seed}", concepts=CONCEPTS, fractions=(0.5, 0.25, 0.25), seed=seed)
        if {c.name: c for c in plain.health.checks}["leaks"].status in ("warn", "fail"):
            leaky.append(seed)
        ds = client.create_dataset(APP, f"grouped-{seed}", concepts=CONCEPTS, fractions=(0.5, 0.25, 0.25), seed=seed, group_duplicates=True)
        leaks = {c.name: c for c in ds.health.checks}["leaks"]
        assert leaks.status == "pass" and leaks.count == 0, ds.health
        split = _splits(client, f"grouped-{seed}")
        assert all(split[new] == split[src] for new, src in planted["exact"].items()), split
        # the mirrors the health check's detector finds with the pixels (≥ 2 of 3 in its own test)
        assert sum(split[new] == split[src] for new, src in planted["mirrored"].items()) >= 2
        assert {c.train + c.validation + c.test for c in ds.counts} and {1, 2, 3} <= set(split.values())
    assert leaky, "no seed put a planted copy in another split than its source: the planted set no longer tests the re-split"
    out = CliRunner().invoke(cli, ["dataset", APP, "grouped-cli", "--split", "0.5,0.25,0.25", "--group-duplicates", "--data-dir", str(stack.data_dir)])
    assert out.exit_code == 0, out.output
    split = _splits(client, "grouped-cli")
    assert all(split[new] == split[src] for new, src in planted["exact"].items())
    with pytest.raises(FirstlightError, match=r"INVALID_ARGUMENT.*from_inputs"):
        client.create_dataset(APP, "grouped-from-inputs", from_inputs=True, group_duplicates=True)


def test_uniqueness_ranks_the_digits_and_blanks_unusual_and_pages_every_input(client: Firstlight, planted: dict) -> None:
    """ScoreUniqueness on the planted app: the unlabeled digits among the most unusual app-wide,
    the blank images (labeled as animals) the most unusual within their concepts; the
    representatives of each concept are animals of it; the pages list every input once."""
    first = client.uniqueness(APP, page_size=10, per_concept=3)
    assert first.examined == first.total_size == planted["n"] and first.scope == "app" and first.order == "unusual"
    top = [u.input_id for u in first.inputs]
    # measured through the stack: the 3 blanks first (0.71-0.99), the 3 digits next
    # (0.46-0.52), the first animal 0.45; asserted: blanks top 3, 2 digits in the top 8
    assert set(top[:3]) == {"blank-0", "blank-1", "blank-2"}, top
    assert sum(i.startswith("digit-") for i in top[:8]) >= 2, top
    assert all(not u.HasField("concept_score") for u in first.inputs if u.input_id.startswith("digit-"))  # unlabeled
    seen, token = list(top), first.next_page_token
    while token:
        page = client.uniqueness(APP, page_size=25, page_token=token)
        assert not page.representatives
        seen += [u.input_id for u in page.inputs]
        token = page.next_page_token
    assert len(seen) == len(set(seen)) == planted["n"]
    within = client.uniqueness(APP, scope="concept", page_size=10)
    # measured through the stack: the 3 blanks first within their concepts (0.69-0.99), the first animal 0.45
    assert {u.input_id for u in within.inputs[:3]} == {"blank-0", "blank-1", "blank-2"}, within.inputs
    assert within.total_size == planted["n"] - 3  # the digits have no concept
    reps = {r.concept: [u.input_id for u in r.inputs] for r in first.representatives}
    assert sorted(reps) == CONCEPTS
    for c, ids in reps.items():
        assert len(ids) == 3 and not any(i.startswith(("blank-", "digit-")) for i in ids), (c, ids)
    typical = client.uniqueness(APP, order="typical", concept="dog", page_size=1000)
    assert all("dog" in u.concepts for u in typical.inputs) and [u.score for u in typical.inputs] == sorted(u.score for u in typical.inputs)
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT"):
        client.uniqueness(APP, scope="everything")


def test_embedding_map(client: Firstlight, planted: dict) -> None:
    ids, coords, labels = client.embedding_map(APP, method="pca")
    assert len(ids) == planted["n"] and coords.shape == (planted["n"], 2)
    assert set(labels) == set(CONCEPTS) | {""}  # the digits are unlabeled


MAP_APP = "map-it"


def _map(client: Firstlight, app: str, **kw: object) -> object:
    job = client.start_embedding_map(app, **kw)  # type: ignore[arg-type]
    deadline = time.monotonic() + 120
    while job.state == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.embedding_map_job(app, job.id)
    assert job.state == "succeeded", job
    return job


def test_the_map_through_the_stack(stack, client: Firstlight) -> None:  # type: ignore[no-untyped-def]
    """The server's map of a small app: every indexed input once over the pages, animals and
    digits apart, the cache reused until an input is added, another app's key refused."""
    client.create_app(MAP_APP, exist_ok=True)
    animals = datasets.animal_mnist(12, seed=5, classes=["zebra"])
    items = [UploadItem(d, ["animal"], id=f"a{k}") for k, (_, _, d) in enumerate(animals)]
    items += [UploadItem(d, ["digit"], id=f"d{k}") for k, d in enumerate(digit_pngs(12))]
    assert not client.upload(MAP_APP, items).failures
    client.wait_indexed(MAP_APP, len(items), timeout=300)
    job = _map(client, MAP_APP)
    assert job.points == len(items) and not job.cached and job.progress == 1.0  # type: ignore[attr-defined]
    seen: list[str] = []
    token = ""
    while True:  # small pages: every point exactly once
        page = client._curation().ListEmbeddingMapPoints(curation_pb2.ListEmbeddingMapPointsRequest(app_id=MAP_APP, page_size=5, page_token=token), timeout=60)
        assert len(page.points) <= 5 and page.total_size == len(items)
        seen += [p.input_id for p in page.points]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(i.id for i in items) and len(seen) == len(set(seen))
    pts = list(client.embedding_map_points(MAP_APP))
    xy = {c: np.array([(p.x, p.y) for p in pts if list(p.concepts) == [c]]) for c in ("animal", "digit")}
    # animals and digits apart: the centroids' distance over the largest spread of a group
    spread = max(np.linalg.norm(v - v.mean(0), axis=1).mean() for v in xy.values())
    assert np.linalg.norm(xy["animal"].mean(0) - xy["digit"].mean(0)) > 1.5 * spread, xy  # measured: 2.55
    again = _map(client, MAP_APP)
    assert again.cached and again.map_key == job.map_key  # type: ignore[attr-defined]
    assert not client.upload(MAP_APP, [UploadItem(digit_pngs(13)[-1], ["digit"], id="d-new")]).failures
    client.wait_indexed(MAP_APP, len(items) + 1, timeout=300)
    grown = _map(client, MAP_APP)
    assert not grown.cached and grown.points == len(items) + 1 and grown.map_key != job.map_key  # type: ignore[attr-defined]
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT"):
        client.start_embedding_map(MAP_APP, method="umap")
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.embedding_map_job(MAP_APP, "map-nope")
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        list(client.embedding_map_points(MAP_APP, method="tsne"))  # none computed
    other = "map-it-other"
    client.create_app(other, exist_ok=True)
    _, key = client.create_api_key(other, "neighbour")
    with Firstlight.from_addresses(stack.addresses, api_key=key, timeout_s=60) as neighbour:
        with pytest.raises(FirstlightError, match="PERMISSION_DENIED"):
            neighbour.start_embedding_map(MAP_APP)
        with pytest.raises(FirstlightError, match="PERMISSION_DENIED"):
            list(neighbour.embedding_map_points(MAP_APP))
        with pytest.raises(FirstlightError, match="NOT_FOUND"):  # its own app: no map yet
            list(neighbour.embedding_map_points(other))


def test_worst_slices_of_a_trained_version(client: Firstlight, planted: dict) -> None:
    try:
        client.create_dataset(APP, "main", concepts=CONCEPTS, fractions=(0.5, 0.25, 0.25), seed=0)
    except FirstlightError:
        pass  # made by the test above
    client.create_model(APP, "animals", CONCEPTS, exist_ok=True)
    client.train(APP, "animals", "main")
    resp = client.worst_slices(APP, "animals", split="test", min_size=3)
    assert resp.count > 10 and 0.0 <= resp.accuracy <= 1.0 and resp.split == "test"
    assert resp.slices and {s.field for s in resp.slices} <= {"concept", "cluster", "q_brightness", "q_contrast", "q_blur", "metadata.camera"}
    # chosen from the inputs' metadata: the camera, not the unique shot id nor the one video's id
    assert list(resp.metadata_keys) == ["camera"] and {s.value for s in resp.slices if s.field == "metadata.camera"} <= {"A", "B"}
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
    asked = client.worst_slices(APP, "animals", split="test", min_size=3, limit=1000, metadata_keys=["camera", "shot"])
    assert list(asked.metadata_keys) == ["camera", "shot"] and "metadata.camera" in {s.field for s in asked.slices}
    assert "metadata.shot" not in {s.field for s in asked.slices}  # one input per shot: under min_size
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT: no input of the test split scored carries metadata key 'lens'"):
        client.worst_slices(APP, "animals", split="test", metadata_keys=["lens"])
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT: metadata key"):
        client.worst_slices(APP, "animals", metadata_keys=["camera\n"])


def test_the_map_coloured_by_prediction_and_dataset_split(client: Firstlight, planted: dict) -> None:
    """Each point's predicted concept by "animals" (scored for the page: the pool was not
    scored) and its split in dataset "main" (both made by the tests above when they ran)."""
    try:
        client.create_dataset(APP, "main", concepts=CONCEPTS, fractions=(0.5, 0.25, 0.25), seed=0)
    except FirstlightError:
        pass  # made by the tests above
    client.create_model(APP, "animals", CONCEPTS, exist_ok=True)
    if not client.versions(APP, "animals").versions:
        client.train(APP, "animals", "main")
    ids, _, predicted = client.embedding_map(APP, color_by="prediction", model_id="animals")
    assert len(ids) == planted["n"] and set(predicted) <= set(CONCEPTS) and len(set(predicted)) >= 2
    ids, _, splits = client.embedding_map(APP, color_by="split", dataset_id="main")
    assert {"train", "validation", "test"} <= set(splits) and "" in splits  # the digits are in no version
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.embedding_map(APP, color_by="prediction", model_id="no-such-model")


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
