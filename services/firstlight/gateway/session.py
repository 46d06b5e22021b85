"""Portal sessions: stateless, so any gateway replica serves any session.

The cookie holds the API key the person signed in with, their app and a CSRF token, encrypted
and authenticated with AES-256-GCM under a key derived from FIRSTLIGHT_SESSION_SECRET, with an
expiry inside the authenticated payload. It is HttpOnly (scripts never see the key) and
SameSite=Lax (other sites' requests carry it only for top-level GET navigations), and Secure
behind TLS. State-changing requests that authenticate with the cookie must also send the
session's CSRF token (``X-CSRF-Token`` header, or a ``csrf`` form field), which pages carry in a
``<meta name="csrf-token">`` tag: a cross-site form or script cannot read it.

Signing out deletes the cookie; a copied cookie keeps working until it expires (a stateless
session cannot be revoked alone): revoking the API key ends every session made with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE = "fl_session"
CSRF_HEADER = "x-csrf-token"
_AAD = b"firstlight-session-v1"


@dataclass(frozen=True)
class Session:
    key: str
    app_id: str
    admin: bool
    csrf: str
    expires_at: float


class SessionCodec:
    def __init__(self, secret: str, ttl_s: int) -> None:
        if len(secret) < 32:
            raise ValueError("FIRSTLIGHT_SESSION_SECRET must be at least 32 characters")
        self._aead = AESGCM(hashlib.sha256(b"firstlight-session|" + secret.encode()).digest())
        self.ttl_s = ttl_s

    def new(self, key: str, app_id: str, admin: bool, now: float | None = None) -> Session:
        now = time.time() if now is None else now
        return Session(key, app_id, admin, secrets.token_urlsafe(24), now + self.ttl_s)

    def encode(self, s: Session) -> str:
        payload = json.dumps({"k": s.key, "a": s.app_id, "adm": s.admin, "c": s.csrf, "exp": s.expires_at}).encode()
        nonce = os.urandom(12)
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, payload, _AAD)).decode().rstrip("=")

    def decode(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in ``cookie``, or None if it is missing, forged, tampered with or expired."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            data = json.loads(self._aead.decrypt(raw[:12], raw[12:], _AAD))
            s = Session(str(data["k"]), str(data["a"]), bool(data["adm"]), str(data["c"]), float(data["exp"]))
        except (ValueError, InvalidTag, KeyError, TypeError):
            return None
        if s.expires_at <= (time.time() if now is None else now):
            return None
        return s


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode())
