"""Validation of identifiers and names shared by every service (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable
from typing import Any

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
        raise InvalidArgument(f"app id {value!r} is invalid: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit")
    return value


_app_id = app_id  # for functions whose parameter is called app_id


def input_id(value: str) -> str:
    if not isinstance(value, str) or not INPUT_ID.fullmatch(value):
        raise InvalidArgument(f"input id {value[:80]!r} is invalid: use 1-128 letters, digits, '.', '-' or '_', starting with a letter or digit")
    return value


# An embedding model reference as it appears inside the platform (stored App.embedding_model,
# events, index names): a Triton model name, optionally "@<version>".
EMBEDDING_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}(@[1-9][0-9]{0,9})?", re.ASCII)
# What a client names: one of its app's own models, "<model id>" or "<model id>@<version>".
APP_MODEL_REF = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,127})(?:@([1-9][0-9]{0,9}))?", re.ASCII)
#: Names a client may give for the built-in backbone (besides ""): its Triton name and the
#: version string indexes report (firstlight.models.backbone.BACKBONE_VERSION; not imported
#: here, it pulls in torch; a unit test keeps the two equal).
BACKBONE_NAMES = frozenset({"backbone", "efficientnet-lite0-57934424.v1"})
#: Prefix of every Triton model an app's models are exported as (training.export.triton_model_name).
APP_MODEL_PREFIX = "fl."


def embedding_model(value: str) -> str:
    """An internal embedding model reference (a Triton model name, optionally "@<version>");
    "" (the base backbone) is valid. Never applied to what a client sends: see
    :func:`app_embedding_model`."""
    if value and not EMBEDDING_MODEL.fullmatch(value):
        raise InvalidArgument(
            f"embedding model {value[:80]!r} is invalid: give a Triton model name (letters, digits, '_', '-', '.'), "
            "optionally followed by '@<version>', or nothing for the base backbone"
        )
    return value


def app_embedding_model(app_id: str, value: str) -> str:
    """Resolve the embedding model a client names, within ``app_id``, to the internal reference
    (the Triton model name, optionally "@<version>"); "" for the built-in backbone.

    A client names the backbone ("", "backbone" or its version string) or one of its own app's
    models by model id ("emb", "emb@2"). It never names a Triton model: ``fl.<app>.<model>`` is
    INVALID_ARGUMENT, so no request can reach another app's model (the Triton name is built here
    from the app the caller was authorised for)."""
    if not isinstance(value, str):
        raise InvalidArgument("embedding model must be a string")
    if not value or value in BACKBONE_NAMES:
        return ""
    if value.startswith(APP_MODEL_PREFIX):
        raise InvalidArgument(
            f"embedding model {value[:80]!r} looks like a Triton model name: name one of the app's own models by its "
            "model id ('<model id>' or '<model id>@<version>'), or 'backbone'; Triton model names are not accepted"
        )
    m = APP_MODEL_REF.fullmatch(value)
    if m is None:
        raise InvalidArgument(
            f"embedding model {value[:80]!r} is invalid: give one of the app's model ids (1-128 letters, digits, '.', "
            "'-' or '_'), optionally followed by '@<version>', or 'backbone' (or nothing) for the base backbone"
        )
    if not app_id:
        raise InvalidArgument(f"embedding model {value!r} is an app's model: the request needs app_id")
    _app_id(app_id)
    model_id, version = m.group(1), m.group(2)
    return f"{APP_MODEL_PREFIX}{app_id}.{model_id}" + (f"@{version}" if version else "")


def public_embedding_model(app_id: str, value: str) -> str:
    """The inverse of :func:`app_embedding_model` for what clients are shown: an internal
    reference of ``app_id``'s own model becomes its model id ("fl.app.emb@2" -> "emb@2");
    anything else (the backbone's names, "") is returned as is."""
    prefix = f"{APP_MODEL_PREFIX}{app_id}."
    return value[len(prefix) :] if app_id and value.startswith(prefix) else value


def owns_embedding_model(app_id: str, value: str) -> bool:
    """Whether an internal embedding model reference is the backbone or one of ``app_id``'s own
    models (an event naming another app's model is refused by the consumer)."""
    return not value or (bool(app_id) and value.startswith(f"{APP_MODEL_PREFIX}{app_id}."))


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


def regions(values: Iterable[Any], field: str = "regions") -> list[tuple[str, float, float, float, float]]:
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


METADATA_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:-]{0,63}", re.ASCII)


def metadata_key(value: str) -> str:
    """A metadata key a request names (to slice or group by); stored keys are free text, a key
    asked for is a plain name so it can be echoed, logged and shown as is."""
    if not isinstance(value, str) or not METADATA_KEY.fullmatch(value):
        raise InvalidArgument(f"metadata key {value[:80]!r} is invalid: use 1-64 letters, digits, '.', ':', '_' or '-', starting with a letter, digit or '_'")
    return value


WHOLE_NUMBER = re.compile(r"[0-9]{1,18}", re.ASCII)


def whole_number(text: str) -> int | None:
    """``text`` (spaces around it ignored) as a non-negative whole number written in ASCII
    digits, else None. Not ``str.isdigit()``: it also accepts '²' and other digits ``int()``
    refuses, which turned a bad query parameter or header into a crash."""
    t = text.strip()
    return int(t) if WHOLE_NUMBER.fullmatch(t) else None


def page_size(value: int, *, default: int, maximum: int) -> int:
    if value < 0:
        raise InvalidArgument(f"page_size must not be negative (got {value})")
    if value > maximum:
        raise InvalidArgument(f"page_size {value} is over the maximum of {maximum}")
    return value or default


_PAGE_KEY: bytes | None = None


def _page_key() -> bytes:
    """Key of the page tokens: derived from FIRSTLIGHT_INTERNAL_KEY, which every replica of
    every service holds (a token from one replica works on another), else random per process."""
    global _PAGE_KEY
    if _PAGE_KEY is None:
        secret = os.environ.get("FIRSTLIGHT_INTERNAL_KEY", "")
        _PAGE_KEY = hmac.new(secret.encode(), b"firstlight page tokens v1", hashlib.sha256).digest() if secret else secrets.token_bytes(32)
    return _PAGE_KEY


def _page_pad(key: bytes, nonce: bytes, label: bytes) -> bytes:
    return hmac.new(key, b"pad" + nonce + label, hashlib.sha256).digest()[:8]


def encode_page_token(kind: str, position: int, scope: str = "") -> str:
    """Opaque page token for ``position`` (a sequence number or an offset) of a listing of
    ``kind`` in ``scope`` (the app): encrypted (a client cannot read a global row number from
    it) and authenticated (it cannot be forged, edited, or replayed in another app's listing).
    Random nonce, HMAC-SHA256 as the keystream and as the MAC."""
    key, nonce, label = _page_key(), secrets.token_bytes(8), f"{kind}\0{scope}".encode()
    cipher = bytes(a ^ b for a, b in zip(int(position).to_bytes(8, "big"), _page_pad(key, nonce, label)))
    mac = hmac.new(key, b"mac" + nonce + cipher + label, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(nonce + cipher + mac).decode().rstrip("=")


def decode_page_token(kind: str, token: str, scope: str = "") -> int:
    """Position in a token made by :func:`encode_page_token` with the same ``kind`` and
    ``scope``; 0 if empty; INVALID_ARGUMENT for anything else."""
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
    except (ValueError, UnicodeEncodeError):
        raw = b""
    key, label = _page_key(), f"{kind}\0{scope}".encode()
    if len(raw) == 32:
        nonce, cipher, mac = raw[:8], raw[8:16], raw[16:]
        if hmac.compare_digest(mac, hmac.new(key, b"mac" + nonce + cipher + label, hashlib.sha256).digest()[:16]):
            position = int.from_bytes(bytes(a ^ b for a, b in zip(cipher, _page_pad(key, nonce, label))), "big")
            if position < 1 << 62:
                return position
    raise InvalidArgument("page_token is not a token returned by this service for this listing")
