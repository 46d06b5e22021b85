"""What a labeling team needs besides labels: queue leases (two labelers never hold the same item;
a lease expires), who labeled what, stored pool scores (filters, sort by uncertainty), the exact
inputs of a confusion cell, and promotion by hand under the promotion rule."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from made_images import png
from sqlalchemy import inspect
from training_doubles import RecordedEvents

from firstlight.blobstore import LocalBlobStore
from firstlight.config import ImageLimits
from firstlight.curation.leases import QueueLeases
from firstlight.curation.pool_scores import PoolScoring, top_and_margin
from firstlight.curation.ports import LabelState, Scores
from firstlight.curation.store import CurationStore
from firstlight.curation.stream import Prediction, StreamCuration, make_policy
from firstlight.domain import evaluation
from firstlight.errors import FailedPrecondition, InvalidArgument, NotFound
from firstlight.ingestion.core import Ingestion, NewInput
from firstlight.ingestion.store import MetadataStore, make_engine


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def queue(tmp_path):  # type: ignore[no-untyped-def]
    clock = Clock()
    stream = StreamCuration(CurationStore(f"sqlite:///{tmp_path / 'c.db'}"), clock)
    stream.set_policy(make_policy("a", "m"))
    stream.screen([Prediction("a", "m", "1", f"i{k}", {"margin": 0.9}, "cat") for k in range(4)])
    return QueueLeases(stream), stream, clock


def test_two_labelers_never_hold_the_same_item_and_leases_expire(queue) -> None:  # type: ignore[no-untyped-def]
    leases, stream, clock = queue
    a, _, _ = leases.lease("a", "alice", 60)
    b, _, others = leases.lease("a", "bob", 60)
    assert (a["input_id"], b["input_id"], others) == ("i0", "i1", 1)
    again, expires, _ = leases.lease("a", "alice", 60)  # a reload: the same item, renewed
    assert again["input_id"] == "i0" and expires == clock.now + timedelta(seconds=60)
    skipped, _, _ = leases.lease("a", "alice", 60, release="i0", exclude=["i0"])  # x: next free one, not bob's
    assert skipped["input_id"] == "i2"
    # Alice labels i2; curation has not seen the label yet: she names it and gets the next free
    # one, while i2 stays hers: carol (skipping the free i0) gets nothing.
    nxt, _, _ = leases.lease("a", "alice", 60, exclude=["i0", "i2"])
    assert nxt["input_id"] == "i3"
    assert leases.lease("a", "carol", 60, exclude=["i0"])[0] is None
    stream.on_labels([("a", "i2", ["cat"])])  # the label arrives: i2 is no longer waiting
    assert leases.lease("a", "carol", 60, exclude=["i0"])[0] is None  # i1 (bob), i3 (alice)
    assert leases.lease("a", "carol", 60)[0]["input_id"] == "i0"  # released by alice: free again
    clock.now += timedelta(seconds=61)  # everyone walked away: their leases ended
    assert leases.lease("a", "dave", 60, exclude=["i0"])[0]["input_id"] == "i1"
    for bad in ({"holder": ""}, {"holder": "a b"}, {"holder": "x" * 129}, {"holder": "h", "lease_seconds": 5}, {"holder": "h", "lease_seconds": 4000}):
        with pytest.raises(InvalidArgument):
            leases.lease("a", **bad)


def test_labels_record_who_and_when(tmp_path: Path) -> None:
    core = Ingestion(MetadataStore(make_engine(f"sqlite:///{tmp_path / 'm.db'}")), LocalBlobStore(tmp_path / "b"), ImageLimits())
    core.create_app("app")
    core.post_inputs("app", [NewInput(png(0), id="x", concepts=["cat"])])
    core.annotate("app", [("x", ["dog"], [], 0)], "alice (k1)")
    core.annotate("app", [("x", ["cat", "bird"], [], 0)], "bob (k2)")  # cat is kept as it was
    records = {c: (by, at is not None) for c, by, at in core.get_input("app", "x").label_records}
    assert records == {"cat": ("", False), "dog": ("alice (k1)", True), "bird": ("bob (k2)", True)}


def test_an_old_store_gets_the_label_columns(tmp_path: Path) -> None:
    """A store as the code before label records left it (migration 0004) is upgraded in place."""
    import sqlite3

    fixture = Path(__file__).parents[1] / "fixtures" / "legacy_stores" / "ingestion-d94866b.sqlite.sql"
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.executescript(fixture.read_text())
    migrated = make_engine(url)
    assert {"labeled_by", "labeled_at"} <= {c["name"] for c in inspect(migrated).get_columns("input_concepts")}
    core = Ingestion(MetadataStore(migrated), LocalBlobStore(tmp_path / "b"), ImageLimits())
    core.create_app("fresh-app")
    core.post_inputs("fresh-app", [NewInput(png(1), id="x")])
    core.annotate("fresh-app", [("x", ["cat"], [], 0)], "carol (k3)")
    [(concept, by, at)] = core.get_input("fresh-app", "x").label_records
    assert (concept, by) == ("cat", "carol (k3)") and at is not None and at.tzinfo is not None


def fake_curation(n: int):  # type: ignore[no-untyped-def]
    """The curation core's ports as PoolScoring uses them: the platform's inputs, and the
    training service's model lookup and scores (here p(cat) = (k+1)/(n+1) for input k)."""
    ids = [f"i{k:03d}" for k in range(n)]
    vec = {i: np.array([k + 1.0, n - k], np.float32) for k, i in enumerate(ids)}
    # odd inputs unlabeled; even ones labeled "cat" (split 1 or 2 by k % 4), at revision 1
    states = [LabelState(i, () if k % 2 else ("cat",), 0 if k % 2 else 1 + (k % 4) // 2, 1) for k, i in enumerate(ids)]
    platform = SimpleNamespace(label_states=lambda app_id: list(states))

    def model_version(app_id, model_id, version):  # type: ignore[no-untyped-def]
        if model_id != "m":
            raise NotFound("no such model")
        return SimpleNamespace(concepts=["cat", "dog"]), version or "2"

    def scores(app_id, model_id, version, batch):  # type: ignore[no-untyped-def]
        X = np.stack([vec[i] for i in batch]) if batch else np.zeros((0, 2), np.float32)
        return Scores(version, ["cat", "dog"], list(batch), X / X.sum(axis=1, keepdims=True) if len(X) else X)

    return SimpleNamespace(platform=platform, _model_version=model_version, training=SimpleNamespace(scores=scores))


def wait(scoring: PoolScoring, job: dict) -> dict:
    for _ in range(200):
        job = scoring.job("a", job["id"])
        if job["state"] != "running":
            return job
        time.sleep(0.02)
    raise AssertionError("scoring did not finish")


def test_scoring_the_pool_stores_predictions_to_filter_and_sort(tmp_path: Path) -> None:
    n = 700  # two batches of 512
    scoring = PoolScoring(fake_curation(n), CurationStore(f"sqlite:///{tmp_path / 'c.db'}"))
    job = wait(scoring, scoring.start("a", "m", "", unlabeled_only=False))
    assert (job["state"], job["scored"], job["total"], job["model_version"]) == ("succeeded", n, n, "2")
    rows, token, total, version = scoring.predictions("a", "m", "", "dog", 0.0, 0.0, "", 100, "")
    assert version == "2" and total == n // 2 and len(rows) == 100 and token
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True) and {r["predicted"] for r in rows} == {"dog"}
    rest, _, _, _ = scoring.predictions("a", "m", "", "dog", 0.0, 0.0, "", 100, token)
    assert not {r["input_id"] for r in rest} & {r["input_id"] for r in rows}
    band, _, n_band, _ = scoring.predictions("a", "m", "2", "", 0.4, 0.6, "uncertainty", 1000, "")
    assert n_band and all(0.4 <= r["score"] <= 0.6 for r in band)
    assert [r["uncertainty"] for r in band] == sorted((r["uncertainty"] for r in band), reverse=True)
    with pytest.raises(InvalidArgument):
        scoring.predictions("a", "m", "", "", 0.0, 0.0, "", 100, token)  # a token of another filter
    for bad in ((0.7, 0.2, ""), (-0.1, 0.0, ""), (0.0, 1.5, ""), (0.0, 0.0, "best")):
        with pytest.raises(InvalidArgument):
            scoring.predictions("a", "m", "", "", bad[0], bad[1], bad[2], 10, "")
    half = wait(scoring, scoring.start("a", "m", "2", unlabeled_only=True))  # rescoring replaces the version's rows
    assert half["total"] == n // 2 and scoring.predictions("a", "m", "2", "", 0.0, 0.0, "", 10, "")[2] == n // 2
    with pytest.raises(NotFound):
        scoring.start("a", "nope", "", False)
    with pytest.raises(NotFound):
        scoring.job("b", job["id"])  # another app's job


def test_top_and_margin() -> None:
    top, p1, unsure = top_and_margin(np.array([[0.7, 0.2, 0.1], [0.4, 0.45, 0.15]]))
    assert list(top) == [0, 1] and np.allclose(p1, [0.7, 0.45]) and np.allclose(unsure, [0.5, 0.95])


def test_confusion_cells_know_their_inputs() -> None:
    concepts = ["cat", "dog"]
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = [["cat"], ["cat"], ["dog"], ["dog"]]
    preds = evaluation.top1_predictions(["a", "b", "c", "d"], y, proba, concepts)
    report = evaluation.evaluate(y, proba, concepts)
    for i, t in enumerate(concepts):
        for j, p in enumerate(concepts):
            assert report.confusion[i][j] == sum(1 for _, tt, pp, _ in preds if (tt, pp) == (t, p))
    assert preds[1] == ("b", "cat", "dog", pytest.approx(0.8))


def test_promotion_by_hand_is_guarded_by_the_rule(tmp_path: Path) -> None:
    from firstlight.training.core import TrainingCore
    from firstlight.training.store import TrainingStore

    store = TrainingStore(f"sqlite:///{tmp_path / 't.db'}")
    events = RecordedEvents()
    core = TrainingCore(store, peers=None, events=events, runners=[], work_root=tmp_path / "jobs")  # type: ignore[arg-type]
    store.insert_model("a", "m", "transfer_classifier", ["cat", "dog"], {})
    for v, acc in ((1, 0.8), (2, 0.7), (3, 0.9)):
        store.insert_version(
            app_id="a",
            model_id="m",
            version=v,
            dataset_id="d",
            dataset_version="x",
            settings={},
            validation_metrics={"accuracy": acc},
            train_report={"embedding_model": ""},
            train_seconds=1.0,
            triton_model="t",
            activation="softmax",
            promotion_note="",
        )
    store.set_serving("a", "m", "1")
    with pytest.raises(FailedPrecondition, match="the candidate is worse"):
        core.promote("a", "m", "2")
    model, ok, note, previous = core.promote("a", "m", "3")
    assert ok and model["serving_version"] == "3" and previous == "1" and note.startswith("promoted by hand: promoted: accuracy")
    assert (events.ready[-1].version, events.ready[-1].serving) == ("3", True)
    model, ok, note, _ = core.promote("a", "m", "2", override_reason="roll back: v3 mislabels night images")
    assert model["serving_version"] == "2" and "over the rule (roll back" in note
    assert store.get_version("a", "m", 2)["promotion_note"] == note
    assert core.promote("a", "m", "2")[2] == "version 2 is already serving"
    for bad in ({"version": ""}, {"version": "3", "metric": "vibes"}, {"version": "3", "override_reason": "x" * 513}):
        with pytest.raises(InvalidArgument):
            core.promote("a", "m", **bad)
    with pytest.raises(NotFound):
        core.promote("a", "m", "9")
