"""`firstlight slices`: passes --rank-by to the service and shows accuracy, F1 and Brier score
with their intervals; an unknown ranking is the service's INVALID_ARGUMENT (one line, exit 1).
No servers: a fake client."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from firstlight.cli import app
from firstlight.cli import options as cli_options
from firstlight.sdk import error_for
from firstlight.v1 import curation_pb2


class FakeClient:
    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def worst_slices(self, app_id: str, model_id: str, **kw: Any) -> curation_pb2.WorstSlicesResponse:
        self.asked.append(kw)
        if kw["rank_by"] not in ("", "brier", "accuracy", "f1"):
            raise error_for(grpc.StatusCode.INVALID_ARGUMENT, f"rank_by must be one of brier, accuracy, f1 (got {kw['rank_by']!r})")
        s = curation_pb2.Slice(field="concept", value="bear", count=58, accuracy=0.79, accuracy_low=0.67, accuracy_high=0.88, f1=0.84)
        s.f1_low, s.f1_high, s.brier, s.brier_low, s.brier_high, s.rank_gap = 0.77, 0.9, 0.41, 0.33, 0.49, 0.12
        meta = curation_pb2.Slice(field="metadata.camera", value="[red]B[/red] " + "z" * 60, count=40)
        return curation_pb2.WorstSlicesResponse(
            model_version="2",
            split="test",
            count=459,
            accuracy=0.9,
            f1=0.9,
            brier=0.16,
            rank_by=kw["rank_by"] or "brier",
            slices=[s, meta],
            metadata_keys=list(kw["metadata_keys"]) or ["camera", "site"],
        )


def test_slices_ranks_by_the_option_and_shows_each_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClient()
    monkeypatch.setattr(cli_options.Firstlight, "from_stack", lambda data_dir: fake)
    runner = CliRunner()
    out = runner.invoke(app, ["slices", "pets", "animals", "--split", "test"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert fake.asked[-1]["rank_by"] == "" and "worst by brier" in out.output
    assert "0.790 (0.670-0.880)" in out.output and "0.840 (0.770-0.900)" in out.output and "0.410 (0.330-0.490)" in out.output
    out = runner.invoke(app, ["slices", "pets", "animals", "--rank-by", "accuracy"], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and fake.asked[-1]["rank_by"] == "accuracy" and "worst by accuracy" in out.output
    out = runner.invoke(app, ["slices", "pets", "animals", "--rank-by", "auc"])
    assert out.exit_code == 1 and out.output.strip() == "INVALID_ARGUMENT: rank_by must be one of brier, accuracy, f1 (got 'auc')"


def test_slices_passes_metadata_keys_and_shows_values_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClient()
    monkeypatch.setattr(cli_options.Firstlight, "from_stack", lambda data_dir: fake)
    runner = CliRunner()
    out = runner.invoke(app, ["slices", "pets", "animals"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert list(fake.asked[-1]["metadata_keys"]) == [] and "metadata keys chosen: camera, site" in out.output
    # rich markup in a value is shown as typed, and a long value is cut
    assert "metadata.camera=[red]B[/red] " + "z" * 26 + "…" in out.output
    out = runner.invoke(app, ["slices", "pets", "animals", "--metadata-key", "camera", "--metadata-key", "lens"], env={"COLUMNS": "250"})
    assert out.exit_code == 0 and list(fake.asked[-1]["metadata_keys"]) == ["camera", "lens"] and "metadata keys asked: camera, lens" in out.output
