"""API keys as values: key format and digests, principals and the RPC policy (which methods need
the admin or the internal key). Shared by the auth service (which stores keys) and every
service's interceptor (``runtime.auth``, which checks them); what a request *names* is read by
``runtime.scope``.

Keys are 256-bit random secrets, so they are stored as plain SHA-256 digests: a slow KDF
(scrypt, argon2) or a pepper protects low-entropy passwords against offline guessing, which
is hopeless here anyway (2^256), while a fast digest lets every RPC find its key with one
indexed equality lookup and lets a service ask another about a key without sending the key."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

KEY_PREFIX = "flk_"
#: ``flk_<12 hex id>_<43 urlsafe base64 chars of 32 random bytes>``
KEY_PATTERN = re.compile(r"flk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})", re.ASCII)  # fullmatch only

ADMIN = "admin"
INTERNAL = "internal"
APP = "app"

#: RPCs only the admin key may call.
ADMIN_METHODS = frozenset(
    {
        "/firstlight.v1.IngestionService/CreateApp",
        "/firstlight.v1.AuthService/CreateApiKey",
        "/firstlight.v1.AuthService/ListApiKeys",
        "/firstlight.v1.AuthService/RevokeApiKey",
    }
)
#: RPCs for the services themselves (internal key; the admin key may call them too).
INTERNAL_METHODS = frozenset({"/firstlight.v1.AuthService/ResolveApiKey"})
#: Open without a key: orchestrators probe health, tools list services.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin, a service (internal), or an app key."""

    kind: str
    app_id: str = ""
    key_id: str = ""

    def may_reach(self, app_id: str) -> bool:
        return self.kind in (ADMIN, INTERNAL) or app_id == self.app_id

    @property
    def rate_limited(self) -> bool:
        return self.kind == APP

    def __str__(self) -> str:
        return f"app key {self.key_id} of {self.app_id!r}" if self.kind == APP else f"the {self.kind} key"


def new_key() -> tuple[str, str]:
    """(key id, full key). The id is public (listed, logged); the rest is the secret."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_app_key(key: str) -> bool:
    return bool(KEY_PATTERN.fullmatch(key))


def same_key(key: str, expected: str) -> bool:
    """Constant-time comparison (digests first, so lengths leak nothing either)."""
    return bool(expected) and hmac.compare_digest(digest(key), digest(expected))


def key_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The key in ``authorization: Bearer <key>`` or ``x-api-key: <key>``; '' when absent."""
    for name, value in metadata or ():
        if isinstance(value, bytes):
            continue
        name = name.lower()
        if name == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == "x-api-key" and value.strip():
            return value.strip()
    return ""
