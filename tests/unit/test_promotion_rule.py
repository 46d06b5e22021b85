"""One promotion rule for heads and deep versions (training.evaluation.decide_promotion): the
policy's metric where the template reports it, else the template's primary metric; strictly
better by more than the policy's minimum gain; a tie keeps the serving version."""

from __future__ import annotations

import pytest

from firstlight.domain.errors import EvaluationError
from firstlight.domain.promotion import decide_promotion, metric_direction


def test_policy_metric_when_the_template_reports_it() -> None:
    cand = {"accuracy": 0.80, "macro_f1": 0.90}
    serv = {"accuracy": 0.85, "macro_f1": 0.70}
    ok, note = decide_promotion(cand, serv, "macro_f1", 0.0, primary="accuracy")
    assert ok and note.startswith("promoted: macro_f1")
    ok, note = decide_promotion(cand, serv, "", 0.0, primary="accuracy")  # no policy: the primary
    assert not ok and "accuracy" in note and "worse" in note


def test_primary_metric_when_the_template_does_not_report_the_policys() -> None:
    # A detector reports mAP, not accuracy: a curation policy on accuracy decides on map_50.
    cand, serv = {"map_50": 0.62}, {"map_50": 0.60}
    ok, note = decide_promotion(cand, serv, "accuracy", 0.0, primary="map_50")
    assert ok and "map_50" in note and "reports no accuracy" in note
    ok, note = decide_promotion(cand, serv, "accuracy", 0.05, primary="map_50")  # the policy's min gain still holds
    assert not ok and "min_gain 0.05" in note


def test_strictly_better_a_tie_keeps_the_serving_version() -> None:
    # Deep versions used to be promoted on >=; they now follow the heads' rule.
    assert not decide_promotion({"probe": 0.5}, {"probe": 0.5}, "", 0.0, primary="probe")[0]
    assert "tie keeps" in decide_promotion({"probe": 0.5}, {"probe": 0.5}, "", 0.0, primary="probe")[1]
    assert decide_promotion({"probe": 0.51}, {"probe": 0.5}, "", 0.0, primary="probe")[0]


def test_first_version_missing_metrics_and_direction() -> None:
    assert decide_promotion({"accuracy": 0.1}, None)[0]  # nothing serving yet
    assert not decide_promotion({}, {"accuracy": 0.5})[0]  # the candidate lacks the metric
    assert decide_promotion({"accuracy": 0.5}, {})[0]  # the serving version lacks it
    assert decide_promotion({"ece": 0.02}, {"ece": 0.05}, "ece")[0]  # lower is better
    assert decide_promotion({"val_loss": 0.2}, {"val_loss": 0.3}, "", primary="val_loss")[0]
    assert metric_direction("log_loss") == -1 and metric_direction("map_50") == 1
    with pytest.raises(EvaluationError, match="min_gain"):
        decide_promotion({"accuracy": 1.0}, None, "accuracy", -0.1)


def test_deep_jobs_follow_the_policy_of_their_training_request(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A deep version is kept out when the request's policy asks for a gain it cannot make (deep
    jobs used to ignore the policy and promote on >=)."""
    from training_doubles import DarkLightPeers, RecordedEvents, training_core, wait_for_job

    from firstlight.training.core import SUCCEEDED

    platform, events = DarkLightPeers(), RecordedEvents()
    service = training_core(tmp_path, platform, events)
    try:
        service.create_dataset("app", "d", fractions=(0.5, 0.25, 0.25))
        tiny = {"architecture": "resnet_scratch", "image_size": "32", "batch_size": "8", "lrate": "0.05", "num_epochs": "1"}
        service.create_model("app", "m", "visual_classifier", ["dark", "light"], tiny)
        first = wait_for_job(service, service.train("app", "m", "d", {})["id"], (SUCCEEDED,))
        second = wait_for_job(service, service.train("app", "m", "d", {}, promotion=("accuracy", 1.0))["id"], (SUCCEEDED,))
        v2 = service.store.get_version("app", "m", int(second["version"]))
        assert service.model("app", "m")["serving_version"] == first["version"]
        assert v2["promotion_note"].startswith("kept the serving version: accuracy") and "vs serving v1" in v2["promotion_note"]
        assert events.ready[-1].serving is False  # announced as not serving
    finally:
        service.shutdown()
