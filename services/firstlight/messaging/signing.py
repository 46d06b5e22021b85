"""Signed internal events (docs/security.md, "Events"): an HMAC-SHA256 over each record with a
key only the services hold, checked by every consumer of an internal topic before its handler
sees the record. Pure: no Kafka here (the bus signs and verifies with it).

What is signed: the topic, the record key ("<app>/<input>"), the message type, a timestamp and
a digest of the value (which names the app, the ids and the revision or version it changes).
A signed record therefore cannot be altered, moved to another topic or key, or forged without
the key; a record replayed later than the freshness window is refused, and consumers that keep
state (the inference registry) ignore replays older than what they applied.

Keys: ``FIRSTLIGHT_EVENT_KEYS`` = "<id>:<secret>[,<id>:<secret>…]". The first key signs; every
listed key verifies, so a rotation is: add the new key second everywhere, then first everywhere,
then drop the old one — no record is refused at any step.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

from firstlight.domain.validation import WHOLE_NUMBER

#: Record header carrying the signature: "v1;<key id>;<unix ms>;<hex HMAC-SHA256>".
H_SIGNATURE = "fl-signature"
KEYS_ENV = "FIRSTLIGHT_EVENT_KEYS"
MAX_AGE_ENV = "FIRSTLIGHT_EVENT_MAX_AGE_S"
#: How old a record may be when consumed (the topics' default retention); 0 disables the check.
DEFAULT_MAX_AGE_S = 7 * 24 * 3600
#: How far in the future a timestamp may be (clock skew between hosts).
MAX_SKEW_S = 300
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}", re.ASCII)


@dataclass(frozen=True)
class EventKeys:
    """The services' event keys: ``keys[0]`` signs, all of them verify."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, spec: str) -> EventKeys:
        keys = []
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            key_id, sep, secret = item.partition(":")
            if not sep or not _KEY_ID.fullmatch(key_id) or len(secret) < 16:
                raise ValueError(f"{KEYS_ENV}: each key is '<id>:<secret>' (id 1-32 of [A-Za-z0-9_-], secret >= 16 characters)")
            keys.append((key_id, secret.encode()))
        if not keys:
            raise ValueError(f"{KEYS_ENV} names no key")
        if len({k for k, _ in keys}) != len(keys):
            raise ValueError(f"{KEYS_ENV}: key ids must be distinct")
        return cls(tuple(keys))

    @classmethod
    def from_env(cls) -> EventKeys | None:
        spec = os.environ.get(KEYS_ENV, "")
        return cls.parse(spec) if spec.strip() else None

    @property
    def signing_id(self) -> str:
        return self.keys[0][0]


def max_age_from_env() -> float:
    value = os.environ.get(MAX_AGE_ENV, "")
    return float(value) if value.strip() else float(DEFAULT_MAX_AGE_S)


def _mac(secret: bytes, topic: str, key: bytes, message_type: str, ts_ms: int, value: bytes) -> str:
    body = b"\0".join([b"firstlight-event-v1", topic.encode(), key, message_type.encode(), str(ts_ms).encode(), hashlib.sha256(value).digest()])
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def sign(keys: EventKeys, topic: str, key: bytes | None, message_type: str, value: bytes, now_ms: int | None = None) -> str:
    """The signature header value for one record."""
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    key_id, secret = keys.keys[0]
    return f"v1;{key_id};{ts};{_mac(secret, topic, key or b'', message_type, ts, value)}"


@dataclass(frozen=True)
class Verified:
    key_id: str
    timestamp_ms: int


class BadSignature(Exception):
    """Why a record is refused (the dead letter's reason)."""


def verify(
    keys: EventKeys,
    topic: str,
    key: bytes | None,
    message_type: str,
    value: bytes,
    header: str | None,
    *,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    now_ms: int | None = None,
) -> Verified:
    """Check a record's signature header; raises BadSignature with the reason."""
    if not header:
        raise BadSignature(f"unsigned record: internal topics take only records signed with the services' event key ({H_SIGNATURE} header)")
    parts = header.split(";")
    if len(parts) != 4 or parts[0] != "v1" or not WHOLE_NUMBER.fullmatch(parts[2]) or not re.fullmatch(r"[0-9a-f]{64}", parts[3]):
        raise BadSignature(f"malformed {H_SIGNATURE} header")
    key_id, ts, mac = parts[1], int(parts[2]), parts[3]
    secret = dict(keys.keys).get(key_id)
    if secret is None:
        raise BadSignature(f"signed with unknown event key {key_id[:32]!r}")
    if not hmac.compare_digest(mac, _mac(secret, topic, key or b"", message_type, ts, value)):
        raise BadSignature("forged or altered record: its signature does not match")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if ts > now + MAX_SKEW_S * 1000:
        raise BadSignature(f"signed {(ts - now) / 1000:.0f} s in the future")
    if max_age_s and ts < now - max_age_s * 1000:
        raise BadSignature(f"replayed or stale record: signed {(now - ts) / 1000:.0f} s ago, more than {max_age_s:.0f} s")
    return Verified(key_id, ts)


def signed_at_ms(headers: dict[str, str]) -> int:
    """When a (verified) record was signed, from its headers; 0 when unsigned."""
    parts = headers.get(H_SIGNATURE, "").split(";")
    return int(parts[2]) if len(parts) == 4 and WHOLE_NUMBER.fullmatch(parts[2]) else 0
