"""The one server interceptor that authenticates and limits every RPC of every service.

For each call (health and reflection excepted) it reads the key from the metadata and:
  1. UNAUTHENTICATED without a key, or with one that is unknown or revoked;
  2. PERMISSION_DENIED for admin-only RPCs (CreateApp, API keys) unless it is the admin key;
  3. RESOURCE_EXHAUSTED when the key's token bucket is empty (``retry-after-ms`` in the
     trailing metadata and the message says when to retry);
  4. PERMISSION_DENIED when the request names an app (``app_id`` anywhere in the message, nested
     and batch messages included; every message of a client stream) other than the key's; an
     app key's request that names no app is scoped to the key's app;
  5. RESOURCE_EXHAUSTED when a repeated field of an app key's request is over
     FIRSTLIGHT_MAX_REPEATED_ITEMS.
The admin and internal keys are compared locally; app keys are resolved by digest — in the
ingestion process from its own store, elsewhere by AuthService.ResolveApiKey — and cached for
FIRSTLIGHT_AUTH_CACHE_S (a cached key keeps working if the ingestion service is briefly down)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from firstlight.clients import AuthClient, internal_client
from firstlight.config import SecuritySettings
from firstlight.errors import FirstlightError, NotFound, Unavailable
from firstlight.hosting import keys
from firstlight.hosting.keys import Principal
from firstlight.messaging.signing import EventKeys
from firstlight.v1 import auth_pb2

log = logging.getLogger(__name__)

#: Looks up an app key by digest: its principal, or None if unknown/revoked; Unavailable if it cannot tell.
Resolver = Callable[[str], Awaitable[Principal | None]]

_NEGATIVE_CACHE_S = 1.0  # repeated bad keys cost one lookup a second, and a new key works at once
_MAX_CACHE = 10_000
_MAX_BUCKETS = 10_000  # rate-limit buckets before the refilled ones are dropped


class Authenticator:
    def __init__(self, admin_key: str, internal_key: str, resolve: Resolver, cache_s: float = 10.0) -> None:
        if not admin_key or not internal_key:
            raise ValueError("authentication needs both FIRSTLIGHT_ADMIN_KEY and FIRSTLIGHT_INTERNAL_KEY")
        if admin_key == internal_key:
            raise ValueError("FIRSTLIGHT_ADMIN_KEY and FIRSTLIGHT_INTERNAL_KEY must differ")
        self.admin_key = admin_key
        self.internal_key = internal_key
        self.resolve = resolve
        self.cache_s = cache_s
        self._cache: dict[str, tuple[Principal | None, float]] = {}

    def forget(self, key_digest: str) -> None:
        """Drop a cached key at once (the ingestion service calls this when it revokes one)."""
        self._cache.pop(key_digest, None)

    async def authenticate(self, key: str) -> Principal | None:
        if not key:
            return None
        if keys.same_key(key, self.admin_key):
            return Principal(keys.ADMIN)
        if keys.same_key(key, self.internal_key):
            return Principal(keys.INTERNAL)
        if not keys.looks_like_app_key(key):
            return None
        d = keys.digest(key)
        now = time.monotonic()
        cached = self._cache.get(d)
        if cached and cached[1] > now:
            return cached[0]
        try:
            principal = await self.resolve(d)
        except Unavailable:
            if cached and cached[0] is not None:  # stale beats down: the key was valid moments ago
                log.warning("key authority unavailable; using the cached answer for key %s", cached[0].key_id)
                return cached[0]
            raise
        if len(self._cache) >= _MAX_CACHE:
            self._cache.clear()
        self._cache[d] = (principal, now + (self.cache_s if principal else _NEGATIVE_CACHE_S))
        return principal


class RemoteResolver:
    """Resolves app keys through AuthService.ResolveApiKey on the ingestion service (a
    ``firstlight.clients`` AuthClient: sent once, 5 s deadline, see ``clients.policy``)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client = internal_client(AuthClient, address)

    async def __call__(self, key_digest: str) -> Principal | None:
        try:
            resp = await self._client.resolve_api_key(auth_pb2.ResolveApiKeyRequest(key_sha256=key_digest))
        except NotFound:
            return None
        except FirstlightError as exc:
            code = getattr(exc, "code", None)
            answered = getattr(code, "name", type(exc).__name__)
            raise Unavailable(f"cannot check the API key: the ingestion service answered {answered}") from None
        return Principal(keys.APP, resp.app_id, resp.key_id)


class RateLimiter:
    """Token bucket per key: ``rate`` requests per second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key_id: str, now: float | None = None) -> float:
        """0 if the request may go now, else the seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if key_id not in self._buckets and len(self._buckets) >= _MAX_BUCKETS:
            self._forget_full(now)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: they are what a new bucket is, so nothing changes
        for their keys (one bucket per key that ever called would otherwise stay forever)."""
        refill_s = self.burst / self.rate
        self._buckets = {k: (t, last) for k, (t, last) in self._buckets.items() if now - last < refill_s}


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authenticator: Authenticator, settings: SecuritySettings) -> None:
        self.authenticator = authenticator
        self.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.max_items = settings.max_repeated_items

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(keys.OPEN_METHOD_PREFIXES):
            return handler
        key = keys.key_from_metadata(details.invocation_metadata)
        try:
            principal = await self.authenticator.authenticate(key)
        except Unavailable as exc:
            return _refuse(handler, grpc.StatusCode.UNAVAILABLE, str(exc))
        if principal is None:
            why = "no API key: send `authorization: Bearer <key>`" if not key else "invalid or revoked API key"
            return _refuse(handler, grpc.StatusCode.UNAUTHENTICATED, why)
        if method in keys.ADMIN_METHODS and principal.kind != keys.ADMIN:
            return _refuse(handler, grpc.StatusCode.PERMISSION_DENIED, f"{method.rsplit('/', 1)[-1]} needs the admin key")
        if method in keys.INTERNAL_METHODS and principal.kind == keys.APP:
            return _refuse(handler, grpc.StatusCode.PERMISSION_DENIED, f"{method.rsplit('/', 1)[-1]} is for the services only")
        if principal.rate_limited:
            wait = self.limiter.take(principal.key_id)
            if wait > 0:
                ms = max(1, math.ceil(wait * 1000))
                return _refuse(
                    handler,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit of API key {principal.key_id} exceeded ({self.limiter.rate:g}/s, burst {self.limiter.burst:g}); retry in {ms} ms",
                    (("retry-after-ms", str(ms)),),
                )
        return _checked(handler, principal, self.max_items)


def _check(principal: Principal, request: Any, max_items: int) -> tuple[grpc.StatusCode, str] | None:
    if principal.kind == keys.APP:
        keys.default_app(request, principal.app_id)
    scope = keys.request_scope(request)
    for app_id in sorted(scope.app_ids):
        if not principal.may_reach(app_id):
            return grpc.StatusCode.PERMISSION_DENIED, f"{principal} cannot reach app {app_id!r}"
    if principal.kind == keys.APP and scope.largest_count > max_items:
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{scope.largest_count} items in {scope.largest_field}, over the limit of {max_items} (FIRSTLIGHT_MAX_REPEATED_ITEMS)",
        )
    return None


def _refuse(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str, trailing: tuple = ()) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails with ``code``."""

    async def abort(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message, trailing_metadata=trailing)

    async def abort_stream(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message, trailing_metadata=trailing)
        yield  # pragma: no cover - abort raised

    return _same_shape(handler, abort, abort_stream)


#: Who is calling, for servicers that show services more than clients (set per call by the
#: interceptor; None when authentication is off).
CURRENT_PRINCIPAL: ContextVar[Principal | None] = ContextVar("firstlight_principal", default=None)


def caller_is_service() -> bool:
    """Whether the current call comes from another Firstlight service (the internal key), or
    authentication is off: such callers may see server-side details (a blob's file URI)."""
    principal = CURRENT_PRINCIPAL.get()
    return principal is None or principal.kind == keys.INTERNAL


def _checked(handler: grpc.RpcMethodHandler, principal: Principal, max_items: int) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        CURRENT_PRINCIPAL.set(principal)
        if handler.request_streaming:  # every message is checked as the servicer reads it
            return await handler.stream_unary(_checked_stream(request, context, principal, max_items), context)
        refused = _check(principal, request, max_items)
        if refused:
            await context.abort(*refused)
        return await handler.unary_unary(request, context)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        CURRENT_PRINCIPAL.set(principal)
        behavior = handler.unary_stream or handler.stream_stream
        if handler.request_streaming:
            request = _checked_stream(request, context, principal, max_items)
        else:
            refused = _check(principal, request, max_items)
            if refused:
                await context.abort(*refused)
        result = behavior(request, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        else:  # a coroutine that writes with context.write
            await result

    return _same_shape(handler, unary, streaming)


async def _checked_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext, principal: Principal, max_items: int) -> AsyncIterator[Any]:
    async for request in requests:
        refused = _check(principal, request, max_items)
        if refused:
            await context.abort(*refused)
        yield request


def _same_shape(handler: grpc.RpcMethodHandler, unary: Callable[..., Any], streaming: Callable[..., Any]) -> grpc.RpcMethodHandler:
    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kw)
    return grpc.unary_unary_rpc_method_handler(unary, **kw)


def build_interceptor(settings: SecuritySettings, authenticator: Authenticator | None, service: str) -> AuthInterceptor | None:
    """The interceptor for a service, or None when FIRSTLIGHT_AUTH_REQUIRED is off. Fails fast
    (at start-up, naming the variable) when authentication is on but not configured."""
    if not settings.auth_required:
        log.warning("%s: FIRSTLIGHT_AUTH_REQUIRED is off: every caller reaches every app", service)
        return None
    if authenticator is None:
        if not settings.ingestion_addr:
            raise RuntimeError(f"{service}: FIRSTLIGHT_INGESTION_ADDR is needed to check app API keys")
        authenticator = make_authenticator(settings, RemoteResolver(settings.ingestion_addr))
    return AuthInterceptor(authenticator, settings)


def make_authenticator(settings: SecuritySettings, resolve: Resolver) -> Authenticator:
    admin, internal = settings.admin_key.get_secret_value(), settings.internal_key.get_secret_value()
    events = settings.event_keys.get_secret_value()  # checked here: every service starts through this
    if not admin or not internal or not events:
        named = (("FIRSTLIGHT_ADMIN_KEY", admin), ("FIRSTLIGHT_INTERNAL_KEY", internal), ("FIRSTLIGHT_EVENT_KEYS", events))
        missing = [n for n, v in named if not v]
        raise RuntimeError(
            f"authentication is on (FIRSTLIGHT_AUTH_REQUIRED) but {' and '.join(missing)} is not set; "
            "set them from a Secret, or FIRSTLIGHT_AUTH_REQUIRED=false for a throwaway development server"
        )
    try:
        EventKeys.parse(events)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None
    return Authenticator(admin, internal, resolve, settings.auth_cache_s)
