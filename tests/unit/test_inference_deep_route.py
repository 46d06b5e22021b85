"""Predict routes a deep classifier version (announced with kind/image_size on
model.version.ready) to its Triton model with pixels at its own size; heads keep the backbone path."""

import numpy as np
import pytest

from firstlight import datasets
from firstlight.config import ImageLimits
from firstlight.inference.core import Predictor
from firstlight.inference.registry import Registry
from firstlight.v1 import events_pb2


class FakeTriton:
    def __init__(self):
        self.calls = []

    def infer_images(self, model, version, pixels, output="PROBS"):
        self.calls.append(("images", model, version, pixels.shape))
        return np.tile(np.array([[0.2, 0.7, 0.1]], np.float32), (len(pixels), 1))

    def embed(self, pixels):
        self.calls.append(("embed", pixels.shape))
        return np.zeros((len(pixels), 1280), np.float32)

    def infer_head(self, model, version, emb):
        self.calls.append(("head", model, version))
        return np.tile(np.array([[0.5, 0.3, 0.2]], np.float32), (len(emb), 1))


def _ready(model_id, version, kind="", size=0):
    return events_pb2.ModelVersionReady(
        app_id="a",
        model_id=model_id,
        version=version,
        triton_model=f"fl.a.{model_id}",
        concepts=["x", "y", "z"],
        serving=True,
        activation="softmax",
        kind=kind,
        image_size=size,
    )


@pytest.fixture
def predictor():
    registry = Registry()
    registry.apply(_ready("deep", "1", "classifier", 48))
    registry.apply(_ready("head", "1"))
    registry.apply(_ready("det", "1", "embedder", 64))
    return Predictor(FakeTriton(), ImageLimits(), registry)


def test_deep_classifier_gets_pixels_at_its_size(predictor):
    image = datasets.animal_mnist(1, seed=0, classes=["zebra"])[0][2]
    model, ranked = predictor.predict([image, image], app_id="a", model_id="deep", top_k=2)
    assert model.kind == "classifier" and model.image_size == 48
    assert predictor.triton.calls == [("images", "fl.a.deep", "1", (2, 48, 48, 3))]
    assert ranked[0] == [("y", pytest.approx(0.7)), ("x", pytest.approx(0.2))]


def test_head_keeps_the_backbone_path(predictor):
    image = datasets.animal_mnist(1, seed=0, classes=["zebra"])[0][2]
    predictor.predict([image], app_id="a", model_id="head")
    assert [c[0] for c in predictor.triton.calls] == ["embed", "head"] and predictor.triton.calls[0][1] == (1, 224, 224, 3)


def test_a_deep_model_that_is_not_a_classifier_is_invalid_for_predict(predictor):
    from firstlight.errors import InvalidArgument

    image = datasets.animal_mnist(1, seed=0, classes=["zebra"])[0][2]
    with pytest.raises(InvalidArgument, match="embedder"):
        predictor.predict([image], app_id="a", model_id="det")
