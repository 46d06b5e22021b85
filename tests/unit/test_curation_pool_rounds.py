"""The pieces the through-services AL benchmark relies on, with an in-memory platform double
(tests/integration/test_curation_benchmark.py runs the same through the real stack):
datasets that keep the inputs' own splits, suggestions that do not count held-out inputs as
"already labeled", pool-based rounds in the experiment record, and the simulation's
classifier being the transfer template's training code."""

from __future__ import annotations

import time
from datetime import UTC

import numpy as np
import pytest
from curation_doubles import InProcessTraining
from training_doubles import training_core

from firstlight.curation import simulate, strategies
from firstlight.curation.core import Curation
from firstlight.curation.store import CurationStore
from firstlight.domain.heads.transfer import TransferModel, TransferSettings, train_transfer
from firstlight.errors import FailedPrecondition
from firstlight.training.core import SUCCEEDED

APP = "app"
CONCEPTS = ["a", "b", "c"]


class FakePlatform:
    """Inputs: 30 pool (2 per class labeled, no split), 6 validation, 9 test (labeled, split on the input)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(3, 16)) * 2
        self.rows: dict[str, tuple[list[str], int]] = {}
        self.vecs: dict[str, np.ndarray] = {}
        for name, n, split in (("p", 30, 0), ("v", 6, 2), ("t", 9, 3)):
            for k in range(n):
                c = k % 3
                v = centres[c] + rng.normal(size=16)
                self.vecs[f"{name}{k}"] = (v / np.linalg.norm(v)).astype(np.float32)
                labeled = name != "p" or k < 6
                self.rows[f"{name}{k}"] = ([CONCEPTS[c]] if labeled else [], split)

    def inputs(self, app_id, *, labeled, split=0):
        return [(i, cs, s) for i, (cs, s) in self.rows.items() if labeled is None or bool(cs) == labeled]

    def labeled_inputs(self, app_id, concepts):
        return [(i, cs, []) for i, cs, _ in self.inputs(app_id, labeled=True)]  # no boxes

    def vectors(self, app_id, input_ids):
        return {i: self.vecs[i] for i in input_ids}

    def vectors_of(self, app_id, input_ids):  # training's read: the vectors and their model (the backbone)
        return self.vectors(app_id, input_ids), ""

    def write_splits(self, app_id, splits_by_input):
        self.written = dict(splits_by_input)


@pytest.fixture
def world(tmp_path):
    platform = FakePlatform()
    service = training_core(tmp_path, platform)
    curation = Curation(platform, InProcessTraining(service), CurationStore(f"sqlite:///{tmp_path / 'curation.db'}"))
    service.create_model(APP, "m", "transfer_classifier", CONCEPTS, {})
    yield platform, service, curation
    service.shutdown()


def _train(service) -> str:
    job = service.train(APP, "m", "ds", {})
    deadline = time.monotonic() + 60
    while (job := service.job(job["id"]))["state"] != SUCCEEDED:
        assert job["state"] < SUCCEEDED and time.monotonic() < deadline, job
        time.sleep(0.05)
    return str(job["version"])


def test_dataset_keeps_the_split_recorded_on_each_input(world) -> None:
    platform, service, _ = world
    ds = service.create_dataset(APP, "ds", fractions=(0.5, 0.5, 0.0), seed=3, input_splits=True)
    split = {r.input_id: r.split for r in ds["rows"]}
    assert {i for i, s in split.items() if s == 1} == {f"p{k}" for k in range(6)}  # unsplit -> train
    assert all(split[f"v{k}"] == 2 for k in range(6)) and all(split[f"t{k}"] == 3 for k in range(9))
    for k in range(6):  # nothing unsplit and labeled left: the train split would be empty
        platform.rows[f"p{k}"] = (platform.rows[f"p{k}"][0], 3)
    with pytest.raises(FailedPrecondition, match="train split would be empty"):
        service.create_dataset(APP, "ds2", input_splits=True)


def test_pool_round_is_recorded_and_held_out_inputs_are_not_labeled_for_the_strategy(world, monkeypatch) -> None:
    platform, service, curation = world
    service.create_dataset(APP, "ds", input_splits=True)
    v1 = _train(service)
    service.evaluate(APP, "m", v1, 3)
    seen = {}
    real = strategies.select

    def spy(strategy, **kw):
        seen["labeled"] = None if kw["labeled_embeddings"] is None else len(kw["labeled_embeddings"])
        return real(strategy, **kw)

    monkeypatch.setattr(strategies, "select", spy)
    _used, pool, out, number = curation.suggest(APP, "m", v1, "typiclust_margin", 4, 0, record_round=True)
    # 6 train labels, not 6 + 15 held-out: typiclust_margin is still in its cold start (< 3 per class)
    assert seen["labeled"] == 6 and pool == 24 and len(out) == 4 and number == 1
    for i in [s.input_id for s in out]:  # the oracle
        platform.rows[i] = ([CONCEPTS[int(i[1:]) % 3]], 0)
    service.create_dataset(APP, "ds", input_splits=True)
    v2 = _train(service)
    _, _, _, number = curation.suggest(APP, "m", v2, "margin", 4, 1, record_round=True)
    assert number == 2
    second, first = curation.rounds.rounds(APP)  # newest first
    assert (first["total_labels"], first["labels_spent"], first["candidate_version"], first["strategy"]) == (6, 6, v1, "typiclust_margin")
    assert (second["total_labels"], second["labels_spent"], second["previous_version"], second["candidate_version"]) == (10, 4, v1, v2)
    assert 0.0 <= first["metrics"]["test_accuracy"] <= 1.0 and "accuracy" in first["metrics"]  # test + validation
    assert "test_accuracy" not in second["metrics"]  # v2 was never evaluated on test
    assert second["previous_metrics"] == first["metrics"] and first["status"] == "done"
    _, _, _, number = curation.suggest(APP, "m", v2, "margin", 4, 1)
    assert number == 0 and len(curation.rounds.rounds(APP)) == 2  # not asked to record


def test_simulation_classifier_is_the_transfer_templates_training() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    y = np.repeat([3, 7], 20)
    X[y == 7] += 1.0
    model = simulate.default_fit(X, y)
    assert isinstance(model.head, TransferModel) and model.head.settings == TransferSettings().to_dict()
    assert model.classes_.tolist() == [3, 7]
    direct = train_transfer(X, [str(v) for v in y], ["3", "7"])
    np.testing.assert_array_equal(model.predict_proba(X), direct.predict_proba(X))


def test_stream_round_totals_leave_pool_rounds_out(tmp_path) -> None:
    from datetime import datetime

    store = CurationStore(f"sqlite:///{tmp_path / 'c.db'}")
    store.add_round(APP, {"model_id": "m", "kind": "pool", "labels_spent": 40, "total_labels": 40, "status": "done"})
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        store.add_item(conn, app_id=APP, input_id="x", model_id="m", model_version="1", score=0.9, strategy="margin", predicted="a", queued_at=now)
        assert store.set_labels(conn, APP, "x", ["a"], now)
    record = store.start_round(APP, {"model_id": "m"}, 1)
    assert record is not None and (record["round"], record["labels_spent"], record["total_labels"]) == (2, 1, 1)
