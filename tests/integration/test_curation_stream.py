"""Stream-based active learning on the running stack (acceptance 2 and 4 of the AL issue):
predictions flow from the inference service on ``predictions.made``; the uncertain ones reach the
labeling queue (the ``labeling.queue`` topic and ListLabelingQueue) within the policy's budget;
labels on them trigger a retrain, whose version is promoted only if it beats the serving one on
validation (correct labels: promoted; a batch labeled wrongly: kept out, with the reason). And a
drift alert fires when the prediction stream switches to another dataset, not on held-out data."""

from __future__ import annotations

import pytest

from firstlight import datasets
from firstlight.messaging import topics
from firstlight.sdk import Firstlight, FirstlightError, UploadItem
from firstlight.v1 import events_pb2

from .helpers import eventually
from .kafka_io import find_record
from .test_curation import digit_pngs

pytestmark = pytest.mark.integration

APP = "stream-al"
CONCEPTS = ["bird", "dog", "zebra"]
RETRAIN_AFTER = 5


def by_class(items: list[tuple[str, str, bytes]]) -> dict[str, list[tuple[str, str, bytes]]]:
    out: dict[str, list] = {c: [] for c in CONCEPTS}
    for item in items:
        out[item[1]].append(item)
    return out


def wait_served(client: Firstlight, app: str, model: str, image: bytes) -> None:
    def served():  # type: ignore[no-untyped-def]
        try:
            return client.predict([image], model=model, app_id=app)
        except FirstlightError:
            return None

    eventually(served, timeout=60, what="the trained model served")


def finished_rounds(client: Firstlight, n: int) -> list:
    rounds = client.learning_rounds(APP)
    return rounds if len(rounds) >= n and all(r.status != "running" for r in rounds) else []


@pytest.fixture(scope="module")
def data(client: Firstlight) -> dict:
    """One app, two models on the same 48 labeled inputs: ``animals`` is deliberately weak (1
    training input per concept, 15 validation) so the loop has something to improve;
    ``animals-d`` (36 training inputs) is the drift reference. 39 unlabeled stream inputs."""
    client.create_app(APP)
    groups = by_class(datasets.animal_mnist(39, seed=41, classes=CONCEPTS))
    labeled = [g[k] for g in groups.values() for k in range(16)]
    stream_a = [g[k] for g in groups.values() for k in range(16, 24)]
    stream_b = [g[k] for g in groups.values() for k in range(24, 29)]
    held_out = [g[k] for g in groups.values() for k in range(29, 39)]  # predicted only, never uploaded
    items = [UploadItem(d, [c], id=i) for i, c, d in labeled] + [UploadItem(d, [], id=i) for i, _, d in stream_a + stream_b]
    assert not client.upload(APP, items).failures
    client.wait_indexed(APP, len(items), timeout=300)
    client.create_dataset(APP, "main", concepts=CONCEPTS, counts=(3, 45, 0), seed=0)
    client.create_dataset(APP, "drift", concepts=CONCEPTS, counts=(36, 12, 0), seed=0)
    client.create_model(APP, "animals", CONCEPTS)
    client.create_model(APP, "animals-d", CONCEPTS)
    assert client.train(APP, "animals", "main").version == "1"
    client.train(APP, "animals-d", "drift")
    for model in ("animals", "animals-d"):
        wait_served(client, APP, model, labeled[0][2])
    return {"stream_a": stream_a, "stream_b": stream_b, "held_out": held_out, "truth": {i: c for i, c, _ in stream_a + stream_b}}


def test_uncertain_predictions_are_queued_labeled_retrained_and_promoted_only_if_better(client: Firstlight, stack, data: dict) -> None:  # type: ignore[no-untyped-def]
    stream_a, stream_b, truth = data["stream_a"], data["stream_b"], data["truth"]
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.get_policy(APP)
    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT.*threshold"):  # noqa: RUF043
        client.set_policy(APP, "animals", threshold=2.0)
    with pytest.raises(FirstlightError, match="NOT_FOUND"):
        client.set_policy(APP, "no-such-model")
    policy = client.set_policy(
        APP,
        "animals",
        strategy="margin",
        threshold=0.2,
        max_per_minute=1000,
        retrain_after_labels=RETRAIN_AFTER,
        dataset_id="main",
        drift_window=-1,
    )
    assert client.get_policy(APP) == policy and policy.promotion_metric == "accuracy"

    with pytest.raises(FirstlightError, match="INVALID_ARGUMENT.*input_ids"):  # noqa: RUF043
        client.predict([stream_a[0][2], stream_a[1][2]], model="animals", app_id=APP, input_ids=[stream_a[0][0]])

    # -- batch A: predictions flow, the uncertain ones are queued ---------------------------
    client.predict([d for _, _, d in stream_a], model="animals", app_id=APP, input_ids=[i for i, _, _ in stream_a])
    stats = eventually(lambda: (s := client.labeling_queue(APP).stats).screened >= 24 and s, timeout=60, what="24 predictions screened")
    queued_a = list(client.queue_items(APP, state="queued", page_size=7))  # paging through
    # 24 stream predictions, plus at most the one prediction wait_served made with `animals` before
    # the policy existed: under load curation may consume it after the policy is set (the stream
    # is screened as it is consumed), and it is confident, so it counts below the threshold.
    assert len(queued_a) == stats.queued >= RETRAIN_AFTER and stats.queued + stats.below_threshold in (24, 25)
    assert {q.input_id for q in queued_a} <= {i for i, _, _ in stream_a}
    assert all(q.score >= 0.2 and q.strategy == "margin" and q.model_version == "1" for q in queued_a)
    first = queued_a[0].input_id
    record = find_record(stack.broker.bootstrap, topics.LABELING_QUEUE, lambda r: r.key == f"{APP}/{first}".encode(), timeout=30)
    assert events_pb2.LabelingQueued.FromString(record.value).score == pytest.approx(queued_a[0].score)

    # -- correct labels on them: a round retrains and the better version is promoted --------
    client.annotate(APP, {q.input_id: [truth[q.input_id]] for q in queued_a})
    (r1,) = eventually(lambda: finished_rounds(client, 1), timeout=60, what="round 1")
    assert r1.status == "done" and r1.labels_spent == len(queued_a) and r1.previous_version == "1" and r1.candidate_version == "2"
    assert r1.metrics["accuracy"] > r1.previous_metrics["accuracy"] and r1.promoted, r1
    assert client.versions(APP, "animals").model.serving_version == "2"
    assert all(q.round == 1 and list(q.concepts) == [truth[q.input_id]] for q in client.queue_items(APP, state="labeled"))

    # -- batch B: the budget caps the queue; wrong labels make a worse version, not promoted --
    budget = len(queued_a) + RETRAIN_AFTER
    client.set_policy(APP, "animals", threshold=0.2, budget=budget, retrain_after_labels=RETRAIN_AFTER, dataset_id="main", drift_window=-1)
    client.predict([d for _, _, d in stream_b], model="animals", app_id=APP, input_ids=[i for i, _, _ in stream_b])
    image_of = {i: d for i, _, d in stream_a}
    client.predict([image_of[first]], model="animals", app_id=APP, input_ids=[first])  # queued before: never twice
    stats = eventually(lambda: (s := client.labeling_queue(APP).stats).screened >= 40 and s, timeout=60, what="40 predictions screened")
    assert stats.queued + stats.labeled <= budget
    # every screened prediction is accounted for exactly once (the re-predicted input is either
    # a duplicate or, now that the model is surer, below the threshold; never queued twice).
    # Delivery is at-least-once, but a batch redelivered after a consumer-group rebalance (another
    # test's process joining the session broker) is recognised by its events' idempotency keys
    # and not screened again, so exactly the 40 sent are counted (41 with wait_served's late one).
    accounted = stats.queued + stats.labeled + stats.below_threshold + stats.skipped_budget + stats.skipped_rate + stats.duplicates + stats.without_input_id
    assert stats.screened in (40, 41) and stats.screened == accounted, stats  # 41: wait_served's, see batch A
    queued_b = list(client.queue_items(APP, state="queued"))
    assert 1 <= len(queued_b) <= RETRAIN_AFTER and (len(queued_b) == RETRAIN_AFTER or not stats.skipped_budget)
    # the reviewer labels what the queue holds: retrain after exactly those
    client.set_policy(APP, "animals", threshold=0.2, budget=budget, retrain_after_labels=len(queued_b), dataset_id="main", drift_window=-1)
    wrong = {q.input_id: [CONCEPTS[(CONCEPTS.index(truth[q.input_id]) + 1) % 3]] for q in queued_b}
    client.annotate(APP, wrong)
    r2, _ = eventually(lambda: finished_rounds(client, 2), timeout=60, what="round 2")
    assert r2.round == 2 and r2.status == "done" and r2.previous_version == "2" and r2.candidate_version == "3"
    # Wrong labels on the few queued inputs usually cost v3 a validation input or two (README:
    # 0.933 -> 0.911, 1 of 45), but which inputs are queued varies with the screening order under
    # load, and v3 has tied or beaten v2 in a CI run. The gate itself is what is checked here (its
    # rule, ties included, is unit-tested in test_promotion_rule): promoted exactly when strictly
    # better, and then serving; kept otherwise.
    better = r2.metrics["accuracy"] > r2.previous_metrics["accuracy"]
    assert r2.promoted == better and ("promoted" if better else "kept the serving version") in r2.note, r2
    assert r2.total_labels == len(queued_a) + len(queued_b)
    assert client.versions(APP, "animals").model.serving_version == ("3" if better else "2")
    for r in (r1, r2):  # shown with -s: the figures the curation README quotes
        print(
            f"round {r.round}: {r.labels_spent} labels, v{r.previous_version} {r.previous_metrics['accuracy']:.3f} -> "
            f"v{r.candidate_version} {r.metrics['accuracy']:.3f}, promoted={r.promoted}: {r.note}"
        )

    # the same through the CLI
    from typer.testing import CliRunner

    from firstlight.cli import app as cli

    runner = CliRunner()
    out = runner.invoke(cli, ["rounds", APP, "--data-dir", str(stack.data_dir)], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "v1 → v2" in out.output and "v2 → v3" in out.output and "yes" in out.output, out.output
    out = runner.invoke(cli, ["queue", APP, "--state", "labeled", "--limit", "3", "--data-dir", str(stack.data_dir)], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "over budget" in out.output and out.output.count(" labeled ") >= 3, out.output
    out = runner.invoke(cli, ["set-policy", APP, "animals", "--threshold", "7", "--data-dir", str(stack.data_dir)])
    assert out.exit_code == 1 and "threshold" in out.output


def test_stream_drift_alert_fires_on_another_dataset_not_on_held_out_data(client: Firstlight, stack, data: dict) -> None:  # type: ignore[no-untyped-def]
    app, held_out = APP, data["held_out"]
    client.set_policy(app, "animals-d", threshold=1.0, drift_window=30)
    client.predict([d for _, _, d in held_out], model="animals-d", app_id=app)  # no input ids: drift only
    same = eventually(lambda: _stream_report(client, app, 30), timeout=60, what="a full window of held-out predictions")
    assert not same.alert, same
    client.predict(digit_pngs(30), model="animals-d", app_id=app)
    record = find_record(stack.broker.bootstrap, topics.DRIFT_ALERT, lambda r: r.key == app.encode(), timeout=60)
    alert = events_pb2.DriftAlert.FromString(record.value)
    assert alert.model_id == "animals-d" and alert.window_size == 30 and alert.p_value < 0.01
    other = eventually(
        lambda: (r := _stream_report(client, app, 30)) and r.centroid_distance > same.centroid_distance and r, timeout=60, what="a window of digit predictions"
    )
    assert other.alert and other.p_value < 0.01 and other.model_id == "animals-d", other


def _stream_report(client: Firstlight, app: str, n: int):  # type: ignore[no-untyped-def]
    try:
        report = client.drift(app, stream=True)
    except FirstlightError:
        return None
    return report if report.recent_count >= n else None
