"""The gateway's one gRPC-status → HTTP table, the clients' status → domain-error map, and the
session cookie (encrypted, authenticated, expiring) — pure, no servers."""

from __future__ import annotations

import grpc
import pytest

from firstlight import errors
from firstlight.clients.errors import ERROR_BY_STATUS, RpcError, code_of, from_rpc_error
from firstlight.gateway.errors import HTTP_STATUS, error_response, http_status
from firstlight.gateway.session import SessionCodec, csrf_ok
from firstlight.runtime.status import STATUS_BY_ERROR

C = grpc.StatusCode


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailing


@pytest.mark.parametrize(
    "code,status",
    [
        (C.INVALID_ARGUMENT, 400),
        (C.OUT_OF_RANGE, 400),
        (C.UNAUTHENTICATED, 401),
        (C.PERMISSION_DENIED, 403),
        (C.NOT_FOUND, 404),
        (C.ALREADY_EXISTS, 409),
        (C.FAILED_PRECONDITION, 409),
        (C.ABORTED, 409),
        (C.RESOURCE_EXHAUSTED, 413),
        (C.UNAVAILABLE, 503),
        (C.DEADLINE_EXCEEDED, 504),
        (C.UNIMPLEMENTED, 501),
        (C.INTERNAL, 500),
        (C.UNKNOWN, 500),
    ],
)
def test_status_table(code: grpc.StatusCode, status: int) -> None:
    assert http_status(code) == status


def test_every_grpc_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


def test_rate_limit_is_429_with_retry_after_size_limit_is_413() -> None:
    limited = from_rpc_error(FakeRpcError(C.RESOURCE_EXHAUSTED, "rate limit of API key k exceeded; retry in 1500 ms", (("retry-after-ms", "1500"),)))
    assert isinstance(limited, errors.ResourceExhausted) and limited.retry_after_s == 1.5  # type: ignore[attr-defined]
    resp = error_response(limited)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "2"
    too_big = error_response(from_rpc_error(FakeRpcError(C.RESOURCE_EXHAUSTED, "image is 3.0 MiB, over the limit")))
    assert too_big.status_code == 413 and "retry-after" not in too_big.headers


def test_error_body_carries_the_grpc_code_and_message() -> None:
    resp = error_response(from_rpc_error(FakeRpcError(C.NOT_FOUND, "input 'x' not found in app 'a'")))
    assert resp.status_code == 404
    assert resp.body == b'{"error":{"code":"NOT_FOUND","status":404,"message":"input \'x\' not found in app \'a\'"}}'
    assert error_response(from_rpc_error(FakeRpcError(C.UNAVAILABLE, "down"))).headers["retry-after"] == "1"
    assert error_response(from_rpc_error(FakeRpcError(C.UNAUTHENTICATED, "no key"))).headers["www-authenticate"].startswith("Bearer")


def test_unexpected_errors_are_500_without_details() -> None:
    resp = error_response(RuntimeError("secret path /etc/x"))
    assert resp.status_code == 500 and b"/etc/x" not in resp.body and b"incident" in resp.body


def test_client_error_map_is_the_inverse_of_the_servers() -> None:
    for error_type, code in STATUS_BY_ERROR.items():
        assert ERROR_BY_STATUS[code] is error_type
        exc = from_rpc_error(FakeRpcError(code, "m"))
        assert type(exc) is error_type and code_of(exc) == code and str(exc) == "m"
    other = from_rpc_error(FakeRpcError(C.DEADLINE_EXCEEDED, "late"))
    assert isinstance(other, RpcError) and code_of(other) == C.DEADLINE_EXCEEDED
    assert code_of(errors.NotFound("x")) == C.NOT_FOUND  # a domain error raised locally


def test_session_cookie_round_trip_tamper_and_expiry() -> None:
    codec = SessionCodec("s" * 40, ttl_s=3600)
    s = codec.new("flk_key", "pets", False, now=1000.0)
    cookie = codec.encode(s)
    assert "flk_key" not in cookie and "pets" not in cookie  # encrypted, not just signed
    assert codec.decode(cookie, now=1001.0) == s
    assert codec.decode(cookie, now=1000.0 + 3600) is None  # expired
    flipped = cookie[:-2] + ("A" if cookie[-2] != "A" else "B") + cookie[-1]
    assert codec.decode(flipped, now=1001.0) is None  # tampered
    assert SessionCodec("t" * 40, ttl_s=3600).decode(cookie, now=1001.0) is None  # another secret
    assert codec.decode("garbage", now=1001.0) is None and codec.decode(None) is None
    assert csrf_ok(s, s.csrf) and not csrf_ok(s, "") and not csrf_ok(s, s.csrf + "x")
    with pytest.raises(ValueError):
        SessionCodec("short", 60)
