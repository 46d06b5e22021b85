"""Trained embedders are bounded in Triton like app models (issue 13): a process loads the
versions it uses with an explicit version list (the most recently used ones per embedder), at most
MAX_EMBEDDERS embedders across apps, the least recently used unloaded; one that Triton lost (a
restart, or another process's version list) is loaded again and the call retried. The Triton
client's gRPC stub is replaced by a fake that keeps the loaded versions as Triton would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from firstlight.triton import client as triton_client
from firstlight.triton.client import TritonModels

SIZE, DIM = 8, 4


class FakeTriton:
    def __init__(self) -> None:
        self.loaded: dict[str, set[str]] = {}
        self.loads: list[tuple[str, tuple[str, ...]]] = []
        self.unloads: list[str] = []

    def load_model(self, name: str, config: str | None = None, **_kw: object) -> None:
        versions = tuple(str(v) for v in json.loads(config)["versionPolicy"]["specific"]["versions"]) if config else ("all",)
        self.loaded[name] = set(versions)
        self.loads.append((name, versions))

    def unload_model(self, name: str, **_kw: object) -> None:
        self.loaded.pop(name, None)
        self.unloads.append(name)

    def _check(self, name: str, version: str) -> None:
        have = self.loaded.get(name, set())
        if not have or (version and version not in have and "all" not in have):
            raise InferenceServerException(f"Request for unknown model: '{name}' version {version} is not found")

    def get_model_metadata(self, name: str, model_version: str = "", **_kw: object) -> dict:
        self._check(name, model_version)
        return {
            "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, SIZE, SIZE, 3]}],
            "outputs": [{"name": "embeddings", "datatype": "FP32", "shape": [-1, DIM]}],
        }

    def get_model_config(self, name: str, **_kw: object) -> dict:
        return {"config": {"max_batch_size": 8}}

    def is_server_live(self, **_kw: object) -> bool:
        return True

    def infer(self, name: str, inputs: list, model_version: str = "", **_kw: object) -> object:
        self._check(name, model_version)
        n = inputs[0].shape()[0]
        return type("Result", (), {"as_numpy": lambda self, _o: np.ones((n, DIM), np.float32)})()

    def close(self) -> None:
        pass


@pytest.fixture
def triton(tmp_path: Path) -> tuple[TritonModels, FakeTriton]:
    for app in range(12):
        for version in (1, 2, 3):
            (tmp_path / f"emb{app}" / str(version)).mkdir(parents=True)
        (tmp_path / f"emb{app}" / "config.pbtxt").write_text(f'name: "emb{app}"\nbackend: "python"\nmax_batch_size: 8\nversion_policy: {{ all {{ }} }}\n')
    models = TritonModels("127.0.0.1:1", model_repository=tmp_path)
    fake = FakeTriton()
    models._client.close()
    models._client = fake  # type: ignore[assignment]
    return models, fake


def _pixels(n: int = 2) -> np.ndarray:
    return np.zeros((n, SIZE, SIZE, 3), np.uint8)


def test_versions_and_embedders_are_bounded(triton: tuple[TritonModels, FakeTriton]) -> None:
    models, fake = triton
    for version in ("1", "2", "3"):  # an app's embedder retrained twice, each used in turn
        assert models.embed_with(f"emb0@{version}", _pixels()).shape == (2, DIM)
    assert fake.loaded["emb0"] == {"2", "3"}  # the two most recently used (EMBEDDER_KEEP_VERSIONS)
    models.embed_with("emb0", _pixels())  # unversioned: the repository's newest, already loaded
    assert fake.loaded["emb0"] == {"2", "3"}
    for app in range(1, 12):  # more apps with embedders than the cap
        models.embed_with(f"emb{app}@1", _pixels())
    assert len(fake.loaded) == triton_client.MAX_EMBEDDERS
    assert sorted(fake.unloads) == sorted(f"emb{a}" for a in range(12 - triton_client.MAX_EMBEDDERS))  # least recently used first
    models.embed_with("emb0@3", _pixels())  # asked for again: loaded on demand
    assert fake.loaded["emb0"] == {"3"} and len(fake.loaded) == triton_client.MAX_EMBEDDERS


def test_an_embedder_triton_lost_is_loaded_again(triton: tuple[TritonModels, FakeTriton]) -> None:
    models, fake = triton
    models.embed_with("emb0@2", _pixels())
    models.embed_with("emb0@3", _pixels())
    fake.loaded.clear()  # Triton restarted
    assert models.embed_with("emb0@2", _pixels()).shape == (2, DIM)
    assert fake.loaded["emb0"] == {"2", "3"} and fake.loads[-1] == ("emb0", ("2", "3"))
    fake.loaded["emb0"] = {"1"}  # another process loaded it with its own versions
    assert models.embed_with("emb0@3", _pixels()).shape == (2, DIM)
    assert fake.loaded["emb0"] == {"2", "3"}
    assert models.describe_embedder("emb0@3").image_size == SIZE


def test_embedder_descriptions_are_bounded(triton: tuple[TritonModels, FakeTriton], monkeypatch: pytest.MonkeyPatch) -> None:
    models, _ = triton
    monkeypatch.setattr(triton_client, "MAX_EMBEDDER_INFOS", 3)
    for app in range(5):
        models.describe_embedder(f"emb{app}@1")
    assert list(models._embedders) == ["emb2@1", "emb3@1", "emb4@1"]
