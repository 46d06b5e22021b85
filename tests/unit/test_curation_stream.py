"""Stream curation core: screening under a policy (threshold, rate, budget, dedupe), labels
marking queue items done, rounds that retrain after N labels, stream drift, DLQ parsing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from firstlight.curation.events import parse_prediction
from firstlight.curation.ports import Job, ModelInfo, VersionInfo
from firstlight.curation.store import LABELED, QUEUED, CurationStore
from firstlight.curation.stream import Prediction, Rounds, StreamCuration, StreamDrift, make_policy
from firstlight.errors import InvalidArgument, NotFound
from firstlight.messaging.bus import PoisonMessage
from firstlight.v1 import common_pb2, events_pb2


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def pred(input_id: str, margin: float, app: str = "a", model: str = "m", emb=None, idx: int = 0) -> Prediction:  # type: ignore[no-untyped-def]
    return Prediction(app, model, "1", input_id, {"margin": margin, "entropy": margin / 2, "least_confidence": margin / 3}, "cat", idx, emb)


@pytest.fixture
def stream(tmp_path) -> tuple[StreamCuration, Clock]:  # type: ignore[no-untyped-def]
    clock = Clock()  # a file, not sqlite://: the round worker thread needs the same database
    return StreamCuration(CurationStore(f"sqlite:///{tmp_path / 'c.db'}"), clock), clock


def test_policy_validation_names_the_field() -> None:
    assert make_policy("a", "m").strategy == "margin" and make_policy("a", "m").threshold == 0.5
    for kw, word in [
        ({"threshold": 1.5}, "threshold"),
        ({"strategy": "vibes"}, "strategy"),
        ({"budget": -1}, "budget"),
        ({"retrain_after_labels": 5}, "dataset_id"),
        ({"promotion_metric": "speed"}, "promotion_metric"),
        ({"drift_window": 3}, "drift_window"),
    ]:
        with pytest.raises(InvalidArgument, match=word):
            make_policy("a", "m", **kw)
    with pytest.raises(InvalidArgument, match="model_id"):
        make_policy("a", "")


def test_screen_threshold_budget_rate_dedupe(stream) -> None:  # type: ignore[no-untyped-def]
    s, clock = stream
    assert s.screen([pred("x", 0.9)]) == []  # no policy: nothing queued, nothing counted
    with pytest.raises(NotFound):
        s.get_policy("a")
    s.set_policy(make_policy("a", "m", threshold=0.6, max_per_minute=2, budget=3))
    queued = s.screen([pred("i1", 0.9), pred("i2", 0.3), pred("i3", 0.7), pred("i1", 0.95), pred("i4", 0.8), pred("", 0.9), pred("o", 0.99, model="other")])
    assert [q.input_id for q in queued] == ["i1", "i3"]  # i4 over the rate, i1 again a duplicate, other model ignored
    s.mark_published(queued)
    clock.now += timedelta(seconds=61)
    assert [q.input_id for q in s.screen([pred("i4", 0.8), pred("i5", 0.8)])] == ["i4"]  # i5 over the budget of 3
    rows, token, stats = s.queue("a", 0, 2, "")
    assert [r["input_id"] for r in rows] == ["i1", "i3"] and token
    rows2, token2, _ = s.queue("a", 0, 2, token)
    assert [r["input_id"] for r in rows2] == ["i4"] and not token2
    assert stats == dict(screened=8, below_threshold=1, skipped_rate=1, skipped_budget=1, duplicates=1, without_input_id=1, queued=3, labeled=0)
    # i4's event was never acknowledged: a redelivered prediction republishes it instead of counting a duplicate
    assert [q.input_id for q in s.screen([pred("i4", 0.8)])] == ["i4"]


def test_redelivered_predictions_are_screened_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """At-least-once delivery: the same event (idempotency key) again counts nothing and queues
    nothing new, but still republishes its queued item's unacknowledged event; the memory of keys
    is bounded (least recently seen dropped first)."""
    s = StreamCuration(CurationStore(f"sqlite:///{tmp_path / 'c.db'}"), Clock(), seen_size=3)
    s.set_policy(make_policy("a", "m", threshold=0.6, max_per_minute=1))
    keyed = lambda i, m, k: Prediction("a", "m", "1", i, {"margin": m, "entropy": 0, "least_confidence": 0}, "cat", key=k)  # noqa: E731
    first = [keyed("i1", 0.9, "k1"), keyed("i2", 0.3, "k2"), keyed("i3", 0.9, "k3")]
    assert [q.input_id for q in s.screen(first)] == ["i1"]  # i3 over the rate of 1 a minute
    assert [q.input_id for q in s.screen(first)] == ["i1"]  # redelivered before the ack: republished, nothing counted
    s.mark_published(s.screen(first))
    assert s.screen(first) == []  # acknowledged now: a redelivery changes nothing
    _, _, stats = s.queue("a", 0, 10, "")
    assert (stats["screened"], stats["below_threshold"], stats["skipped_rate"], stats["duplicates"], stats["queued"]) == (3, 1, 1, 0, 1)
    s.screen([keyed("i4", 0.1, "k4")])  # k1 is the least recently seen: dropped from the memory of 3
    s.screen([keyed("i1", 0.9, "k1")])  # no longer remembered: screened again, a duplicate of the queued i1
    _, _, stats = s.queue("a", 0, 10, "")
    assert (stats["screened"], stats["duplicates"]) == (5, 1)
    s.screen([keyed("i5", 0.1, "")])  # no key (an integration's event): never deduplicated
    s.screen([keyed("i5", 0.1, "")])
    assert s.queue("a", 0, 10, "")[2]["screened"] == 7
    s.screen([keyed("i6", 0.1, "k6"), keyed("i6", 0.1, "k6")])  # the same event twice in one batch: once
    assert s.queue("a", 0, 10, "")[2]["screened"] == 8


def test_labels_mark_items_done_once(stream) -> None:  # type: ignore[no-untyped-def]
    s, _ = stream
    s.set_policy(make_policy("a", "m"))
    s.mark_published(s.screen([pred("i1", 0.9), pred("i2", 0.9)]))
    assert s.on_labels([("a", "i1", ["cat"]), ("a", "unknown", ["dog"]), ("b", "i2", ["dog"])]) == {"a"}
    assert s.on_labels([("a", "i1", ["dog"])]) == set()  # relabel: not a new label
    rows, _, stats = s.queue("a", LABELED, 10, "")
    assert [(r["input_id"], r["concepts"]) for r in rows] == [("i1", ["dog"])] and stats["queued"] == 1
    assert [r["input_id"] for r in s.queue("a", QUEUED, 10, "")[0]] == ["i2"]


class FakeTrainer:
    """The curation core's Training port, as far as rounds use it."""

    def __init__(self, accuracies: list[float]) -> None:
        self.accuracies = accuracies
        self.serving = "1"
        self.versions = {"1": VersionInfo("1", "main", "ds0", {"accuracy": 0.5}, "")}
        self.calls: list[tuple] = []

    def extend_dataset(self, app_id: str, dataset_id: str) -> str:
        return f"ds{len(self.calls)}"

    def train(self, app_id, model_id, dataset_id, promotion):  # type: ignore[no-untyped-def]
        self.calls.append((dataset_id, promotion))
        v = str(len(self.versions) + 1)
        acc = self.accuracies.pop(0)
        better = acc > self.versions[self.serving].validation_metrics["accuracy"] + promotion[1]
        self.versions[v] = VersionInfo(v, dataset_id, v, {"accuracy": acc}, "promoted" if better else "kept the serving version")
        if better:
            self.serving = v
        return Job(v, 3, v, "")

    def job(self, app_id, job_id):  # type: ignore[no-untyped-def]
        return Job(job_id, 3, job_id, "")

    def model(self, app_id, model_id):  # type: ignore[no-untyped-def]
        return ModelInfo(app_id, model_id, "transfer_classifier", ["cat", "dog"], self.serving)

    def version(self, app_id, model_id, version):  # type: ignore[no-untyped-def]
        return self.versions.get(version)


def wait_rounds(store: CurationStore, n: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = store.rounds("a")
        if len(rows) >= n and all(r["status"] != "running" for r in rows):
            return rows
        time.sleep(0.02)
    raise AssertionError(store.rounds("a"))


def test_rounds_retrain_after_n_labels_and_record_promotion(stream) -> None:  # type: ignore[no-untyped-def]
    s, _ = stream
    trainer = FakeTrainer([0.8, 0.7])
    rounds = Rounds(s.store, s, trainer, poll_s=0.01)
    s.set_policy(make_policy("a", "m", retrain_after_labels=2, dataset_id="main", promotion_min_gain=0.01))
    s.mark_published(s.screen([pred(f"i{k}", 0.9) for k in range(5)]))
    for app in s.on_labels([("a", "i0", ["cat"])]):
        assert rounds.maybe_start(app) is None  # 1 label < 2
    for app in s.on_labels([("a", "i1", ["dog"]), ("a", "i2", ["cat"])]):
        rounds.maybe_start(app)
    (r1,) = wait_rounds(s.store, 1)
    assert r1["labels_spent"] == 3 and r1["promoted"] and r1["candidate_version"] == "2" and r1["previous_version"] == "1"
    assert r1["metrics"] == {"accuracy": 0.8} and r1["previous_metrics"] == {"accuracy": 0.5}
    assert trainer.calls == [("main", ("accuracy", 0.01))]
    for app in s.on_labels([("a", "i3", ["cat"]), ("a", "i4", ["cat"])]):
        rounds.maybe_start(app)
    r2, _ = wait_rounds(s.store, 2)
    assert r2["round"] == 2 and not r2["promoted"] and r2["total_labels"] == 5 and "kept" in r2["note"]
    assert all(r["round"] for r in s.queue("a", LABELED, 10, "")[0])
    rounds.shutdown()


def test_stream_drift_alerts_once_on_a_switch(stream) -> None:  # type: ignore[no-untyped-def]
    s, _ = stream
    s.set_policy(make_policy("a", "m", drift_window=40))
    rng = np.random.default_rng(0)
    centre_a, centre_b = rng.normal(size=16), rng.normal(size=16)
    ref = centre_a + rng.normal(size=(200, 16))
    d = StreamDrift(s, lambda app, model, version: (ref, np.zeros(len(ref), int)), check_every=10)
    same = [pred(f"s{k}", 0.1, emb=centre_a + rng.normal(size=16)) for k in range(60)]
    assert d.observe(same) == [] and not d.report("a", "m").report.alert
    other = [pred(f"o{k}", 0.1, emb=centre_b + rng.normal(size=16)) for k in range(60)]
    alerts = d.observe(other[:45]) + d.observe(other[45:])
    assert len(alerts) == 1 and alerts[0].window == 40 and d.report("a", "m").report.alert


def test_malformed_prediction_events_are_poison() -> None:
    ok = events_pb2.PredictionMade(
        app_id="a",
        model_id="m",
        model_version="1",
        input_id="i",
        top_concepts=[common_pb2.ScoredConcept(name="cat", score=0.6)],
        uncertainty=events_pb2.Uncertainty(margin=0.5, entropy=0.4, least_confidence=0.4),
    )
    assert isinstance(parse_prediction(ok), Prediction)
    bad = [events_pb2.PredictionMade(), events_pb2.PredictionMade(app_id="a", model_id="m", model_version="1")]
    broken = events_pb2.PredictionMade()
    broken.CopyFrom(ok)
    broken.uncertainty.margin = 2.0
    slash = events_pb2.PredictionMade()
    slash.CopyFrom(ok)
    slash.input_id = "a/../b"
    for ev in [*bad, broken, slash]:
        assert isinstance(parse_prediction(ev), PoisonMessage)


def test_prediction_events_carry_uncertainty_top_concepts_and_embedding() -> None:
    from firstlight.inference.core import Observed, Resolved, uncertainty
    from firstlight.inference.events import prediction_events

    probs = np.array([[0.5, 0.5, 0.0], [0.98, 0.01, 0.01], [1 / 3, 1 / 3, 1 / 3]])
    margin, ent, least = uncertainty(probs)
    assert margin == pytest.approx([1.0, 0.03, 1.0]) and ent[2] == pytest.approx(1.0) and least[1] == pytest.approx(0.02)
    model = Resolved("m", "3", ["cat", "dog", "cow"], "app__m")
    evs = prediction_events(Observed("a", model, ["i1", "", "i3"], probs, np.eye(3, 4, dtype=np.float32)))
    assert [e.input_id for e in evs] == ["i1", "", "i3"] and all(e.model_version == "3" for e in evs)
    assert evs[1].top_concepts[0].name == "cat" and evs[1].predicted_index == 0 and evs[1].concept_count == 3
    assert evs[0].uncertainty.margin == pytest.approx(1.0) and list(evs[2].embedding) == [0, 0, 1, 0]
    assert isinstance(parse_prediction(evs[0]), Prediction)  # what inference sends, curation accepts


def test_drift_windows_are_bounded_across_app_models() -> None:
    """Other growing state: one drift window (and reference) per app model, at most
    ``max_models`` of them across apps; the least recently observed is dropped."""
    import numpy as np

    from firstlight.curation.stream import Prediction, StreamCuration, StreamDrift

    refs: list[tuple[str, str, str]] = []

    def reference(app_id: str, model_id: str, version: str):  # type: ignore[no-untyped-def]
        refs.append((app_id, model_id, version))
        rng = np.random.default_rng(0)
        return rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 2, 20)

    sd = StreamDrift(StreamCuration.__new__(StreamCuration), reference, check_every=1)
    sd._window_size = lambda app_id, model_id: 5  # type: ignore[method-assign]
    sd.max_models = 3
    for app in "abcde":
        sd.observe([Prediction(app, "m", "1", f"{app}{k}", {"margin": 0.1}, "x", k % 2, np.full(4, k, np.float32)) for k in range(5)])
    assert list(sd._windows) == [("c", "m"), ("d", "m"), ("e", "m")]
    assert {k[:2] for k in sd._refs} <= set(sd._windows)


def test_a_round_waits_when_training_does_not_answer(stream) -> None:  # type: ignore[no-untyped-def]
    from firstlight.errors import Unavailable

    s, _ = stream
    trainer = FakeTrainer([0.9])
    rounds = Rounds(s.store, s, trainer, poll_s=0.01)
    s.set_policy(make_policy("a", "m", retrain_after_labels=1, dataset_id="main"))
    s.mark_published(s.screen([pred("i0", 0.9)]))
    down = trainer.model

    def unavailable(app_id, model_id):  # type: ignore[no-untyped-def]
        raise Unavailable("training restarting")

    trainer.model = unavailable  # type: ignore[method-assign]
    for app in s.on_labels([("a", "i0", ["cat"])]):
        assert rounds.maybe_start(app) is None  # no exception into the consumer; the label stays unused
    assert s.store.unused_labels("a") == 1 and s.store.rounds("a") == []
    trainer.model = down  # type: ignore[method-assign]
    assert rounds.maybe_start("a") is not None  # the next trigger starts it
    wait_rounds(s.store, 1)
    rounds.shutdown()
