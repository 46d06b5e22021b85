"""The Portal's server-rendered views (firstlight.gateway.views and the pages that use them):
the learning-curve SVG, the drift report in words, two versions side by side — as pure
functions, and as pages rendered by the gateway over fake service clients (no stack)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from gateway_doubles import gateway_settings

from firstlight import errors
from firstlight.gateway import views
from firstlight.v1 import common_pb2, curation_pb2, inference_pb2, training_pb2

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
SVG = "{http://www.w3.org/2000/svg}"


def rounds_json() -> list[dict]:
    return [  # newest first, as ListLearningRounds answers
        {
            "model_id": "animals",
            "round": 3,
            "total_labels": 60,
            "labels_spent": 20,
            "candidate_version": "3",
            "promoted": False,
            "note": HOSTILE,
            "metrics": {"accuracy": 0.80, "macro_f1": 0.78},
            "previous_metrics": {"accuracy": 0.85},
            "status": "done",
        },
        {
            "model_id": "animals",
            "round": 2,
            "total_labels": 40,
            "labels_spent": 20,
            "candidate_version": "2",
            "promoted": True,
            "note": "promoted",
            "metrics": {"accuracy": 0.85, "macro_f1": 0.84},
            "previous_metrics": {"accuracy": 0.7},
            "status": "done",
        },
        {
            "model_id": "animals",
            "round": 1,
            "total_labels": 20,
            "labels_spent": 20,
            "candidate_version": "1",
            "promoted": True,
            "note": "",
            "metrics": {"accuracy": 0.7, "macro_f1": 0.66, "test_accuracy": 0.69},
            "previous_metrics": {},
            "status": "done",
        },
        {
            "model_id": HOSTILE,
            "round": 4,
            "total_labels": 10,
            "labels_spent": 10,
            "candidate_version": "",
            "promoted": False,
            "note": "failed: boom",
            "metrics": {},
            "previous_metrics": {},
            "status": "failed",
        },
    ]


def test_learning_curve_is_well_formed_svg_with_escaped_strings() -> None:
    curve = views.learning_curve(rounds_json())
    assert curve.metric == "accuracy" and curve.points == 3 and curve.skipped == 1 and curve.models == ["animals"]
    root = ET.fromstring(str(curve.svg))  # well-formed XML: nothing unescaped broke it
    assert root.tag == f"{SVG}svg"
    points = root.findall(f".//{SVG}circle[@class='point']")
    assert [p.get("data-round") for p in points] == ["1", "2", "3"]  # along the labels axis
    xs = [float(p.get("cx")) for p in points]
    assert xs == sorted(xs) and len(set(xs)) == 3
    ys = [float(p.get("cy")) for p in points]
    assert ys[1] < ys[0] and ys[1] < ys[2]  # 0.85 is drawn above 0.70 and 0.80 (SVG y grows downwards)
    fills = [p.get("fill") for p in points]
    assert fills[0] != "#fff" and fills[1] != "#fff" and fills[2] == "#fff"  # promoted filled, not promoted hollow
    tips = [p.find(f"{SVG}title").text for p in points]
    assert "round 3" in tips[2] and "60 labels (+20)" in tips[2] and "0.800" in tips[2] and "not promoted" in tips[2]
    assert HOSTILE in tips[2]  # as text: the parser read it back from escaped markup
    assert "<script>" not in str(curve.svg) and "&lt;script&gt;" in str(curve.svg)
    # The serving line: what served after each round (promoted candidate, else the previous one).
    assert len(root.findall(f".//{SVG}polyline[@class='serving']")) == 1


def test_learning_curve_metric_choice_and_empty() -> None:
    assert views.curve_metrics(rounds_json()) == ["accuracy", "macro_f1", "test_accuracy"]
    curve = views.learning_curve(rounds_json(), "test_accuracy")
    assert curve.points == 1 and curve.skipped == 3 and "test accuracy" in str(curve.svg)
    empty = views.learning_curve([r for r in rounds_json() if r["status"] == "failed"])
    assert empty.svg is None and empty.points == 0 and empty.skipped == 1
    assert views.learning_curve([]).svg is None


def test_drift_view_words_and_thresholds() -> None:
    quiet = views.drift_view({"alert": False, "p_value": 0.4, "psi": 0.03, "centroid_distance": 0.01, "reference_count": 80, "recent_count": 20})
    assert not quiet.alert and quiet.verdict.startswith("No drift detected:") and not quiet.reasons
    assert quiet.rows[0][1] == "p = 0.400" and quiet.rows[0][2].startswith("no:") and "small" in quiet.rows[1][2]
    small = views.drift_view({"alert": False, "p_value": 0.001, "psi": 0.05, "reference_count": 5000, "recent_count": 5000})
    assert small.verdict.startswith("No drift to act on") and "0.05 < 0.1" in small.verdict
    big = views.drift_view(
        {
            "alert": True,
            "p_value": 0.0,
            "psi": 0.4,
            "psi_predictions": 0.3,
            "reference_count": 80,
            "recent_count": 60,
            "model_id": "animals",
            "model_version": "2",
        },
        stream=True,
    )
    noisy = views.drift_view({"alert": False, "p_value": 0.17, "psi": 3.4, "reference_count": 52, "recent_count": 20})
    assert "major" in noisy.rows[1][2] and "not acted on" in noisy.rows[1][2] and "≈ 0.62" in noisy.rows[1][2]
    assert big.alert and big.verdict.startswith("Drift:") and "animals" in big.verdict and "version 2" in big.verdict
    assert len(big.reasons) == 2 and "major" in big.rows[1][2] and big.rows[3][0] == "Did the predicted concepts change?"


def test_thresholds_match_the_services() -> None:
    from firstlight.curation import drift
    from firstlight.domain import evaluation

    assert (views.DRIFT_ALPHA, views.DRIFT_PSI_EMBEDDING_MIN, views.DRIFT_PSI_PREDICTION_MIN, views.DRIFT_PSI_MIN_SAMPLES) == (
        drift.ALPHA,
        drift.PSI_EMBEDDING_MIN,
        drift.PSI_PREDICTION_MIN,
        drift.PSI_MIN_SAMPLES,
    )
    assert {k for k, sign in evaluation.METRICS.items() if sign < 0} == views.LOWER_IS_BETTER


def evaluation(version: str, acc: float, ece: float, cm: list[int], count: int = 6, order: tuple = ("cat", "dog")) -> dict:
    return {
        "model_id": "m",
        "version": version,
        "split": "SPLIT_VALIDATION",
        "metrics": {"n": float(count), "accuracy": acc, "ece": ece},
        "concepts": [{"concept": c, "precision": acc, "recall": acc, "f1": acc, "support": count // 2} for c in order],
        "confusion_matrix": cm,
        "concept_order": list(order),
        "report_markdown": "",
        "count": count,
    }


def test_comparison_view_deltas_better_side_and_notes() -> None:
    comp = {"evaluations": [evaluation("1", 0.5, 0.10, [2, 1, 2, 1]), evaluation("2", 0.75, 0.20, [3, 0, 1, 2])], "best_version": "2"}
    v = views.comparison_view(comp, "1", "2")
    m = {r.name: r for r in v.metrics}
    assert [r.name for r in v.metrics] == ["accuracy", "ece", "n"]
    assert m["accuracy"].delta == "+0.250" and m["accuracy"].better == "b"
    assert m["ece"].better == "a" and m["ece"].label.endswith("↓")  # lower is better
    assert m["n"].better == "" and m["n"].delta == ""
    assert v.concepts[0].better == "b" and v.best == "2" and not v.notes
    assert v.matrices[1].rows[0][0] == (3, 10, True) and v.matrices[1].rows[1][0] == (1, 3, False)
    other = {"evaluations": [evaluation("1", 0.5, 0.1, [2, 1, 2, 1]), evaluation("2", 0.7, 0.1, [4, 0, 1, 3], count=8)], "best_version": "2"}
    assert "different sets" in views.comparison_view(other, "1", "2").notes[0]
    with pytest.raises(KeyError):
        views.comparison_view(comp, "1", "9")


# -- the pages, rendered by the gateway over fake clients -------------------------------------------
class FakeTraining:
    def __init__(self, n_versions: int) -> None:
        self.n = n_versions
        self.compared: list = []

    async def list_model_versions(self, req, key):  # type: ignore[no-untyped-def]
        if req.model_id not in ("m", "m2"):
            raise errors.NotFound(f"no model {req.model_id!r}")
        versions = [
            training_pb2.ModelVersion(
                version=str(v),
                dataset_id="main",
                dataset_version=f"{v:064x}",
                serving=v == self.n,
                validation_metrics={"accuracy": 0.5},
                promotion_note=HOSTILE if v == 2 else "ok",
            )
            for v in range(self.n, 0, -1)
        ]
        return training_pb2.ListModelVersionsResponse(model=training_pb2.Model(id="m", serving_version=str(self.n)), versions=versions)

    async def compare_model_versions(self, req, key):  # type: ignore[no-untyped-def]
        self.compared.append((list(req.versions), req.split))
        evs = [
            training_pb2.Evaluation(
                model_id="m",
                version=v,
                split=req.split,
                metrics={"accuracy": 0.5 + 0.1 * int(v), "ece": 0.1},
                concepts=[
                    training_pb2.ConceptMetrics(concept=HOSTILE, precision=0.5, recall=0.5, f1=0.5, support=3),
                    training_pb2.ConceptMetrics(concept="dog", precision=0.5, recall=0.5, f1=0.5, support=3),
                ],
                confusion_matrix=[2, 1, 1, 2],
                concept_order=[HOSTILE, "dog"],
                count=6,
            )
            for v in req.versions
        ]
        return training_pb2.Comparison(evaluations=evs, best_version=req.versions[-1])

    async def evaluate_model_version(self, req, key):  # type: ignore[no-untyped-def]
        self.compared.append((req.model_id, req.version, req.split))
        acc = 0.9 if req.model_id == "m2" else 0.6
        return training_pb2.Evaluation(
            model_id=req.model_id,
            version=req.version,
            split=req.split,
            metrics={"accuracy": acc},
            concepts=[training_pb2.ConceptMetrics(concept="dog", precision=acc, recall=acc, f1=acc, support=3)],
            confusion_matrix=[3, 0, 1, 2],
            concept_order=["cat", "dog"],
            count=6,
        )


class FakeInference:
    async def list_models(self, req, key):  # type: ignore[no-untyped-def]
        return inference_pb2.ListModelsResponse(models=[inference_pb2.ModelInfo(id=i) for i in ("general", "m", "m2")])


class FakeCuration:
    def __init__(self, fail_drift: bool = False) -> None:
        self.fail_drift = fail_drift

    async def list_learning_rounds(self, req, key):  # type: ignore[no-untyped-def]
        return curation_pb2.ListLearningRoundsResponse(
            rounds=[
                curation_pb2.LearningRound(
                    model_id="m",
                    round=r["round"],
                    total_labels=r["total_labels"],
                    labels_spent=r["labels_spent"],
                    candidate_version=r["candidate_version"],
                    previous_version=str(int(r["candidate_version"]) - 1),
                    promoted=r["promoted"],
                    note=r["note"],
                    metrics=r["metrics"],
                    previous_metrics=r["previous_metrics"],
                    status=r["status"],
                )
                for r in rounds_json()[:3]
            ]
        )

    async def get_drift_report(self, req, key):  # type: ignore[no-untyped-def]
        if self.fail_drift:
            raise errors.FailedPrecondition("no train split to compare with")
        return curation_pb2.DriftReport(alert=False, p_value=0.5, psi=0.02, centroid_distance=0.01, reference_count=40, recent_count=req.recent_count)


@pytest.fixture
def portal(tmp_path):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from firstlight.gateway.app import create_app
    from firstlight.gateway.session import COOKIE

    settings = gateway_settings(tmp_path)
    fake = SimpleNamespace(training=FakeTraining(3), curation=FakeCuration(), inference=FakeInference())
    app = create_app(settings, clients=fake)  # type: ignore[arg-type]
    with TestClient(app) as client:
        codec = app.state.sessions
        client.cookies.set(COOKIE, codec.encode(codec.new("flk_key", "app1", False)))
        yield client, fake


def test_compare_page(portal) -> None:  # type: ignore[no-untyped-def]
    client, fake = portal
    page = client.get("/portal/apps/app1/models/m/compare")
    assert page.status_code == 200, page.text
    assert fake.training.compared[-1] == (["2", "3"], common_pb2.SPLIT_VALIDATION)  # newest (B) against the one before (A)
    html = page.text
    assert 'id="compare-metrics"' in html and "+0.100" in html and 'id="confusion-a"' in html and 'id="confusion-b"' in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html  # concept and note escaped
    assert 'style="' not in html  # the CSP forbids inline styles: matrix shades are classes
    # a cell opens exactly its inputs: that version's true X predicted as Y
    cell = r'href="/portal/apps/app1/gallery\?eval_model=m&amp;eval_version=2&amp;split=validation&amp;true=%3Cscript%3E[^"]*&amp;predicted=dog"'
    assert re.search(cell, html)
    client.get("/portal/apps/app1/models/m/compare", params={"a": "1", "b": "3", "split": "test"})
    assert fake.training.compared[-1] == (["1", "3"], common_pb2.SPLIT_TEST)
    client.get("/portal/apps/app1/models/m/compare", params={"b": "2"})
    assert fake.training.compared[-1] == (["3", "2"], common_pb2.SPLIT_VALIDATION)  # A: the newest other than B
    same = client.get("/portal/apps/app1/models/m/compare", params={"a": "2", "b": "2"})
    assert "Pick two different versions." in same.text
    fake.training.n = 1
    one = client.get("/portal/apps/app1/models/m/compare")
    assert "has 1 trained version:" in one.text and 'id="compare-metrics"' not in one.text
    assert "no model" in client.get("/portal/apps/app1/models/nope/compare").text
    assert client.get("/portal/apps/other/models/m/compare").status_code == 403


def test_compare_two_models(portal) -> None:  # type: ignore[no-untyped-def]
    client, fake = portal
    page = client.get("/portal/apps/app1/models/m/compare", params={"a": "1", "b_model": "m2", "b": "3", "split": "test"})
    assert page.status_code == 200, page.text
    assert fake.training.compared[-2:] == [("m", "1", common_pb2.SPLIT_TEST), ("m2", "3", common_pb2.SPLIT_TEST)]
    html = page.text
    assert "A: v1 of m" in html and "B: v3 of m2" in html and "+0.300" in html
    assert 'href="/portal/apps/app1/models/m2/versions/3/evaluation?split=test"' in html
    assert 'href="/portal/apps/app1/gallery?eval_model=m2&amp;eval_version=3&amp;split=test&amp;true=cat&amp;predicted=dog"' in html


def test_curation_page_curve_rounds_and_drift(portal) -> None:  # type: ignore[no-untyped-def]
    client, fake = portal
    page = client.get("/portal/apps/app1/curation")
    assert page.status_code == 200, page.text
    html = page.text
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="curve" id="learning-curve"' in html
    assert html.count('class="point"') == 3 and "<script>alert" not in html
    assert 'href="/portal/apps/app1/models/m/compare?a=2&amp;b=3"' in html  # a round links its two versions
    assert 'id="drift-verdict"' not in html  # the drift check runs when asked
    drift = client.get("/portal/apps/app1/curation", params={"drift": "1", "recent_count": "30", "metric": "macro_f1"})
    assert (
        'id="drift-verdict"' in drift.text
        and "No drift detected: the test finds no significant difference between the 30 newest inputs and the train split" in drift.text
    )
    assert '<option value="macro_f1" selected>' in drift.text
    cleared = client.get("/portal/apps/app1/curation", params={"drift": "1", "recent_count": ""})  # an emptied field: the default
    assert cleared.status_code == 200 and "the 200 newest inputs" in cleared.text
    fake.curation.fail_drift = True
    failed = client.get("/portal/apps/app1/curation", params={"drift": "1"})
    assert failed.status_code == 200 and "no train split to compare with" in failed.text
