"""How the embedding service reads an embedding model's contract from Triton's metadata (and the
exported version's meta.json when the config leaves sizes variable)."""

import json
from pathlib import Path

import pytest

from firstlight.triton.client import NotAnEmbedder, _embedder_info, split_model_ref


def meta(inp=("IMAGE", "UINT8", [-1, 224, 224, 3]), outs=(("EMBEDDING", "FP32", [-1, 1280]),)):  # type: ignore[no-untyped-def]
    return {
        "inputs": [{"name": inp[0], "datatype": inp[1], "shape": [str(d) for d in inp[2]]}],
        "outputs": [{"name": n, "datatype": t, "shape": [str(d) for d in s]} for n, t, s in outs],
    }


def test_fixed_sizes_come_from_the_metadata() -> None:
    info = _embedder_info("backbone", "backbone", "", meta(outs=(("EMBEDDING", "FP32", [-1, 1280]), ("PROBS", "FP32", [-1, 1000]))))
    assert (info.input_name, info.output_name, info.image_size, info.dim) == ("IMAGE", "EMBEDDING", 224, 1280)
    assert split_model_ref("fl.a.m@3") == ("fl.a.m", "3") and split_model_ref("fl.a.m") == ("fl.a.m", "")


def test_variable_sizes_come_from_the_exported_versions_meta(tmp_path: Path) -> None:
    for version, size, dim in ((1, 64, 16), (2, 96, 32)):
        folder = tmp_path / "fl.a.emb" / str(version)
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(
            json.dumps({"kind": "embedder", "image_size": size, "outputs": [{"name": "embeddings", "dtype": "TYPE_FP32", "dims": [dim]}]})
        )
    variable = meta(inp=("IMAGE", "UINT8", [-1, -1, -1, 3]), outs=(("embeddings", "FP32", [-1, -1]),))
    assert _embedder_info("fl.a.emb@1", "fl.a.emb", "1", variable, tmp_path).image_size == 64
    latest = _embedder_info("fl.a.emb", "fl.a.emb", "", variable, tmp_path)  # Triton serves the highest version
    assert (latest.image_size, latest.dim) == (96, 32)
    with pytest.raises(NotAnEmbedder, match="meta.json"):  # noqa: RUF043
        _embedder_info("fl.a.emb", "fl.a.emb", "", variable, None)


def test_models_that_are_not_embedders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotAnEmbedder, match="none is an embedding"):
        _embedder_info("general", "general", "", meta(outs=(("PROBS", "FP32", [-1, 1000]),)))
    with pytest.raises(NotAnEmbedder, match="UINT8"):
        _embedder_info("head", "head", "", meta(inp=("EMBEDDING", "FP32", [-1, 1280])))
    folder = tmp_path / "fl.a.cls" / "1"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(
        json.dumps({"kind": "classifier", "image_size": 64, "outputs": [{"name": "embeddings", "dtype": "TYPE_FP32", "dims": [3]}]})
    )
    variable = meta(inp=("IMAGE", "UINT8", [-1, -1, -1, 3]), outs=(("embeddings", "FP32", [-1, -1]),))
    with pytest.raises(NotAnEmbedder, match="classifier"):
        _embedder_info("fl.a.cls", "fl.a.cls", "1", variable, tmp_path)
