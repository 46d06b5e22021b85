"""Pure part of authentication: key format and digests, principals, the RPC policy, and
reading every app id a request names (including nested and batch messages).

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
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

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
#: Messages whose app id is not in a field called ``app_id``.
APP_ID_FIELDS = {"firstlight.v1.GetAppRequest": "id", "firstlight.v1.CreateAppRequest": "id"}


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


# -- what a request touches ---------------------------------------------------------------------


@cache
def _interesting(descriptor: Descriptor) -> bool:
    """Whether messages of this type can hold an app id or a repeated field (anywhere below)."""
    return _interesting_walk(descriptor, set())


def _interesting_walk(descriptor: Descriptor, seen: set[str]) -> bool:
    if descriptor.full_name in seen:
        return False
    seen.add(descriptor.full_name)
    if descriptor.full_name in APP_ID_FIELDS:
        return True
    for f in descriptor.fields:
        if f.name == "app_id" or f.label == FieldDescriptor.LABEL_REPEATED:
            return True
        if f.message_type is not None and _interesting_walk(f.message_type, seen):
            return True
    return False


def default_app(message: Message, app_id: str) -> None:
    """Scope an app key's request to its app where the request names none: an empty top-level
    app id field gets the key's app. Without this, an RPC that reads an empty ``app_id`` as
    "any app" (a job looked up by id alone) would let a key reach another app's data."""
    descriptor = message.DESCRIPTOR
    name = APP_ID_FIELDS.get(descriptor.full_name, "app_id")
    field = descriptor.fields_by_name.get(name)
    if field is not None and field.type == FieldDescriptor.TYPE_STRING and field.label != FieldDescriptor.LABEL_REPEATED and not getattr(message, name):
        setattr(message, name, app_id)


@dataclass
class RequestScope:
    """The app ids a request names and its largest repeated field."""

    app_ids: set[str]
    largest_field: str = ""
    largest_count: int = 0


def request_scope(message: Message) -> RequestScope:
    scope = RequestScope(set())
    _walk(message, "", scope)
    return scope


_APP_ID, _REPEATED, _MAP_OF_MESSAGES, _MESSAGES, _MESSAGE = range(5)


@cache
def _plan(descriptor: Descriptor) -> tuple[tuple[str, int], ...]:
    """The fields of a message type the walk must look at, and how (computed once per type)."""
    plan = []
    special = APP_ID_FIELDS.get(descriptor.full_name)
    for f in descriptor.fields:
        if f.name == special or (f.name == "app_id" and f.type == FieldDescriptor.TYPE_STRING):
            plan.append((f.name, _APP_ID))
        elif f.label == FieldDescriptor.LABEL_REPEATED:
            sub = f.message_type
            if sub is None:
                plan.append((f.name, _REPEATED))
            elif sub.GetOptions().map_entry:
                value = sub.fields_by_name["value"].message_type
                plan.append((f.name, _MAP_OF_MESSAGES if value is not None and _interesting(value) else _REPEATED))
            else:
                plan.append((f.name, _MESSAGES if _interesting(sub) else _REPEATED))
        elif f.message_type is not None and _interesting(f.message_type):
            plan.append((f.name, _MESSAGE))
    return tuple(plan)


def _walk(message: Message, path: str, scope: RequestScope) -> None:
    for name, kind in _plan(message.DESCRIPTOR):
        if kind == _APP_ID:
            value = getattr(message, name)
            if value:
                scope.app_ids.add(value)
        elif kind == _MESSAGE:
            if message.HasField(name):
                _walk(getattr(message, name), f"{path}.{name}" if path else name, scope)
        else:
            values = getattr(message, name)
            if len(values) > scope.largest_count:
                scope.largest_field, scope.largest_count = (f"{path}.{name}" if path else name), len(values)
            if kind == _MESSAGES:
                for item in values:
                    _walk(item, f"{path}.{name}" if path else name, scope)
            elif kind == _MAP_OF_MESSAGES:
                for item in values.values():
                    _walk(item, f"{path}.{name}" if path else name, scope)
