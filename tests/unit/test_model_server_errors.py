"""Triton's failures reach the embedding and inference cores as domain errors
(``triton.adapter.DomainErrors``), and each core says what they mean there; tested with
in-memory fakes of the cores' model-server ports (``embedding.ports.ImageModels``,
``inference.ports.ModelServer``) and of the registry's announcements (``ports.VersionReady``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from firstlight import datasets, errors
from firstlight.config import ImageLimits
from firstlight.embedding.core import Embedder
from firstlight.inference.core import Observed, Predictor, Step
from firstlight.inference.registry import Registry
from firstlight.triton.adapter import DomainErrors
from firstlight.triton.client import EmbedderInfo, NotAnEmbedder, TritonError, TritonModelNotFound, TritonUnavailable


class RaisingTriton:
    """Raises ``exc`` from every model call (what TritonModels raises)."""

    def __init__(self, exc: Exception, repository: Path | None = None) -> None:
        self.exc = exc
        self.model_repository = repository

    def describe_embedder(self, ref: str) -> EmbedderInfo:
        raise self.exc

    def embed(self, batch: np.ndarray) -> np.ndarray:
        raise self.exc


@pytest.mark.parametrize(
    ("raised", "domain"),
    [
        (TritonUnavailable("down"), errors.Unavailable),
        (TritonModelNotFound("no such model"), errors.ModelNotServed),
        (NotAnEmbedder("2 outputs"), errors.ModelServerError),
        (TritonError("bad input"), errors.ModelServerError),
    ],
)
def test_adapter_turns_triton_failures_into_domain_errors(raised: Exception, domain: type) -> None:
    wrapped = DomainErrors(RaisingTriton(raised, Path("/repo")))
    with pytest.raises(domain) as caught:
        wrapped.embed(np.zeros((1, 4, 4, 3), np.uint8))
    assert type(caught.value) is domain and str(raised) in str(caught.value)
    assert wrapped.model_repository == Path("/repo")  # attributes pass through


def _exported(repository: Path, name: str) -> None:
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(f'name: "{name}"\n')


@pytest.mark.parametrize(
    ("raised", "core_error"),
    [
        (TritonModelNotFound("gone"), errors.NotFound),
        (NotAnEmbedder("not an embedder"), errors.FailedPrecondition),
        (TritonUnavailable("down"), errors.Unavailable),
    ],
)
def test_embedding_core_says_what_a_model_failure_means(tmp_path: Path, raised: Exception, core_error: type) -> None:
    _exported(tmp_path, "fl.a.emb")
    embedder = Embedder(DomainErrors(RaisingTriton(raised, tmp_path)), ImageLimits())
    with pytest.raises(core_error):
        embedder.describe("fl.a.emb@1")


@dataclass
class Ready:
    """A model.version.ready announcement as a plain value: the registry needs no protobuf."""

    app_id: str = "a"
    model_id: str = "head"
    version: str = "1"
    triton_model: str = "fl.a.head"
    concepts: tuple[str, ...] = ("x", "y", "z")
    activation: str = "softmax"
    kind: str = ""
    image_size: int = 0
    embedding_model: str = ""
    serving: bool = True


class FakeServer:
    """The inference core's model server: a backbone, one head, and an embedder that may be gone."""

    def __init__(self, embedder_gone: bool = False) -> None:
        self.embedder_gone = embedder_gone

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return np.ones((len(batch), 8), np.float32)

    def describe_embedder(self, ref: str) -> EmbedderInfo:
        if self.embedder_gone:
            raise errors.ModelNotServed(f"model {ref!r} is not served")
        return EmbedderInfo(ref, "", "images", "embeddings", 32, 4)

    def embed_with(self, ref: str, batch: np.ndarray) -> np.ndarray:
        return np.ones((len(batch), 4), np.float32)

    def infer_head(self, model: str, version: str, embeddings: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[0.6, 0.3, 0.1]], np.float32), (len(embeddings), 1))


def test_inference_core_serves_a_plain_announcement_and_tells_the_observer() -> None:
    registry = Registry()
    assert registry.apply(Ready())  # type: ignore[arg-type]
    seen: list[Observed] = []
    predictor = Predictor(FakeServer(), ImageLimits(), registry, observer=seen.append)
    image = datasets.animal_mnist(1, seed=0, classes=["zebra"])[0][2]
    model, ranked = predictor.predict([image], app_id="a", model_id="head", input_ids=["i1"], top_k=2)
    assert (model.id, model.version) == ("head", "1") and ranked[0] == [("x", pytest.approx(0.6)), ("y", pytest.approx(0.3))]
    [observed] = seen
    assert observed.input_ids == ["i1"] and observed.probabilities.shape == (1, 3) and observed.embeddings.shape == (1, 8)


def test_a_head_whose_embedder_is_gone_is_a_failed_precondition() -> None:
    registry = Registry()
    registry.apply(Ready(embedding_model="fl.a.emb@1"))  # type: ignore[arg-type]
    image = datasets.animal_mnist(1, seed=0, classes=["zebra"])[0][2]
    assert Predictor(FakeServer(), ImageLimits(), registry).predict([image], app_id="a", model_id="head")[1]
    gone = Predictor(FakeServer(embedder_gone=True), ImageLimits(), registry)
    with pytest.raises(errors.FailedPrecondition, match="a model this version needs is not served: model 'fl.a.emb@1'"):
        gone.predict([image], app_id="a", model_id="head")
    with pytest.raises(errors.FailedPrecondition, match="not served"):
        gone.workflow([image], "a", [Step(model_id="head")])


def test_announcements_of_another_apps_models_are_refused() -> None:
    from firstlight.inference.registry import refusal

    assert refusal(Ready()) is None  # type: ignore[arg-type]
    assert refusal(Ready(embedding_model="fl.a.emb@1")) is None  # type: ignore[arg-type]
    assert "lacks" in (refusal(Ready(concepts=())) or "")  # type: ignore[arg-type]
    assert "another app" in (refusal(Ready(triton_model="fl.b.head")) or "")  # type: ignore[arg-type]
    assert "another app" in (refusal(Ready(embedding_model="fl.b.emb@1")) or "")  # type: ignore[arg-type]
