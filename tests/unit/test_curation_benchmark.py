"""The AL benchmark command: its classifier defaults are the live loop's, bad folders are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firstlight.curation import benchmark as bm
from firstlight.datasets import png_bytes
from firstlight.domain.heads.transfer import TransferSettings


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i}.png").write_bytes(png_bytes(np.full((8, 8, 3), i, dtype=np.uint8)))
    return root


def test_defaults_are_the_transfer_templates() -> None:
    args = bm.parser().parse_args([])
    assert args.C == TransferSettings().C == 100.0
    assert args.balanced is (TransferSettings().class_weight == "balanced") is True
    over = bm.parser().parse_args(["--C", "1", "--no-balanced"])
    assert (over.C, over.balanced) == (1.0, False)


def test_cli_defaults_follow_the_benchmark_module() -> None:
    from typer.main import get_command

    from firstlight.cli import app

    params = {p.name: p for p in get_command(app).commands["al-benchmark"].params}  # type: ignore[attr-defined]
    # None means "the transfer template's", resolved to bm.DEFAULT_C / DEFAULT_BALANCED.
    assert params["c"].default is None and params["balanced"].default is None
    assert (bm.DEFAULT_C, bm.DEFAULT_BALANCED) == (TransferSettings().C, True)


def test_one_class_folder_is_refused_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _folder(tmp_path / "one", {"cat": 10})
    with pytest.raises(bm.FolderError, match="1 class sub-folder"):
        bm.load_folder(folder)
    assert bm.main(["--folder", str(folder), "--data-dir", str(tmp_path / "nostack")]) == 2
    assert "need at least 2" in capsys.readouterr().err


def test_too_few_images_per_class_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "f", {"cat": 10, "dog": 3})
    with pytest.raises(bm.FolderError, match=r"dog \(3\)"):
        bm.load_folder(folder, seed_per_class=2)
    images, y, classes = bm.load_folder(folder, seed_per_class=1)
    assert classes == ["cat", "dog"] and len(images) == 13 and np.bincount(y).tolist() == [10, 3]


def test_stratified_split_keeps_every_class_in_both_parts() -> None:
    y = np.repeat([0, 1, 2], [20, 5, 3])
    pool, test = bm.stratified_split(y, 0.2, seed=0)
    assert len(set(pool) | set(test)) == len(y) and not set(pool) & set(test)
    assert np.bincount(y[test]).tolist() == [4, 1, 1]
    assert (np.bincount(y[pool]) > 0).all()


def test_cli_refuses_a_one_class_folder_before_connecting(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from firstlight.cli import app

    folder = _folder(tmp_path / "one", {"cat": 10})
    res = CliRunner().invoke(app, ["al-benchmark", "--folder", str(folder), "--data-dir", str(tmp_path / "nostack")])
    assert res.exit_code == 2 and "need at least 2" in res.output
    res = CliRunner().invoke(app, ["al-benchmark", "--strategies", "random,nope"])
    assert res.exit_code == 2 and "unknown strategies: nope" in res.output


def test_cli_folder_runs_through_the_services_by_default(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from firstlight.cli import app

    # through the services a class also needs a validation image: 5 per class with a seed of 2
    folder = _folder(tmp_path / "f", {"cat": 4, "dog": 3})
    res = CliRunner().invoke(app, ["al-benchmark", "--folder", str(folder), "--data-dir", str(tmp_path / "nostack")])
    assert res.exit_code == 2 and "cat (4), dog (3)" in res.output
    res = CliRunner().invoke(app, ["al-benchmark", "--through-services", "--strategies", "random,mc_dropout"])
    assert res.exit_code == 2 and "mc_dropout has no service counterpart" in res.output


def test_folder_image_set_splits_pool_validation_test(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "f", {"cat": 20, "dog": 10})
    data = bm.folder_image_set(folder, seed_per_class=2)
    assert data.classes == ["cat", "dog"]
    assert np.bincount(data.y_test).tolist() == [4, 2] and np.bincount(data.y_val).tolist() == [2, 1]
    assert np.bincount(data.y_pool).tolist() == [14, 7]
    assert len(data.pool) + len(data.val) + len(data.test) == 30


def test_subsample_is_stratified() -> None:
    y = np.repeat([0, 1, 2], [600, 300, 100])
    idx = bm._subsample(y, 100, np.random.default_rng(0))
    assert np.bincount(y[idx]).tolist() == [60, 30, 10] and len(set(idx)) == 100
    assert len(bm._subsample(y, None, np.random.default_rng(0))) == 1000


def test_bundled_image_set_without_a_cache_has_no_in_process_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRSTLIGHT_AL_CACHE", str(tmp_path))
    data, arrays = bm.bundled_image_set("animal-mnist", pool=100, test=50, val_per_class=2)
    assert arrays is None and data.classes[0] == "bear"
    assert (len(data.pool), len(data.test), len(data.val)) == (100, 50, 20)
    assert np.bincount(data.y_pool).tolist() == [10] * 10 and np.bincount(data.y_val).tolist() == [2] * 10
    assert data.pool[0][:8] == b"\x89PNG\r\n\x1a\n"
