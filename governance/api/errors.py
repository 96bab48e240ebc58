"""The one place where citygov's exception tree becomes HTTP: a status, a code and a body that leaks nothing.

Every error body is ``{"error": code, "message": text, "request_id": id}``. A 401 always carries the
same generic message (the precise reason goes to the audit log); a 403/429 may add the policy's
``reasons`` codes and the ``decision_id`` — never data; a 5xx says nothing about its cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from governance.errors import (
    AccessDeniedError,
    AuthenticationError,
    CitygovError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    QuotaExceededError,
    RetriableError,
)

INTERNAL_MESSAGE = "internal error; quote the request id to the operators"
UNAVAILABLE_MESSAGE = "temporarily unavailable; try again later"
DENIED_MESSAGE = "the request is not allowed"
_HTTP_CODES = {400: "invalid_request", 401: AuthenticationError.code, 403: AccessDeniedError.code,
               404: NotFoundError.code, 405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type", 429: QuotaExceededError.code}


@dataclass(frozen=True)
class ErrorReply:
    """What an error turns into: status, body and extra response headers."""

    status: int
    code: str
    message: str
    reasons: tuple[str, ...] = ()
    decision_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self, request_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message, "request_id": request_id}
        if self.reasons:
            body["reasons"] = list(self.reasons)
        if self.decision_id is not None:
            body["decision_id"] = self.decision_id
        return body

    @property
    def decision(self) -> str:
        """How the audit log names the outcome."""
        if self.status == 401:
            return "unauthenticated"
        if self.status in (403, 429):
            return "deny"
        return "error" if self.status >= 500 else "invalid"


def is_budget(exc: QuotaExceededError) -> bool:
    """A spent privacy budget is final for the period (403); a request quota resets (429)."""
    return any("budget" in reason for reason in exc.reasons)


def error_reply(exc: BaseException) -> ErrorReply:
    """Map any exception to the reply a caller may see."""
    if isinstance(exc, AuthenticationError):
        return ErrorReply(401, exc.code, exc.public_message, headers={"WWW-Authenticate": 'Bearer realm="citygov"'})
    if isinstance(exc, QuotaExceededError):
        status = 403 if is_budget(exc) else 429
        return ErrorReply(status, exc.code, "a quota or privacy budget of this request is spent",
                          reasons=_codes(exc.reasons), decision_id=exc.decision_id)
    if isinstance(exc, AccessDeniedError):
        return ErrorReply(403, exc.code, DENIED_MESSAGE, reasons=_codes(exc.reasons), decision_id=exc.decision_id)
    if isinstance(exc, PayloadTooLargeError):
        return ErrorReply(413, exc.code, str(exc) or "too large")
    if isinstance(exc, InvalidRequestError):
        return ErrorReply(400, exc.code, str(exc) or "invalid request")
    if isinstance(exc, NotFoundError):
        return ErrorReply(404, exc.code, str(exc) or "not found")
    if isinstance(exc, RetriableError):
        return ErrorReply(503, exc.code, UNAVAILABLE_MESSAGE, headers={"Retry-After": "5"})
    if isinstance(exc, ValidationError):
        return ErrorReply(400, InvalidRequestError.code, describe_validation(exc.errors(include_input=False)))
    if isinstance(exc, RequestValidationError):  # FastAPI's own parameter checks (the audit router's queries)
        return ErrorReply(400, InvalidRequestError.code, describe_validation(exc.errors()))
    if isinstance(exc, HTTPException):
        return http_reply(exc.status_code, exc.detail)
    if isinstance(exc, CitygovError):
        return ErrorReply(500, "internal_error", INTERNAL_MESSAGE)
    return ErrorReply(500, "internal_error", INTERNAL_MESSAGE)


def http_reply(status: int, detail: Any) -> ErrorReply:
    """A framework-level error (404 route, 405 method, the audit router's own 404/422)."""
    if status >= 500:
        return ErrorReply(status, "internal_error", INTERNAL_MESSAGE)
    if status == 422:
        status = 400
    code = _HTTP_CODES.get(status, "http_error")
    message = detail if isinstance(detail, str) and len(detail) <= 300 else code.replace("_", " ")
    return ErrorReply(status, code, message)


def describe_validation(errors: Sequence[Any]) -> str:
    """The first few validation problems as text: where and what, never the value sent."""
    parts = []
    for error in list(errors)[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "") if parts else "the request body is invalid"


def _codes(reasons: Sequence[str]) -> tuple[str, ...]:
    """Reason codes only: short machine-readable names (anything else is dropped, not echoed)."""
    return tuple(r for r in reasons if isinstance(r, str) and 0 < len(r) <= 64 and r.replace("_", "").replace(
        ".", "").replace("-", "").replace(":", "").isalnum())
