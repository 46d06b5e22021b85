"""The AL benchmark on a folder: images embedded by the stack's EmbeddingService, oracle loop,
JSON/Markdown/PNG reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from firstlight import datasets
from firstlight.curation import benchmark as bm
from firstlight.sdk import Firstlight


def test_folder_benchmark_through_the_embedding_service(client: Firstlight, tmp_path: Path) -> None:
    folder = tmp_path / "animals"
    for input_id, name, data in datasets.animal_mnist(12, seed=0, classes=["bear", "bird", "zebra"]):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / f"{input_id}.png").write_bytes(data)

    X, _y, Xt, yt, classes = bm.folder_dataset(client, folder, progress=False)
    assert classes == ["bear", "bird", "zebra"]
    assert len(X) + len(Xt) == 36 and sorted(set(yt.tolist())) == [0, 1, 2]
    assert X.shape[1] == Xt.shape[1] > 100 and np.isfinite(X).all()
    assert np.abs(X).sum(axis=1).min() > 0  # real vectors, not padding

    stems = bm.run(
        [], folder=folder, client=client, strategies=["random", "typiclust_margin"], seeds=[0],
        rounds=2, batch=5, out=tmp_path / "out", log=lambda m: None,
    )  # fmt: skip
    stem = stems["animals"]
    for suffix in (".json", ".md", ".png"):
        assert stem.with_suffix(suffix).stat().st_size > 0
    report = json.loads(stem.with_suffix(".json").read_text())
    assert report["settings"]["classes"] == classes
    assert report["settings"]["fit"] == "transfer_classifier(C=100, class_weight=balanced)"  # the live loop's classifier
    assert set(report["accuracy"]) == {"random", "typiclust_margin"}
    assert report["labels"] == [6, 11, 16]  # seed set of 2 per class, then 2 rounds of 5
    accs = [a for per_seed in report["accuracy"].values() for curve in per_seed.values() for a in curve]
    assert len(accs) == 6 and all(0.0 <= a <= 1.0 for a in accs)
    assert "typiclust_margin" in stem.with_suffix(".md").read_text()
