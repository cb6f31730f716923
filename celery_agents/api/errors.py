"""Error bodies that name the problem: ``{"error": {"type", "message"}}`` and a status.

- ``ApiError``: what the API itself refuses (401 no or bad key, 403, 404, 409).
- The package's own errors (``UserError`` and its kin, ``BudgetExceeded``) map to a status by
  type; a request body or query that does not validate is a 422 naming each bad field.
- Anything else is a 500 that names its type only: its text may hold what must not leak.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BudgetExceeded,
    CeleryAgentsError,
    ConfigError,
    UnknownAgentError,
    UnknownProviderError,
    UnknownToolError,
    UserError,
)

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "Unauthorized", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "NotFound", message)


# Most specific first: a ConfigError is a UserError, but the server's own setup is at fault.
_STATUS: tuple[tuple[type[CeleryAgentsError], int], ...] = (
    (ConfigError, 503),
    (UnknownAgentError, 422),
    (UnknownProviderError, 422),
    (UnknownToolError, 422),
    (UserError, 400),
    (BudgetExceeded, 429),
)

# The responses every route may give, for the OpenAPI document.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "the request asks for something the server refuses"),
        (401, "no API key, or one that is not known or was revoked"),
        (404, "no such run or schedule (or not this key's tenant's)"),
        (422, "a field of the body or query is not valid"),
    )
}


def body(status: int, kind: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    content = ErrorResponse(error=ErrorBody(type=kind, message=message)).model_dump()
    return JSONResponse(content, status_code=status, headers=headers)


def status_of(exc: CeleryAgentsError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def install(app: FastAPI) -> None:
    """Answer every error with a body that names it."""

    @app.exception_handler(ApiError)
    async def _api(_request: Request, exc: ApiError) -> JSONResponse:
        return body(exc.status, exc.kind, exc.message)

    @app.exception_handler(CeleryAgentsError)
    async def _ours(_request: Request, exc: CeleryAgentsError) -> JSONResponse:
        return body(status_of(exc), type(exc).__name__, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return body(422, "ValidationError", invalid_fields(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "NotFound" if exc.status_code == 404 else "HTTPError"
        return body(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return body(500, "InternalError", f"the server failed ({type(exc).__name__})")


def invalid_fields(exc: RequestValidationError) -> str:
    """``body.prompt: String should have at least 1 character; ...``: each bad field named."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"
