"""The deep hyperparameter registry: applicability per template, ranges, defaults, lrate spellings."""

import pytest

from firstlight.domain.errors import InvalidSetting
from firstlight.errors import InvalidArgument
from firstlight.training.deep import hyper

ALL = {
    "average_horizontal_flips",
    "base_gradient_multiplier",
    "batch_size",
    "detection_score_threshold",
    "image_size",
    "init_epochs",
    "logreg",
    "lrate",
    "num_epochs",
    "num_items_per_epoch",
    "per_128_lrate",
    "per_item_lrate",
    "step_epochs",
    "test_freq",
    "use_perclass_regression",
}


def test_registry_has_the_fifteen_names_with_help_and_defaults():
    assert set(hyper.SHARED) == ALL
    for spec in hyper.SHARED.values():
        assert spec.help and spec.type in ("bool", "int", "float")
        if spec.default is not None and spec.lo is not None:
            assert spec.lo <= spec.default <= spec.hi


@pytest.mark.parametrize(
    "template,excluded",
    [
        ("visual_classifier", {"detection_score_threshold", "use_perclass_regression"}),
        ("visual_detector", {"logreg"}),
        ("visual_embedder", {"logreg", "detection_score_threshold", "use_perclass_regression"}),
    ],
)
def test_applicability(template, excluded):
    shared = set(hyper.applicable(template)) & ALL
    assert shared == ALL - excluded
    for key in excluded:
        with pytest.raises(InvalidSetting) as err:
            hyper.parse_deep(template, {key: "1"})
        assert err.value.key == key and "does not apply" in str(err.value)
        assert isinstance(err.value, InvalidArgument)


def test_defaults_filled_and_values_coerced():
    h = hyper.parse_deep("visual_classifier", {"batch_size": "16", "logreg": "true", "num_epochs": 3})
    assert h["batch_size"] == 16 and h["logreg"] is True and h["num_epochs"] == 3
    assert h["image_size"] == hyper.SHARED["image_size"].default
    assert h["lrate"] == hyper.SHARED["lrate"].default and h["lrate_given_as"] == "lrate"


@pytest.mark.parametrize(
    "key,value", [("batch_size", "0"), ("image_size", "4096"), ("test_freq", "0"), ("lrate", "-1"), ("num_epochs", "2.5"), ("logreg", "maybe")]
)
def test_out_of_range_names_the_key(key, value):
    with pytest.raises(InvalidSetting) as err:
        hyper.parse_deep("visual_classifier", {key: value})
    assert err.value.key == key and key in str(err.value)


def test_unknown_key():
    with pytest.raises(InvalidSetting) as err:
        hyper.parse_deep("visual_classifier", {"learning_rate": "0.1"})
    assert err.value.key == "learning_rate"


def test_lrate_spellings():
    h = hyper.parse_deep("visual_classifier", {"per_128_lrate": "0.1", "batch_size": "64"})
    assert h["lrate"] == pytest.approx(0.05) and h["lrate_given_as"] == "per_128_lrate"
    h = hyper.parse_deep("visual_classifier", {"per_item_lrate": "0.001", "batch_size": "32"})
    assert h["lrate"] == pytest.approx(0.032)
    with pytest.raises(InvalidSetting) as err:
        hyper.parse_deep("visual_classifier", {"lrate": "0.1", "per_item_lrate": "0.001"})
    assert err.value.key == "per_item_lrate" and "at most one" in str(err.value)


def test_template_own_settings():
    from firstlight.training.deep import classifier  # noqa: F401 - registers its settings

    assert hyper.parse_deep("visual_classifier", {"architecture": "resnet_scratch"})["architecture"] == "resnet_scratch"
    with pytest.raises(InvalidSetting) as err:
        hyper.parse_deep("visual_classifier", {"architecture": "vgg"})
    assert err.value.key == "architecture"
    with pytest.raises(InvalidSetting):
        hyper.parse_deep("visual_embedder", {"architecture": "resnet_scratch"})


def test_unknown_template():
    with pytest.raises(InvalidSetting) as err:
        hyper.parse_deep("visual_segmenter", {})
    assert err.value.key == "template"
