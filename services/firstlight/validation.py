"""Validation of identifiers and names shared by every service (pure)."""

from __future__ import annotations

import base64
import math
import re
import unicodedata

from firstlight.errors import InvalidArgument, ResourceExhausted

# Identifier patterns. Always used with ``fullmatch`` (never ``match`` with ``$``, which also
# accepts a trailing newline: "evil\n"), and ASCII-only (no unicode digits or lookalikes).
APP_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}", re.ASCII)
INPUT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
MAX_CONCEPT_CHARS = 256
MAX_CONCEPTS_PER_INPUT = 256
MAX_METADATA_ENTRIES = 64
MAX_REGIONS_PER_INPUT = 1000
MAX_METADATA_CHARS = 4096


def app_id(value: str) -> str:
    if not isinstance(value, str) or not APP_ID.fullmatch(value):
        raise InvalidArgument(
            f"app id {value!r} is invalid: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    return value


def input_id(value: str) -> str:
    if not isinstance(value, str) or not INPUT_ID.fullmatch(value):
        raise InvalidArgument(
            f"input id {value[:80]!r} is invalid: use 1-128 letters, digits, '.', '-' or '_', starting with a letter or digit"
        )
    return value


# A Triton model name (letters, digits, '_', '-', '.'), optionally "@<version>".
EMBEDDING_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}(@[1-9][0-9]{0,9})?", re.ASCII)


def embedding_model(value: str) -> str:
    """An app's embedding model reference; "" (the base backbone) is valid."""
    if value and not EMBEDDING_MODEL.fullmatch(value):
        raise InvalidArgument(
            f"embedding model {value[:80]!r} is invalid: give a Triton model name (letters, digits, '_', '-', '.'), "
            "optionally followed by '@<version>', or nothing for the base backbone"
        )
    return value


def concept(value: str) -> str:
    """Trim and NFC-normalise a concept name; any script is fine, control characters are not."""
    name = unicodedata.normalize("NFC", (value or "").strip())
    if not name:
        raise InvalidArgument("concept name is empty")
    if len(name) > MAX_CONCEPT_CHARS:
        raise InvalidArgument(f"concept name is {len(name)} characters, over the limit of {MAX_CONCEPT_CHARS}")
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} for ch in name):
        raise InvalidArgument(f"concept name {name[:40]!r} contains control or unassigned characters")
    return name


MAX_KEY_NAME_CHARS = 256


def key_name(value: str) -> str:
    """An API key's label (free text, may be empty): no control, format or unassigned characters
    (a newline or NUL in a name would forge lines in listings and logs)."""
    if len(value) > MAX_KEY_NAME_CHARS:
        raise InvalidArgument(f"key name is {len(value)} characters, over the limit of {MAX_KEY_NAME_CHARS}")
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} for ch in value):
        raise InvalidArgument(f"key name {value[:40]!r} contains control or unassigned characters")
    return value


def concepts(values: list[str] | tuple[str, ...]) -> list[str]:
    if len(values) > MAX_CONCEPTS_PER_INPUT:
        raise ResourceExhausted(f"{len(values)} concepts on one input, over the limit of {MAX_CONCEPTS_PER_INPUT}")
    return list(dict.fromkeys(concept(v) for v in values))


def regions(values, field: str = "regions") -> list[tuple[str, float, float, float, float]]:
    """Labeled objects as (concept, x0, y0, x1, y1), from anything with ``concept`` and ``box``
    (a common.Region, or the SDK's dicts turned into Regions). Boxes are normalised to the image:
    0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1. Errors name the field, e.g. ``regions[2].box.x1``."""
    values = list(values)
    if len(values) > MAX_REGIONS_PER_INPUT:
        raise ResourceExhausted(f"{field}: {len(values)} regions on one input, over the limit of {MAX_REGIONS_PER_INPUT}")
    out = []
    for n, r in enumerate(values):
        where = f"{field}[{n}]"
        try:
            name = concept(r.concept)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}.concept: {exc}") from None
        if hasattr(r, "HasField") and not r.HasField("box"):
            raise InvalidArgument(f"{where}.box is missing")
        b = r.box
        x0, y0, x1, y1 = (float(b.x0), float(b.y0), float(b.x1), float(b.y1))
        for key, v in (("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1)):
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise InvalidArgument(f"{where}.box.{key} = {v} is outside [0, 1] (boxes are normalised to the image)")
        if not x0 < x1:
            raise InvalidArgument(f"{where}.box: x0 ({x0}) must be < x1 ({x1})")
        if not y0 < y1:
            raise InvalidArgument(f"{where}.box: y0 ({y0}) must be < y1 ({y1})")
        out.append((name, x0, y0, x1, y1))
    return out


def metadata(values: dict[str, str]) -> dict[str, str]:
    if len(values) > MAX_METADATA_ENTRIES:
        raise ResourceExhausted(f"{len(values)} metadata entries, over the limit of {MAX_METADATA_ENTRIES}")
    for key, val in values.items():
        if len(key) + len(val) > MAX_METADATA_CHARS:
            raise ResourceExhausted(f"metadata entry {key[:40]!r} is over {MAX_METADATA_CHARS} characters")
    return dict(values)


def page_size(value: int, *, default: int, maximum: int) -> int:
    if value < 0:
        raise InvalidArgument(f"page_size must not be negative (got {value})")
    if value > maximum:
        raise InvalidArgument(f"page_size {value} is over the maximum of {maximum}")
    return value or default


def encode_page_token(kind: str, position: int) -> str:
    """Opaque page token: a tagged position (sequence number, offset) in base64."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode()


def decode_page_token(kind: str, token: str) -> int:
    """Position in a token made by :func:`encode_page_token` with the same ``kind``; 0 if empty."""
    if not token:
        return 0
    try:
        tag, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if tag != kind or int(value) < 0:
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not a token returned by this service") from None
