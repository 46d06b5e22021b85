"""`firstlight uniqueness`: the scope and order it asks for, the table of scores (an input with no
concept score shows "-"), the representatives table. No servers: a fake client."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from firstlight.cli import app
from firstlight.cli import options as cli_options
from firstlight.v1 import curation_pb2


class FakeClient:
    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def uniqueness(self, app_id: str, **kw: Any) -> curation_pb2.ScoreUniquenessResponse:
        self.asked.append(kw)
        one = curation_pb2.UniquenessScore
        reps = [curation_pb2.ConceptRepresentatives(concept="cat", inputs=[one(input_id="cat-7", score=0.2, concept_score=0.113, concepts=["cat"])])]
        return curation_pb2.ScoreUniquenessResponse(
            inputs=[one(input_id="odd-1", score=0.6123, concept_score=0.7, concepts=["cat"]), one(input_id="bare-2", score=0.5)],
            total_size=40,
            examined=41,
            representatives=reps if kw["per_concept"] else [],
            scope=kw["scope"],
            order=kw["order"],
        )


def test_uniqueness_lists_scores_and_representatives(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClient()
    monkeypatch.setattr(cli_options.Firstlight, "from_stack", lambda data_dir: fake)
    runner = CliRunner()
    out = runner.invoke(app, ["uniqueness", "pets"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert fake.asked[-1] == {"scope": "app", "order": "unusual", "concept": "", "page_size": 20, "per_concept": 0}
    assert "most unusual of 40" in out.output and "0.6123" in out.output and "representative" not in out.output
    assert any("bare-2" in line and " - " in line for line in out.output.splitlines())
    out = runner.invoke(
        app, ["uniqueness", "pets", "--concept", "cat", "--typical", "--limit", "5", "--representatives", "--per-concept", "3"], env={"COLUMNS": "200"}
    )
    assert out.exit_code == 0, out.output
    assert fake.asked[-1] == {"scope": "concept", "order": "typical", "concept": "cat", "page_size": 5, "per_concept": 3}
    assert "most typical" in out.output and "cat-7 (0.113)" in out.output
    assert runner.invoke(app, ["uniqueness", "pets", "--limit", "0"]).exit_code != 0
