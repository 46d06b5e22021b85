"""The quality filter's text forms (SDK QualityFilter, the CLI's --where) and the CLI's text
histogram bars."""

from __future__ import annotations

import pytest

from firstlight.cli.quality import histogram_bars
from firstlight.sdk import QualityFilter
from firstlight.v1 import common_pb2


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("blur<0.2", QualityFilter("blur", None, 0.2)),
        ("blur <= 20", QualityFilter("blur", None, 20.0)),
        ("blank_fraction>=0.97", QualityFilter("blank_fraction", 0.97)),
        ("highlight>.25", QualityFilter("highlight", 0.25)),
        ("0.1<=brightness<0.3", QualityFilter("brightness", 0.1, 0.3)),
        ("noise:1e-3:", QualityFilter("noise", 0.001)),
        ("width::64", QualityFilter("width", None, 64.0)),
        ("contrast:0:0.04", QualityFilter("contrast", 0.0, 0.04)),
    ],
)
def test_each_form_reads_as_an_inclusive_range(text: str, want: QualityFilter) -> None:
    assert QualityFilter.parse(text) == want


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sharpness<0.2", "unknown quality metric 'sharpness'"),
        ("blur<", "cannot read the quality filter"),
        ("blur<0.2 and x", "cannot read the quality filter"),
        ("blur=0.2", "cannot read the quality filter"),
        ("blur::", "give a minimum, a maximum or both"),
        ("0.5<=brightness<=0.1", "empty range, min 0.5 > max 0.1"),
        ("blur<1e999", "bounds must be finite"),
    ],
)
def test_a_bad_filter_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        QualityFilter.parse(text)


def test_the_proto_leaves_an_open_side_unset() -> None:
    one = QualityFilter("blur", max=0.2).to_proto()
    assert one == common_pb2.QualityRange(metric="blur", max=0.2) and not one.HasField("min")
    assert QualityFilter("brightness", 0.0, 1.0).to_proto().min == 0.0  # a zero bound is still a bound
    assert str(QualityFilter("brightness", 0.1, 0.3)) == "0.1 ≤ brightness ≤ 0.3"


def test_histogram_bars_scale_to_the_fullest_bucket_and_show_a_lone_input() -> None:
    rows = histogram_bars([0.0, 0.5, 1.0, 1.5], [0, 1, 400], width=10)
    assert [r[0] for r in rows] == ["[0, 0.5)", "[0.5, 1)", "[1, 1.5]"]  # the last bucket is closed
    assert [r[1] for r in rows] == [0, 1, 400]
    assert rows[0][2] == "" and rows[1][2] == "▏" and rows[2][2] == "█" * 10
    assert histogram_bars([0.0, 1.0], [0]) == [("[0, 1]", 0, "")]


class _FakeClient:
    """The SDK calls the two commands make, over fixed answers."""

    def __init__(self) -> None:
        from firstlight.v1 import ingestion_pb2

        self.hist = ingestion_pb2.GetQualityHistogramResponse(metric="brightness", edges=[0.0, 0.25, 0.5, 0.75, 1.0], counts=[1, 0, 30, 12], unmeasured=2)
        self.asked: list[object] = []

    def __enter__(self) -> _FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def quality_histogram(self, app_id: str, metric: str, *, bins: int = 20):  # type: ignore[no-untyped-def]
        self.asked.append((app_id, metric, bins))
        return self.hist

    def count_inputs(self, app_id: str, *, concepts=(), quality=None) -> int:  # type: ignore[no-untyped-def]
        self.asked.append(quality)
        return 3

    def list_inputs(self, app_id: str, *, concepts=(), quality=None, page_size=100):  # type: ignore[no-untyped-def]
        for k in range(3):
            yield common_pb2.Input(
                id=f"i{k}", width=28, height=28, split=common_pb2.SPLIT_TRAIN, quality=common_pb2.ImageQuality(blank_fraction=0.98 + k / 100)
            )


def test_the_cli_commands_print_bars_and_a_filtered_table(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from firstlight.cli import app as cli
    from firstlight.cli import inputs, quality

    fake = _FakeClient()
    monkeypatch.setattr(quality, "client", lambda data_dir: fake)
    monkeypatch.setattr(inputs, "client", lambda data_dir: fake)
    runner = CliRunner()
    out = runner.invoke(cli, ["quality-histogram", "app", "brightness", "--bins", "4", "--png", str(tmp_path / "h.png")], env={"COLUMNS": "120"})
    assert out.exit_code == 0, out.output
    assert fake.asked == [("app", "brightness", 4)]
    assert "brightness over 43 inputs of app" in out.output and "2 input(s) stored before quality was measured are not counted" in out.output
    assert "[0.75, 1]" in out.output and "█" * 40 in out.output  # the fullest bucket gets the whole bar
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    listed = runner.invoke(cli, ["inputs", "app", "--where", "blank_fraction>=0.97", "--limit", "2"], env={"COLUMNS": "120"})
    assert listed.exit_code == 0, listed.output
    assert fake.asked[-1] == QualityFilter("blank_fraction", 0.97)
    assert "3 input(s) of app with 0.97 ≤ blank_fraction; the first 2 shown" in listed.output and "0.99" in listed.output and "i2" not in listed.output
    bad = runner.invoke(cli, ["inputs", "app", "--where", "blank_fraction=>1"])
    assert bad.exit_code != 0 and "cannot read the quality filter" in bad.output, bad.output
