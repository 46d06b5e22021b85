"""Pure parts of authentication: key format, metadata parsing, the app ids a request names
(nested and batch messages included), the token bucket, the key cache, the key table."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine

from firstlight.auth.core import SubmissionGate
from firstlight.auth.store import ApiKeyStore
from firstlight.errors import NotFound, Unavailable
from firstlight.hosting import keys
from firstlight.hosting.auth import Authenticator, RateLimiter
from firstlight.hosting.keys import Principal
from firstlight.v1 import auth_pb2, common_pb2, embedding_pb2, inference_pb2, ingestion_pb2, search_pb2, training_pb2

ADMIN, INTERNAL = "admin-secret-0123456789", "internal-secret-0123456789"


def test_new_keys_are_unique_and_well_formed() -> None:
    made = {keys.new_key()[1] for _ in range(200)}
    assert len(made) == 200
    for key in made:
        assert keys.looks_like_app_key(key)
        assert len(keys.digest(key)) == 64
    assert not keys.looks_like_app_key("flk_short_secret")
    assert not keys.looks_like_app_key(ADMIN)


def test_key_from_metadata() -> None:
    assert keys.key_from_metadata([("authorization", "Bearer abc")]) == "abc"
    assert keys.key_from_metadata([("Authorization", "bearer  abc ")]) == "abc"
    assert keys.key_from_metadata([("x-api-key", "xyz")]) == "xyz"
    assert keys.key_from_metadata([("authorization", "Basic abc")]) == ""
    assert keys.key_from_metadata([("authorization", "Bearer ")]) == ""
    assert keys.key_from_metadata(None) == ""


@pytest.mark.parametrize(
    ("message", "apps"),
    [
        (ingestion_pb2.GetInputRequest(app_id="a", input_id="x"), {"a"}),
        (ingestion_pb2.GetAppRequest(id="b"), {"b"}),
        (ingestion_pb2.CreateAppRequest(id="c"), {"c"}),
        (search_pb2.SearchByTextRequest(app_id="a", text="cat"), {"a"}),
        (inference_pb2.PredictRequest(model_id="general"), set()),
        (training_pb2.TrainModelRequest(app_id="a", model_id="m"), {"a"}),
        (auth_pb2.CreateApiKeyRequest(app_id="z"), {"z"}),
    ],
)
def test_request_scope_finds_every_app(message, apps) -> None:  # type: ignore[no-untyped-def]
    assert keys.request_scope(message).app_ids == apps


def test_request_scope_walks_repeated_and_nested_messages() -> None:
    # No request nests app ids yet; these messages have the shapes a batch request would
    # (a nested message, a repeated one), so the walk is ready for them.
    nested = training_pb2.ListModelVersionsResponse(model=training_pb2.Model(app_id="b"))
    assert keys.request_scope(nested).app_ids == {"b"}
    batch = ingestion_pb2.ListInputsResponse(inputs=[common_pb2.Input(app_id=a) for a in ("a", "c", "a")])
    scope = keys.request_scope(batch)
    assert scope.app_ids == {"a", "c"} and (scope.largest_field, scope.largest_count) == ("inputs", 3)
    keyed = auth_pb2.ListApiKeysResponse(keys=[auth_pb2.ApiKey(app_id="d")])
    assert keys.request_scope(keyed).app_ids == {"d"}
    post = ingestion_pb2.PostInputsRequest(app_id="a", inputs=[common_pb2.InputSpec(concepts=["x"] * 3) for _ in range(5)])
    scope = keys.request_scope(post)
    assert scope.app_ids == {"a"}
    assert (scope.largest_field, scope.largest_count) == ("inputs", 5)
    meta = common_pb2.InputSpec(metadata={str(i): "v" for i in range(7)})
    assert keys.request_scope(meta).largest_count == 7  # maps count too


def test_app_key_requests_without_an_app_get_the_keys_app() -> None:
    job = training_pb2.GetTrainingJobRequest(job_id="j")  # empty app_id must not mean "any app"
    keys.default_app(job, "a")
    assert job.app_id == "a"
    named = training_pb2.GetTrainingJobRequest(app_id="b", job_id="j")
    keys.default_app(named, "a")
    assert named.app_id == "b"  # left as is: the check then refuses it
    get = ingestion_pb2.GetAppRequest()
    keys.default_app(get, "a")
    assert get.id == "a"
    texts = embedding_pb2.EmbedTextsRequest(texts=["x"])
    keys.default_app(texts, "a")  # no app field: nothing to do
    assert list(texts.texts) == ["x"]


def test_principal_reach() -> None:
    assert Principal(keys.ADMIN).may_reach("any")
    assert Principal(keys.INTERNAL).may_reach("any")
    assert Principal(keys.APP, "a", "k").may_reach("a")
    assert not Principal(keys.APP, "a", "k").may_reach("b")
    assert Principal(keys.APP, "a", "k").rate_limited and not Principal(keys.ADMIN).rate_limited


def test_token_bucket() -> None:
    limiter = RateLimiter(rate=10.0, burst=3)
    assert [limiter.take("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k", now=0.0)
    assert wait == pytest.approx(0.1)
    assert limiter.take("other", now=0.0) == 0.0  # buckets are per key
    assert limiter.take("k", now=0.1) == 0.0  # one token back after 1/rate seconds
    assert limiter.take("k", now=0.1) > 0
    assert RateLimiter(rate=0, burst=1).take("k") == 0.0  # 0 disables


def test_key_store_and_authenticator(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = ApiKeyStore(create_engine(f"sqlite:///{tmp_path / 'k.db'}"))
    row, key = store.create("a", "camera")
    assert store.resolve(keys.digest(key)).app_id == "a"  # type: ignore[union-attr]
    assert key not in (tmp_path / "k.db").read_bytes().decode("latin-1")  # only the digest is stored
    calls: list[str] = []
    down = False

    async def resolve(d: str) -> Principal | None:
        calls.append(d)
        if down:
            raise Unavailable("ingestion down")
        r = store.resolve(d)
        return Principal(keys.APP, r.app_id, r.id) if r else None

    auth = Authenticator(ADMIN, INTERNAL, resolve, cache_s=60)

    async def scenario() -> None:
        nonlocal down
        assert (await auth.authenticate(ADMIN)).kind == keys.ADMIN  # type: ignore[union-attr]
        assert (await auth.authenticate(INTERNAL)).kind == keys.INTERNAL  # type: ignore[union-attr]
        assert await auth.authenticate("") is None
        assert await auth.authenticate("nonsense") is None and not calls  # no lookup for malformed keys
        p = await auth.authenticate(key)
        assert p == Principal(keys.APP, "a", row.id)
        await auth.authenticate(key)
        assert len(calls) == 1  # cached
        store.revoke("a", row.id)
        assert await auth.authenticate(key) == p  # still cached (other services: up to auth_cache_s)
        auth.forget(keys.digest(key))
        assert await auth.authenticate(key) is None  # the owning service forgets at once
        _, other = store.create("b")
        assert (await auth.authenticate(other)).app_id == "b"  # type: ignore[union-attr]
        down = True
        auth._cache = {k: (v[0], 0.0) for k, v in auth._cache.items()}  # everything expired
        assert (await auth.authenticate(other)).app_id == "b"  # type: ignore[union-attr]  # stale beats down
        with pytest.raises(Unavailable):
            await auth.authenticate(keys.new_key()[1])  # unknown and nothing cached: cannot tell

    asyncio.run(scenario())
    with pytest.raises(NotFound):
        store.revoke("b", row.id)  # a key id of another app
    assert [k.id for k in store.list("a", include_revoked=True)] == [row.id] and store.list("a") == []


def test_authenticator_needs_distinct_keys() -> None:
    async def resolve(d: str) -> None:
        return None

    with pytest.raises(ValueError):
        Authenticator("", INTERNAL, resolve)
    with pytest.raises(ValueError):
        Authenticator(ADMIN, ADMIN, resolve)


def test_submission_gate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = ApiKeyStore(create_engine(f"sqlite:///{tmp_path / 'k.db'}"))
    _, key_a = store.create("a")
    gate = SubmissionGate(ADMIN, INTERNAL, store)
    assert gate.refusal({"authorization": f"Bearer {key_a}"}, "a") is None
    assert gate.refusal({"authorization": f"Bearer {ADMIN}"}, "b") is None
    assert gate.refusal({}, "a").startswith("Unauthenticated")  # type: ignore[union-attr]
    assert gate.refusal({"x-api-key": "flk_junk"}, "a").startswith("Unauthenticated")  # type: ignore[union-attr]
    assert gate.refusal({"authorization": f"Bearer {key_a}"}, "b").startswith("PermissionDenied")  # type: ignore[union-attr]
