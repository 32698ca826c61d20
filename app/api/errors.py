"""Every error the service returns, in one place: exception class -> HTTP status + JSON body.

Body: ``{"error": {"code": "<short code>", "message": "<what was wrong and what is allowed>"}}``.
FastAPI's own errors (validation 422, unknown route 404, wrong method 405)
get the same shape. A parameter's rule lives on its declaration (pattern, range,
enum), so a validation error is described from that declaration; a few
parameters answer another status than 422 (`PARAMETER_ERRORS`).
"""

import logging
import re
from typing import Any

import annotated_types
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic.fields import FieldInfo
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

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "too_many_requests",
    500: "internal_error",
    503: "not_ready",
}


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
        # Not ready yet or overloaded is the service answering as designed (with Retry-After): a warning,
        # so a readiness probe during start-up does not fill the log with errors.
        level = logging.WARNING if "Retry-After" in headers else logging.ERROR
        log.log(level, "%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return error_response(status, exc.code, str(exc), headers)


# Parameters whose invalid values mean something more specific than "bad parameter":
# (location, name) -> (status, code).
PARAMETER_ERRORS: dict[tuple[str, str], tuple[int, str]] = {
    ("query", "format"): (415, "unsupported_media_type"),  # an output format we do not produce
    ("query", "style"): (422, "invalid_style_weights"),  # not a name:weight,... list
    ("path", "job_id"): (404, "not_found"),  # an id that cannot exist is as unknown as one that expired
}


def _parameters(dependant: Dependant) -> dict[tuple[str, str], FieldInfo]:
    """Every declared parameter of a route, sub-dependencies included, by (location, name)."""
    found: dict[tuple[str, str], FieldInfo] = {}
    for location, fields in (
        ("path", dependant.path_params),
        ("query", dependant.query_params),
        ("header", dependant.header_params),
        ("cookie", dependant.cookie_params),
        ("body", dependant.body_params),
    ):
        for field in fields:
            found[(location, field.alias)] = field.field_info
    for sub in dependant.dependencies:
        found.update(_parameters(sub))
    return found


def _bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = item.ge if isinstance(item, annotated_types.Ge) else item.gt
        elif isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = item.le if isinstance(item, annotated_types.Le) else item.lt
    return low, high


def _describe(error: dict[str, Any], declared: FieldInfo | None) -> str:
    location = (
        ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")) or "request"
    )
    message = error.get("msg", "invalid value")
    kind = error.get("type", "")
    got = error.get("input")
    if kind == "missing":
        return f"{location}: required"
    if declared is not None and kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low, high = _bounds(declared)
        if low is not None and high is not None:
            return f"{location} must be between {low:g} and {high:g}, got {got}"
    if declared is not None and kind == "string_pattern_mismatch" and declared.description:
        return f"{location}: {got!r} is not valid: {declared.description}"
    if got is not None and not isinstance(got, dict | list | bytes):
        return f"{location}: {message} (got {got!r})"
    return f"{location}: {message}"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    content_type = request.headers.get("content-type", "")
    body_fields = sorted({str(e["loc"][1]) for e in errors if len(e.get("loc", ())) > 1 and e["loc"][0] == "body"})
    if body_fields and not content_type.lower().startswith("multipart/form-data"):
        return error_response(
            415,
            "unsupported_media_type",
            f"send the request as multipart/form-data with the field(s) {', '.join(body_fields)} "
            f"(got Content-Type {content_type or 'none'!r})",
        )
    route = request.scope.get("route")
    declared = _parameters(route.dependant) if isinstance(getattr(route, "dependant", None), Dependant) else {}
    status, code = 422, "invalid_parameter"
    for error in errors:
        key = tuple(str(part) for part in error.get("loc", ())[:2])
        if key in PARAMETER_ERRORS:
            status, code = PARAMETER_ERRORS[key]  # type: ignore[index]
            break
    described = []
    for error in errors:
        key = tuple(str(part) for part in error.get("loc", ())[:2])
        described.append(_describe(error, declared.get(key)))  # type: ignore[arg-type]
    return error_response(status, code, "; ".join(described) or "invalid request")


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile(
        "^"
        + "/".join(
            re.escape(part) if not (part.startswith("{") and part.endswith("}")) else "[^/]+"
            for part in template.split("/")
        )
        + "$"
    )


def allowed_methods(request: Request, starlette_allow: str | None) -> list[str]:
    """Every method the API serves at this request's path.

    Starlette's own ``Allow`` names only the methods of the first route whose path matched
    (``OPTIONS /v1/styles`` said ``GET``, not ``GET, POST``); the OpenAPI schema has them all.
    """
    methods = {method.strip().upper() for method in (starlette_allow or "").split(",") if method.strip()}
    path = request.scope.get("path", "")
    root_path = request.scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    for template, operations in request.app.openapi().get("paths", {}).items():
        if _template_regex(template).match(path):
            methods.update(method.upper() for method in operations if method in _HTTP_METHODS)
    return sorted(methods)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 404 and exc.detail in (None, "Not Found"):
        message = f"no such endpoint: {request.method} {request.url.path}; the API is described at /docs"
    elif status == 405:
        starlette_allow = next((value for key, value in headers.items() if key.lower() == "allow"), None)
        headers = {key: value for key, value in headers.items() if key.lower() != "allow"}
        allowed = ", ".join(allowed_methods(request, starlette_allow))
        headers["Allow"] = allowed
        message = f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
    else:
        message = str(exc.detail)
    return error_response(status, _HTTP_CODES.get(status, "error"), message, headers or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "an unexpected error occurred on the server; it was logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CinstyleError, _cinstyle_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
