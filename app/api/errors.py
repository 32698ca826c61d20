"""Every error the service returns, in one place: exception class -> HTTP status + JSON body.

Body: ``{"error": {"code": "<short code>", "message": "<what was wrong and what is allowed>"}}``.
FastAPI's own errors (validation 422, unknown route 404, wrong method 405)
get the same shape.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import (
    AuthenticationError,
    ClientGoneError,
    ConflictError,
    NotAcceptableError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    QueueFullError,
)
from model.errors import (
    BankFormatError,
    CancelledError,
    CinstyleError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    InvalidStyleWeightsError,
    UnknownStyleError,
    UnsupportedMediaTypeError,
)

log = logging.getLogger(__name__)

STATUS: dict[type[CinstyleError], int] = {
    InvalidImageError: 400,
    AuthenticationError: 401,
    NotFoundError: 404,
    NotAcceptableError: 406,
    ConflictError: 409,
    CancelledError: 409,
    ImageTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    UnknownStyleError: 422,
    InvalidStyleWeightsError: 422,
    InvalidParameterError: 422,
    QueueFullError: 429,
    ClientGoneError: 499,
    BankFormatError: 500,
    NotReadyError: 503,
    OverloadedError: 503,
}

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "invalid_parameter", 429: "too_many_requests", 500: "internal_error", 503: "not_ready"}


def status_of(exc: CinstyleError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def _cinstyle_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CinstyleError)
    status = status_of(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, OverloadedError | QueueFullError):
        headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, NotReadyError):
        headers["Retry-After"] = "5"
    elif isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="cinstyle"'
    if status >= 500:
        log.error("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return error_response(status, exc.code, str(exc), headers)


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body",)) or "request"
    message = error.get("msg", "invalid value")
    if error.get("type") == "missing":
        return f"{location}: required"
    if "input" in error and not isinstance(error["input"], dict | list | bytes):
        return f"{location}: {message} (got {error['input']!r})"
    return f"{location}: {message}"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message = "; ".join(_describe(error) for error in exc.errors()) or "invalid request"
    return error_response(422, "invalid_parameter", message)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404 and exc.detail in (None, "Not Found"):
        message = f"no such endpoint: {request.method} {request.url.path}; the API is described at /docs"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        message = f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
    else:
        message = str(exc.detail)
    return error_response(status, _HTTP_CODES.get(status, "error"), message, dict(exc.headers or {}) or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred on the server; it was logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CinstyleError, _cinstyle_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
