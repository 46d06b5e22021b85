"""The auth core (``auth.core.ApiKeys``) with in-memory fakes of its ports: the key table
(``ports.KeyStorePort``) and the app directory; and the interceptor's remote resolver over
``firstlight.clients`` (a peer's status read through the one map)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from firstlight.hosting import keys
from firstlight.auth.core import ApiKeys
from firstlight.hosting.keys import Principal
from firstlight.auth.ports import KeyRow
from firstlight.errors import InvalidArgument, NotFound, Unavailable
from firstlight.hosting.auth import RemoteResolver


class MemoryKeys:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[KeyRow, str]] = {}

    def create(self, app_id: str, name: str = "") -> tuple[KeyRow, str]:
        key_id, key = keys.new_key()
        row = KeyRow(key_id, app_id, name, datetime.now(timezone.utc), None)
        self.rows[key_id] = (row, keys.digest(key))
        return row, key

    def list(self, app_id: str, include_revoked: bool = False) -> list[KeyRow]:
        return [r for r, _ in self.rows.values() if r.app_id == app_id and (include_revoked or r.revoked_at is None)]

    def revoke(self, app_id: str, key_id: str) -> tuple[KeyRow, str]:
        if key_id not in self.rows or self.rows[key_id][0].app_id != app_id:
            raise NotFound(f"API key {key_id!r} does not exist in app {app_id!r}")
        row, digest = self.rows[key_id]
        row.revoked_at = row.revoked_at or datetime.now(timezone.utc)
        return row, digest

    def resolve(self, key_digest: str) -> KeyRow | None:
        return next((r for r, d in self.rows.values() if d == key_digest and r.revoked_at is None), None)


def check_app(app_id: str) -> None:
    if app_id != "a":
        raise NotFound(f"app {app_id!r} does not exist")


def test_keys_are_made_for_existing_apps_resolved_and_revoked() -> None:
    forgotten: list[str] = []
    api = ApiKeys(MemoryKeys(), check_app, forgotten.append)
    row, secret = api.create("a", "ci")
    assert keys.looks_like_app_key(secret) and row.name == "ci"
    assert api.resolve(keys.digest(secret)).id == row.id
    assert asyncio.run(api.principal(keys.digest(secret))) == Principal(keys.APP, "a", row.id)
    assert [r.id for r in api.list("a")] == [row.id]
    api.revoke("a", row.id)
    assert forgotten == [keys.digest(secret)] and api.list("a") == [] and len(api.list("a", include_revoked=True)) == 1
    with pytest.raises(NotFound, match="unknown or revoked"):
        api.resolve(keys.digest(secret))
    assert asyncio.run(api.principal(keys.digest(secret))) is None


def test_bad_requests_are_refused_before_the_store() -> None:
    store = MemoryKeys()
    api = ApiKeys(store, check_app)
    with pytest.raises(NotFound, match="app 'b'"):
        api.create("b")
    with pytest.raises(InvalidArgument):
        api.create("A B")
    with pytest.raises(InvalidArgument, match="64 hex"):
        api.resolve("abc")
    with pytest.raises(NotFound):
        api.revoke("a", "nope")
    assert store.rows == {}


class FakeAuthClient:
    def __init__(self, outcome: object) -> None:
        self.outcome = outcome

    async def resolve_api_key(self, req):  # type: ignore[no-untyped-def]
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_remote_resolver_reads_the_peers_status_through_the_one_map() -> None:
    import grpc

    resolver = RemoteResolver("127.0.0.1:1")
    resolver._client = FakeAuthClient(NotFound("unknown or revoked API key"))  # type: ignore[assignment]
    assert asyncio.run(resolver("0" * 64)) is None
    down = Unavailable("connection refused")
    down.code = grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    resolver._client = FakeAuthClient(down)  # type: ignore[assignment]
    with pytest.raises(Unavailable, match="the ingestion service answered UNAVAILABLE"):
        asyncio.run(resolver("0" * 64))
