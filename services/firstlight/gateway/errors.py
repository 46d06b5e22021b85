"""The one table from gRPC status to HTTP status, and the JSON error body.

Every failure of a ``/v1`` route — a service's status, a request the gateway itself refuses, a
malformed body — answers ``{"error": {"code": <gRPC code name>, "status": <HTTP status>,
"message": <the service's message>}}``. RESOURCE_EXHAUSTED is a rate limit (429 with
``Retry-After``) when the service said when to retry (``retry-after-ms``), else a size or count
limit (413). UNAVAILABLE is 503 with ``Retry-After: 1`` (the call may be retried)."""

from __future__ import annotations

import logging
import math
import uuid

import grpc
from starlette.responses import JSONResponse

from firstlight import errors
from firstlight.clients.errors import code_of

log = logging.getLogger(__name__)

C = grpc.StatusCode
#: gRPC status → HTTP status.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    C.OK: 200,
    C.INVALID_ARGUMENT: 400,
    C.OUT_OF_RANGE: 400,
    C.UNAUTHENTICATED: 401,
    C.PERMISSION_DENIED: 403,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.ABORTED: 409,
    # Well-formed, but the resource's state forbids it (RFC 9110 §15.5.10), e.g. cancelling a
    # job that ended or training on a concept with no labels.
    C.FAILED_PRECONDITION: 409,
    C.RESOURCE_EXHAUSTED: 413,  # 429 when the service gives retry-after-ms (rate limit)
    C.CANCELLED: 499,
    C.UNAVAILABLE: 503,
    C.DEADLINE_EXCEEDED: 504,
    C.UNIMPLEMENTED: 501,
    C.INTERNAL: 500,
    C.UNKNOWN: 500,
    C.DATA_LOSS: 500,
}


def http_status(code: grpc.StatusCode, retry_after_s: float | None = None) -> int:
    if code == C.RESOURCE_EXHAUSTED and retry_after_s is not None:
        return 429
    return HTTP_STATUS.get(code, 500)


def error_body(code: grpc.StatusCode, status: int, message: str) -> dict:
    return {"error": {"code": code.name, "status": status, "message": message}}


def error_response(exc: BaseException) -> JSONResponse:
    """The HTTP answer for an exception raised while serving a request."""
    if isinstance(exc, errors.FirstlightError):
        code = code_of(exc)
        message = getattr(exc, "message", None) or str(exc)
        retry_after = getattr(exc, "retry_after_s", None)
    else:
        incident = uuid.uuid4().hex[:12]
        log.error("internal error %s", incident, exc_info=exc)
        code, message, retry_after = C.INTERNAL, f"internal error (incident {incident}); see the gateway log", None
    status = http_status(code, retry_after)
    headers: dict[str, str] = {}
    if status == 429:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after or 1)))
    elif status == 503:
        headers["Retry-After"] = "1"
    elif status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="firstlight"'
    return JSONResponse(error_body(code, status, message), status_code=status, headers=headers)
