"""The deep templates' hyperparameters: one registry of names, types, ranges, defaults and help,
and per-template applicability.

Every deep template (``visual_classifier``, ``visual_detector``, ``visual_embedder``) takes the
shared names that apply to it plus its own settings, registered with :func:`register_template`.
:func:`parse_deep` validates a client's ``map<string,string>`` against that list: a key that does
not apply to the template, or a value of the wrong type or out of range, is
:class:`~firstlight.domain.errors.InvalidSetting` naming the key (INVALID_ARGUMENT), and the
learning rate is resolved from whichever of ``lrate`` / ``per_128_lrate`` / ``per_item_lrate`` was
given (at most one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from firstlight.domain.errors import InvalidSetting
from firstlight.training.hyper import SettingSpec, _coerce

__all__ = [
    "LR_KEYS",
    "SHARED",
    "applicable",
    "deep_templates",
    "effective_lrate",
    "parse_deep",
    "register_template",
    "stability_settings",
    "template_specs",
]

# The learning rate can be given in three equivalent ways (as in the classic platform): directly,
# per 128 items of a batch, or per item. None of them is "the default" when another is given.
LR_KEYS = ("lrate", "per_128_lrate", "per_item_lrate")

SHARED: dict[str, SettingSpec] = {
    s.key: s
    for s in [
        SettingSpec(
            "average_horizontal_flips",
            "bool",
            True,
            "at evaluation and serving, average the predictions of each image and its mirror image",
        ),
        SettingSpec(
            "base_gradient_multiplier",
            "float",
            0.1,
            "learning-rate multiplier of the pretrained backbone relative to the new head (0 freezes the backbone)",
            0.0,
            10.0,
        ),
        SettingSpec("batch_size", "int", 32, "images per optimisation step", 1, 1024),
        SettingSpec(
            "detection_score_threshold",
            "float",
            0.3,
            "detections scoring below this are dropped from the output (and from mAP's ranked list)",
            0.0,
            1.0,
        ),
        SettingSpec(
            "image_size",
            "int",
            128,
            "training and serving image side: images are resized to image_size × image_size (classifier/embedder: shorter side then center crop)",
            32,
            512,
        ),
        SettingSpec("init_epochs", "int", 5, "epochs at the base learning rate before the first step down", 0, 1000),
        SettingSpec(
            "logreg",
            "bool",
            False,
            "independent sigmoid (logistic) output per concept — multi-label — instead of one softmax over concepts",
        ),
        # The classifier's SGD (the only template without its own lrate). 0.03 with the classifier's
        # warm-up and clipping: unclipped, 30 steps on 16 images stayed at chance at 0.01 and diverged
        # at 0.03; clipped at norm 1, 0.001-0.1 all fit them and the edge is 0.3, so 0.03 sits 10×
        # below it. It also learned best on the bundled sets (docs/deep-training.md, "Learning rate").
        SettingSpec(
            "lrate",
            "float",
            0.03,
            "base learning rate of the new layers (the optimizer is the template's: SGD+momentum for the classifier)",
            1e-7,
            10.0,
        ),
        SettingSpec("num_epochs", "int", 10, "training epochs", 1, 1000),
        SettingSpec(
            "num_items_per_epoch",
            "int",
            0,
            "training images drawn per epoch, cycling/re-sampling the training set (0: one pass over it)",
            0,
            10_000_000,
        ),
        SettingSpec("per_128_lrate", "float", None, "learning rate per 128 items: lrate = per_128_lrate × batch_size / 128", 1e-7, 10.0, optional=True),
        SettingSpec("per_item_lrate", "float", None, "learning rate per item: lrate = per_item_lrate × batch_size", 1e-9, 1.0, optional=True),
        SettingSpec("step_epochs", "int", 5, "after init_epochs, the learning rate is multiplied by 0.1 every step_epochs", 1, 1000),
        SettingSpec("test_freq", "int", 1, "validation metrics are computed and reported every test_freq epochs (and at the last)", 1, 1000),
        SettingSpec(
            "use_perclass_regression",
            "bool",
            True,
            "box regression per concept (K×4 outputs) instead of one class-agnostic box per anchor",
        ),
    ]
}


def stability_settings(*, warmup_epochs: int, max_grad_norm: float, divergence_retries: int) -> tuple[SettingSpec, ...]:
    """The settings of :func:`~firstlight.training.deep.loop.run_epochs`' guards against an
    unstable learning rate, with a template's own defaults (templates that use the shared loop
    register them as own settings)."""
    return (
        SettingSpec(
            "warmup_epochs",
            "int",
            warmup_epochs,
            "the learning rate ramps up linearly from ~0 over this many epochs (0: no warm-up)",
            0,
            1000,
        ),
        SettingSpec(
            "max_grad_norm",
            "float",
            max_grad_norm,
            "gradients are clipped to this global L2 norm before each step (0: no clipping)",
            0.0,
            1e6,
        ),
        SettingSpec(
            "divergence_retries",
            "int",
            divergence_retries,
            "when the loss is not finite, rises, or does not fall, training restarts from the initial "
            "weights at a third of the learning rate, at most this many times; then the job fails with the reason",
            0,
            5,
        ),
    )


# template -> (shared keys that apply, its own settings)
_TEMPLATES: dict[str, tuple[tuple[str, ...], dict[str, SettingSpec]]] = {}

_ALL = tuple(SHARED)
DEFAULT_APPLICABLE: dict[str, tuple[str, ...]] = {
    "visual_classifier": tuple(k for k in _ALL if k not in ("detection_score_threshold", "use_perclass_regression")),
    "visual_detector": tuple(k for k in _ALL if k != "logreg"),
    "visual_embedder": tuple(k for k in _ALL if k not in ("logreg", "detection_score_threshold", "use_perclass_regression")),
}


def register_template(name: str, own: Iterable[SettingSpec] = (), shared: Iterable[str] | None = None) -> None:
    """Register (or replace) a template's settings: the shared names that apply (default: the
    issue's applicability table) plus the template's own specs. Own keys must not shadow shared ones
    unless they are the same spec with a template-specific default (then the own spec wins)."""
    applies = tuple(shared) if shared is not None else DEFAULT_APPLICABLE.get(name, ())
    unknown = [k for k in applies if k not in SHARED]
    if unknown:
        raise ValueError(f"unknown shared hyperparameters {unknown}")
    _TEMPLATES[name] = (applies, {s.key: s for s in own})


def deep_templates() -> tuple[str, ...]:
    return tuple(_TEMPLATES)


def template_specs(name: str) -> dict[str, SettingSpec]:
    """All settings ``name`` accepts: applicable shared specs, then its own (own specs override a
    shared spec of the same key, e.g. a different default)."""
    if name not in _TEMPLATES:
        raise InvalidSetting("template", f"unknown deep template {name!r} (available: {', '.join(_TEMPLATES) or 'none'})")
    applies, own = _TEMPLATES[name]
    specs = {k: SHARED[k] for k in applies}
    specs.update(own)
    return specs


def applicable(name: str) -> tuple[str, ...]:
    return tuple(template_specs(name))


def effective_lrate(values: Mapping[str, Any]) -> float:
    """lrate from whichever spelling was given: per_128_lrate × batch_size / 128, per_item_lrate ×
    batch_size, else lrate."""
    bs = int(values["batch_size"])
    if values.get("per_128_lrate") is not None:
        return float(values["per_128_lrate"]) * bs / 128.0
    if values.get("per_item_lrate") is not None:
        return float(values["per_item_lrate"]) * bs
    return float(values["lrate"])


def parse_deep(name: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate ``given`` for template ``name`` and fill in defaults. The result's ``lrate`` is the
    effective learning rate (whichever spelling was used); ``lrate_given_as`` says which."""
    specs = template_specs(name)
    out: dict[str, Any] = {}
    for key, value in (given or {}).items():
        spec = specs.get(key)
        if spec is None:
            if key in SHARED:
                raise InvalidSetting(str(key), f"does not apply to template {name}; it takes: {', '.join(specs)}")
            raise InvalidSetting(str(key), f"unknown setting for template {name}; it takes: {', '.join(specs)}")
        out[key] = _coerce(spec, value)
    lr_given = [k for k in LR_KEYS if k in specs and out.get(k) is not None]
    if len(lr_given) > 1:
        raise InvalidSetting(lr_given[1], f"give at most one of {', '.join(LR_KEYS)} (got {', '.join(lr_given)})")
    for key, spec in specs.items():
        out.setdefault(key, spec.default)
    if "lrate" in specs:
        lr = effective_lrate(out)
        if not 1e-9 <= lr <= 10.0:
            raise InvalidSetting(lr_given[0] if lr_given else "lrate", f"gives an effective learning rate {lr:g} outside [1e-9, 10]")
        out["lrate"] = lr
        out["lrate_given_as"] = lr_given[0] if lr_given else "lrate"
    return out


for _name in DEFAULT_APPLICABLE:
    register_template(_name)
