"""The AL benchmark through the running stack (curation.through_services): every round posts the
oracle's labels, trains with TrainModel, evaluates the version on the held-out test split and asks
SuggestInputsForLabeling for the next batch, recording the round in the experiment record."""

from __future__ import annotations

import math

import numpy as np
import pytest

from firstlight import datasets
from firstlight.curation import through_services as ts
from firstlight.sdk import Firstlight

pytestmark = pytest.mark.integration

APP = "al-bench-it"
CONCEPTS = ["cat", "dog", "zebra"]
ROUNDS, BATCH = 2, 3


def _image_set() -> ts.ImageSet:
    rows = datasets.animal_mnist(13, seed=31, classes=CONCEPTS)  # per class: 8 pool, 1 validation, 4 test
    by_class = {c: [d for _, cc, d in rows if cc == c] for c in CONCEPTS}
    part = lambda lo, hi: ([d for c in CONCEPTS for d in by_class[c][lo:hi]], np.repeat(np.arange(3), hi - lo))  # noqa: E731
    (pool, yp), (val, yv), (test, yt) = part(0, 8), part(8, 9), part(9, 13)
    return ts.ImageSet("tiny", CONCEPTS, pool, yp, test, yt, val, yv)


def test_benchmark_rounds_go_through_the_services_and_are_recorded(client: Firstlight, stack) -> None:  # type: ignore[no-untyped-def]
    data = _image_set()
    res = ts.run_benchmark(client, data, app_id=APP, strategies=["typiclust_margin"], seeds=[0], seed_per_class=1, rounds=ROUNDS, batch=BATCH)
    assert res.strategies == ["random", "typiclust_margin"]
    assert res.labels == [3, 6, 9]  # 1 per class, then +BATCH per round
    rounds = client.learning_rounds(APP)  # newest first, both runs
    assert len(rounds) == 2 * (ROUNDS + 1) and all(r.status == "done" for r in rounds)
    for name in res.strategies:
        run = res.settings["runs"][f"{name}/0"]
        mine = sorted((r for r in rounds if r.round in run["rounds"]), key=lambda r: r.round)
        assert [r.strategy for r in mine] == [name] * (ROUNDS + 1)
        assert [r.total_labels for r in mine] == res.labels
        assert [r.labels_spent for r in mine] == [3, BATCH, BATCH]
        assert [r.candidate_version for r in mine] == run["versions"] == ["1", "2", "3"]
        assert [r.previous_version for r in mine] == ["", "1", "2"]
        for r, acc in zip(mine, res.accuracy[name][0]):
            # the curve's accuracy is the service's evaluation of that version on the 12 test inputs
            assert math.isfinite(acc) and acc == pytest.approx(r.metrics["test_accuracy"]) and r.metrics["test_n"] == 12
            assert round(acc * 12) == pytest.approx(acc * 12)
            assert "accuracy" in r.metrics  # validation, from training
    # each run takes its labels off again: only validation and test stay labeled
    labeled = [i.id for i in client.list_inputs(APP) if i.concepts]
    assert sorted(labeled) == sorted([f"val-{i:05d}" for i in range(3)] + [f"test-{i:05d}" for i in range(12)])
    # the experiment record through the CLI: strategy and test accuracy per round
    from typer.testing import CliRunner

    from firstlight.cli import app as cli

    out = CliRunner().invoke(cli, ["rounds", APP, "--data-dir", str(stack.data_dir)], env={"COLUMNS": "250"})
    assert out.exit_code == 0 and "typiclust_margin" in out.output and "test acc" in out.output, out.output
    assert f"{res.accuracy['typiclust_margin'][0][-1]:.3f}" in out.output
