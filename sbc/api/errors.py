"""Error answers of the API: one body shape, the status codes the README promises.

Every error body is litestar's: ``{"status_code": N, "detail": "...", "extra": [...]}``; for
422 ``extra`` lists ``{"key": "gateways.0.port", "message": "..."}`` per bad field, so a client
can point at the field. Mapping, and why:

* litestar's ``ValidationException`` (a bad body, query or path value) is 400 by default; the API
  answers 422 (the request was well-formed HTTP/JSON but its content is unacceptable).
* SQLAlchemy ``IntegrityError`` -> 409: a unique or foreign-key rule of the store refused the
  write (handlers check the common cases first to give a precise message; this is the backstop
  for races between two writers). The transaction is rolled back by then.
* ``DataError`` -> 422 (a value the database cannot store), ``OperationalError`` -> 503 with
  Retry-After (database locked or unreachable: retrying later can work).
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.status_codes import (
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

log = logging.getLogger(__name__)

#: Seconds a client should wait after a 503 caused by a busy or unreachable database.
RETRY_AFTER_S = 1


class FieldError(HTTPException):
    """422 naming one field of the request, in the same shape as litestar's validation errors."""

    status_code = HTTP_422_UNPROCESSABLE_ENTITY

    def __init__(self, key: str, message: str) -> None:
        super().__init__(
            detail=f"Validation failed: {key}: {message}", extra=[{"key": key, "message": message}]
        )


class Conflict(HTTPException):
    """409: the write would duplicate something or break a reference."""

    status_code = HTTP_409_CONFLICT


def not_found(what: str) -> NotFoundException:
    """404 for an unknown id, or a resource of another customer (the same answer on purpose)."""
    return NotFoundException(detail=f"{what} not found")


def _body(status: int, detail: str, extra: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status_code": status, "detail": detail}
    if extra:
        body["extra"] = extra
    return body


def validation_to_422(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """litestar's 400 validation error, answered as 422 with the same body."""
    return Response(
        _body(HTTP_422_UNPROCESSABLE_ENTITY, exc.detail, exc.extra), status_code=HTTP_422_UNPROCESSABLE_ENTITY
    )


def integrity_to_409(request: Request[Any, Any, Any], exc: IntegrityError) -> Response[Any]:
    """A store rule refused the write; the message says which kind without SQL or parameters."""
    text = str(exc.orig).lower() if exc.orig is not None else ""
    if "unique" in text or "duplicate" in text:
        detail = "already exists (a unique name or number is taken)"
    elif "foreign key" in text:
        detail = "still referenced by other objects, or refers to something that does not exist"
    else:
        detail = "refused by a store rule"
    log.info("409 for %s %s: %s", request.method, request.url.path, type(exc.orig).__name__)
    return Response(_body(HTTP_409_CONFLICT, detail), status_code=HTTP_409_CONFLICT)


def data_to_422(request: Request[Any, Any, Any], exc: DataError) -> Response[Any]:
    """A value the database cannot store (e.g. NUL in PostgreSQL text)."""
    return Response(
        _body(HTTP_422_UNPROCESSABLE_ENTITY, "a value cannot be stored (invalid characters or range)"),
        status_code=HTTP_422_UNPROCESSABLE_ENTITY,
    )


def operational_to_503(request: Request[Any, Any, Any], exc: OperationalError) -> Response[Any]:
    """Database busy or unreachable: nothing was written; the client may retry."""
    log.warning("store unavailable for %s %s: %s", request.method, request.url.path, exc.orig)
    return Response(
        _body(HTTP_503_SERVICE_UNAVAILABLE, "store unavailable, retry later"),
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    ValidationException: validation_to_422,
    IntegrityError: integrity_to_409,
    DataError: data_to_422,
    OperationalError: operational_to_503,
}

__all__ = ["EXCEPTION_HANDLERS", "RETRY_AFTER_S", "Conflict", "FieldError", "not_found"]
