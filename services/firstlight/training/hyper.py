"""Parse training settings sent by clients (strings, numbers, booleans — e.g. a proto
``map<string, string>`` or ``Struct``) into validated settings objects.

Unknown keys, unparsable values and out-of-range values raise :class:`InvalidSetting` naming the
key (INVALID_ARGUMENT through ``runtime.status``). ``TRANSFER_SETTINGS`` / ``PROTOTYPE_SETTINGS``
describe the keys (type, default, range or choices, help) for a templates listing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firstlight.domain.errors import InvalidSetting
from firstlight.domain.heads.oneshot import (
    DEFAULT_TAU,
    K_RANGE,
    PROTOTYPE_TEMPLATE,
    TAU_RANGE,
    PrototypeSettings,
)
from firstlight.domain.heads.transfer import (
    C_RANGE,
    CLASS_WEIGHTS,
    MAX_ITER_RANGE,
    TOL_RANGE,
    TransferSettings,
)
from firstlight.domain.heads.transfer import (
    TEMPLATE as TRANSFER_TEMPLATE,
)

__all__ = [
    "PROTOTYPE_SETTINGS",
    "TRANSFER_SETTINGS",
    "InvalidSetting",
    "SettingSpec",
    "parse_prototype_settings",
    "parse_settings",
    "parse_transfer_settings",
    "settings_specs",
]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class SettingSpec:
    key: str
    type: str  # "bool" | "float" | "int" | "choice"
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # accepts "auto" / "" / None meaning "derived"

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "type": self.type, "default": self.default, "help": self.help}
        if self.lo is not None:
            d["range"] = [self.lo, self.hi]
        if self.choices:
            d["choices"] = list(self.choices)
        return d


TRANSFER_SETTINGS: dict[str, SettingSpec] = {
    s.key: s
    for s in [
        SettingSpec("mutually_exclusive", "bool", True, "each input has exactly one concept: softmax over concepts"),
        SettingSpec("logreg", "bool", None, "independent sigmoid per concept (multi-label); default: not mutually_exclusive", optional=True),
        SettingSpec("C", "float", 100.0, "inverse L2 regularisation strength (larger: weaker regularisation); 100 suits unit-norm embeddings", *C_RANGE),
        SettingSpec("class_weight", "choice", "balanced", "weight classes inversely to their frequency, or not", choices=CLASS_WEIGHTS),
        SettingSpec("augment_flip", "bool", False, "add embeddings of horizontally flipped training images"),
        SettingSpec("max_iter", "int", 1000, "maximum lbfgs iterations", *MAX_ITER_RANGE),
        SettingSpec("tol", "float", 1e-6, "lbfgs stops when the largest gradient entry is below this", *TOL_RANGE),
        SettingSpec("seed", "int", 0, "random seed", 0, 2**32 - 1),
    ]
}

PROTOTYPE_SETTINGS: dict[str, SettingSpec] = {
    s.key: s
    for s in [
        SettingSpec("tau", "float", DEFAULT_TAU, "softmax temperature on cosine similarity", *TAU_RANGE),
        SettingSpec("knn_k", "int", 5, "neighbours for the kNN variant", *K_RANGE),
        SettingSpec("examples_per_concept", "int", 0, "k of k-shot: training examples used per concept (0: all)", 0, K_RANGE[1]),
        SettingSpec("seed", "int", 0, "which k examples are drawn", 0, 2**32 - 1),
    ]
}


def _coerce(spec: SettingSpec, value: Any) -> Any:
    key = spec.key
    if spec.optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto"))):
        return None
    if spec.type == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise InvalidSetting(key, f"must be true or false, got {value!r}")
    if spec.type == "choice":
        text = str(value).strip().lower() if isinstance(value, str) else None
        if text not in spec.choices:
            raise InvalidSetting(key, f"must be one of {', '.join(spec.choices)}; got {value!r}")
        return text
    # numbers
    if isinstance(value, bool):
        raise InvalidSetting(key, f"must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            number: float = float(value.strip())
        except ValueError:
            raise InvalidSetting(key, f"must be a number, got {value!r}") from None
    elif isinstance(value, (int, float)):
        number = value
    else:
        raise InvalidSetting(key, f"must be a number, got {value!r}")
    if not math.isfinite(number):
        raise InvalidSetting(key, f"must be finite, got {value!r}")
    if spec.type == "int":
        if number != int(number):
            raise InvalidSetting(key, f"must be an integer, got {value!r}")
        number = int(number)
    else:
        number = float(number)
    if spec.lo is not None and spec.hi is not None and not spec.lo <= number <= spec.hi:
        raise InvalidSetting(key, f"must be in [{spec.lo:g}, {spec.hi:g}], got {value!r}")
    return number


def _parse(d: Mapping[str, Any] | None, specs: Mapping[str, SettingSpec]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (d or {}).items():
        spec = specs.get(key)
        if spec is None:
            raise InvalidSetting(str(key), f"unknown setting; known settings: {', '.join(specs)}")
        out[key] = _coerce(spec, value)
    return out


def parse_transfer_settings(d: Mapping[str, str | float | int | bool | None] | None) -> TransferSettings:
    """Settings for ``transfer_classifier``; missing keys take their defaults."""
    return TransferSettings(**_parse(d, TRANSFER_SETTINGS))


def parse_prototype_settings(d: Mapping[str, str | float | int | bool | None] | None) -> PrototypeSettings:
    """Settings for ``prototype_classifier`` / the kNN variant."""
    return PrototypeSettings(**_parse(d, PROTOTYPE_SETTINGS))


def settings_specs(template: str) -> dict[str, SettingSpec]:
    """The setting keys a template accepts."""
    if template == TRANSFER_TEMPLATE:
        return TRANSFER_SETTINGS
    if template == PROTOTYPE_TEMPLATE:
        return PROTOTYPE_SETTINGS
    raise InvalidSetting("template", f"unknown template {template!r} (available: {TRANSFER_TEMPLATE}, {PROTOTYPE_TEMPLATE})")


def parse_settings(template: str, d: Mapping[str, str | float | int | bool | None] | None) -> TransferSettings | PrototypeSettings:
    """Settings of ``template`` ("transfer_classifier" or "oneshot_classifier")."""
    if template == TRANSFER_TEMPLATE:
        return parse_transfer_settings(d)
    settings_specs(template)  # raises for an unknown template
    return parse_prototype_settings(d)
