"""The CurationService through the running stack: active-learning suggestions from a trained
model, label errors found by confident learning, drift between datasets."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from firstlight import datasets
from firstlight.sdk import Firstlight, FirstlightError, UploadItem

pytestmark = pytest.mark.integration

APP = "curation-it"
CONCEPTS = ["bird", "dog", "zebra"]


def digit_pngs(n: int) -> list[bytes]:
    from sklearn.datasets import load_digits

    images = load_digits().images[:n]
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray((img * 16).clip(0, 255).astype(np.uint8)).resize((28, 28)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def trained(client: Firstlight) -> dict:
    client.create_app(APP)
    labeled = datasets.animal_mnist(24, seed=21, classes=CONCEPTS)
    flipped = {labeled[i][0]: CONCEPTS[(CONCEPTS.index(labeled[i][1]) + 1) % 3] for i in (0, 30, 60)}  # 3 wrong labels
    pool = datasets.animal_mnist(12, seed=22, classes=CONCEPTS)
    items = [UploadItem(d, [flipped.get(i, c)], id=i) for i, c, d in labeled]
    items += [UploadItem(d, [], id=f"pool-{i}") for i, _, d in pool]
    items += [UploadItem(d, [], id=f"digit-{n}") for n, d in enumerate(digit_pngs(30))]
    assert not client.upload(APP, items).failures
    client.wait_indexed(APP, len(items), timeout=300)
    client.create_dataset(APP, "main", concepts=CONCEPTS, fractions=(0.7, 0.3, 0.0), seed=0)
    client.create_model(APP, "animals", CONCEPTS)
    client.train(APP, "animals", "main")
    return {"flipped": flipped, "pool": [f"pool-{i}" for i, _, _ in pool]}


def test_suggestions_are_distinct_unlabeled_inputs_with_difficulty(client: Firstlight, trained: dict) -> None:
    resp = client.suggest(APP, "animals", batch_size=8, seed=1)
    ids = [s.input_id for s in resp.suggestions]
    assert len(ids) == 8 == len(set(ids)) and resp.pool_size == 36 + 30
    assert all(i.startswith(("pool-", "digit-")) for i in ids)
    assert {s.difficulty for s in resp.suggestions} <= {"easy", "medium", "hard"}
    margin = client.suggest(APP, "animals", batch_size=5, strategy="margin")
    confidences = [s.confidence for s in margin.suggestions]
    assert max(confidences) < 0.999  # margin picks inputs the model is unsure about
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT"):
        client.suggest(APP, "animals", strategy="psychic")
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.suggest(APP, "no-such-model")


def test_label_errors_surface_the_flipped_labels(client: Firstlight, trained: dict) -> None:
    resp = client.label_errors(APP, concepts=CONCEPTS, folds=4, max_results=6)
    found = {e.input_id: e for e in resp.errors}
    assert resp.examined == 72
    hits = [i for i in trained["flipped"] if i in found]
    assert len(hits) >= 2, (trained["flipped"], [(e.input_id, e.given_concept, e.suggested_concept) for e in resp.errors])
    for i in hits:  # the suggestion is the true concept, not the flipped one
        assert found[i].suggested_concept != trained["flipped"][i]


def test_drift_alerts_on_another_dataset_not_on_the_same(client: Firstlight, trained: dict) -> None:
    same = client.drift(APP, recent_input_ids=trained["pool"])
    other = client.drift(APP, recent_input_ids=[f"digit-{n}" for n in range(30)])
    assert other.alert and other.centroid_distance > same.centroid_distance
    assert not same.alert, same
