"""Issue 14, item 1: clients name embedding models within their app, never by Triton name, and a
name that is not exported never makes Triton load anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from firstlight.config import ImageLimits
from firstlight.domain import validation
from firstlight.embedding.core import Embedder
from firstlight.errors import InvalidArgument, NotFound
from firstlight.triton.client import EmbedderInfo


def test_backbone_names_match_the_backbone_module() -> None:
    from firstlight.models.backbone import BACKBONE_VERSION

    assert BACKBONE_VERSION in validation.BACKBONE_NAMES


@pytest.mark.parametrize(
    ("given", "internal"),
    [("", ""), ("backbone", ""), ("efficientnet-lite0-57934424.v1", ""), ("emb", "fl.a.emb"), ("emb@2", "fl.a.emb@2"), ("m.x-1", "fl.a.m.x-1")],
)
def test_app_models_resolve_within_the_app(given: str, internal: str) -> None:
    assert validation.app_embedding_model("a", given) == internal
    assert validation.public_embedding_model("a", internal) == (given if internal else internal)


@pytest.mark.parametrize("bad", ["fl.b.emb", "fl.a.emb@1", "fl.", "emb\n", "emb@1\n", "emb@0", "emb@x", "../b", "a/b", "emb@1@2", "\u0435mb"])
def test_triton_names_and_malformed_refs_are_invalid(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validation.app_embedding_model("a", bad)


def test_an_app_model_needs_an_app() -> None:
    with pytest.raises(InvalidArgument, match="app_id"):
        validation.app_embedding_model("", "emb")
    with pytest.raises(InvalidArgument):
        validation.app_embedding_model("A\n", "emb")


def test_public_names_hide_only_the_apps_own_prefix() -> None:
    assert validation.public_embedding_model("a", "fl.a.emb@1") == "emb@1"
    assert validation.public_embedding_model("a", "fl.ab.emb@1") == "fl.ab.emb@1"  # not a's
    assert validation.owns_embedding_model("a", "") and validation.owns_embedding_model("a", "fl.a.emb@1")
    assert not validation.owns_embedding_model("a", "fl.b.emb@1") and not validation.owns_embedding_model("a", "fl.ab.e")
    assert not validation.owns_embedding_model("", "fl..e")


class RecordingTriton:
    """Records every call that reaches Triton."""

    def __init__(self, repository: Path | None) -> None:
        self.model_repository = repository
        self.calls: list[tuple[str, str]] = []

    def describe_embedder(self, ref: str) -> EmbedderInfo:
        self.calls.append(("describe_embedder", ref))
        return EmbedderInfo(ref.partition("@")[0], ref.partition("@")[2], "images", "embeddings", 64, 16)

    def load_model(self, name: str) -> None:
        self.calls.append(("load_model", name))


def _export(repository: Path, name: str, version: int) -> None:
    folder = repository / name
    (folder / str(version)).mkdir(parents=True)
    (folder / "config.pbtxt").write_text(f'name: "{name}"\n')


def test_unknown_models_never_reach_triton(tmp_path: Path) -> None:
    _export(tmp_path, "fl.a.emb", 1)
    triton = RecordingTriton(tmp_path)
    embedder = Embedder(triton, ImageLimits())
    assert embedder.describe("fl.a.emb@1") == (16, 64)
    assert embedder.describe("fl.a.emb") == (16, 64)  # the latest exported version
    assert triton.calls == [("describe_embedder", "fl.a.emb@1"), ("describe_embedder", "fl.a.emb")]
    triton.calls.clear()
    for missing in ("fl.a.emb@2", "fl.a.nothing", "fl.b.emb", "fl.a.emb\n", "fl.a.emb/../../x", "general"):
        with pytest.raises(NotFound):
            embedder.describe(missing)
    assert triton.calls == []
    # Without a model repository only the backbone embeds: nothing can be checked, nothing loads.
    bare = RecordingTriton(None)
    with pytest.raises(NotFound):
        Embedder(bare, ImageLimits()).describe("fl.a.emb@1")
    assert bare.calls == [] and Embedder(bare, ImageLimits()).describe("") == (1280, 224)
