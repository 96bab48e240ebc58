"""The consent registry over HTTP: grant, renew, withdraw, show, list, and the signed receipts.

Like the audit router, it cannot be mounted without deciding on authentication: ``authenticate`` is a
FastAPI dependency that raises for unknown callers and returns the caller, whose ``actor`` (an object with
an ``actor`` attribute, such as the signed API's ``Caller``, or a plain string) is recorded as who made each
change. :func:`unsafe_no_authentication` (which warns) is for development and tests only.

    app.include_router(consent_router(lambda: registry, authenticate=verified_agency), prefix="/v1/consents")

Real ids never travel in a URL (URLs end up in access logs): listing by subject takes a pseudonym in the
query string, or a real id in the body of ``POST /search``. Responses name subjects by pseudonym only.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures at run time, and the
# ``Registry``/``Caller`` dependency aliases are local to ``consent_router``.
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select

from governance.consent.errors import (
    ConsentConflictError,
    ConsentNotFoundError,
    ConsentStateError,
    InvalidConsentError,
    InvalidReceiptError,
)
from governance.consent.models import ConsentGrant, ConsentResult, ConsentView
from governance.consent.registry import ConsentRegistry
from governance.consent.tables import ConsentEvent
from governance.protect.keyring import public_pem
from governance.protect.pseudonym import is_pseudonym

MAX_LIST = 1000
_EVENT = ConsentEvent.__table__  # type: ignore[attr-defined]


def unsafe_no_authentication() -> str:
    """Lets every caller in, as ``unauthenticated``. For development and tests only."""
    warnings.warn("the consent API is mounted without authentication", stacklevel=2)
    return "unauthenticated"


def actor_of(caller: Any) -> str:
    """Who made a change, as the audit log and the consent history name them."""
    actor = getattr(caller, "actor", caller)
    if not isinstance(actor, str) or not actor:
        raise HTTPException(500, "the authentication dependency returned no caller")
    return actor


class RenewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    valid_until: AwareDatetime | None = Field(description="New end of the period; null for open-ended.")
    reason: str | None = Field(default=None, max_length=1000)


class WithdrawRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=1000)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject_id: str | None = Field(default=None, min_length=1, max_length=2048,
                                   description="A real id or a pseudonym; only its pseudonym is matched.")
    status: Literal["active", "withdrawn"] | None = None
    purpose: str | None = None
    limit: int = Field(default=100, ge=1, le=MAX_LIST)


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    receipt: str = Field(min_length=1, max_length=64 * 1024)


@contextmanager
def _answers() -> Iterator[None]:
    """Registry errors as HTTP answers: 422 invalid, 404 unknown, 409 state or concurrent change."""
    try:
        yield
    except InvalidConsentError as exc:
        raise HTTPException(422, str(exc)) from None
    except ConsentNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except ConsentStateError as exc:
        raise HTTPException(409, str(exc)) from None
    except ConsentConflictError as exc:
        raise HTTPException(409, str(exc), headers={"Retry-After": "1"}) from None


def _shown(view: ConsentView) -> dict[str, Any]:
    return {**view.model_dump(mode="json"), "status_now": view.status_at(datetime.now(UTC))}


def consent_router(get_registry: Callable[[], ConsentRegistry], *, authenticate: Callable[..., Any]) -> APIRouter:
    """Build the consent API. ``authenticate`` is a FastAPI dependency that raises for unknown callers."""
    router = APIRouter(tags=["consent"], dependencies=[Depends(authenticate)])  # no route without it
    Registry = Annotated[ConsentRegistry, Depends(get_registry)]  # noqa: N806  (a type alias, named as one)
    Caller = Annotated[Any, Depends(authenticate)]  # noqa: N806

    @router.post("", status_code=201, response_model=ConsentResult)
    def grant(registry: Registry, caller: Caller, request: ConsentGrant) -> ConsentResult:
        """Record a consent; the answer carries the signed receipt."""
        with _answers():
            return registry.grant(request, actor=actor_of(caller))

    @router.get("")
    def list_consents(
        registry: Registry,
        caller: Caller,
        subject: Annotated[str | None, Query(description="A pseudonym (psn:v1:…); for a real id use POST /search.")]
        = None,
        status: Literal["active", "withdrawn"] | None = None,
        purpose: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    ) -> list[dict[str, Any]]:
        """Consents, oldest grant first."""
        if subject is not None and not is_pseudonym(subject):
            raise HTTPException(422, "give a pseudonym here; send a real id in the body of POST /search")
        return [_shown(v) for v in registry.find(subject_id=subject, status=status, purpose=purpose, limit=limit)]

    @router.post("/search")
    def search(registry: Registry, caller: Caller, request: SearchRequest) -> list[dict[str, Any]]:
        """Consents of a subject given by real id (kept out of URLs) or pseudonym, with the usual filters."""
        views = registry.find(subject_id=request.subject_id, status=request.status, purpose=request.purpose,
                              limit=request.limit)
        return [_shown(v) for v in views]

    @router.get("/receipt-keys")
    def receipt_keys(registry: Registry, caller: Caller) -> dict[str, str]:
        """The receipt-signing public keys (PEM) by ``kid``, for whoever keeps receipts."""
        return {kid: public_pem(key) for kid, key in registry.receipt_public_keys().items()}

    @router.post("/receipts/verify")
    def verify(registry: Registry, caller: Caller, request: VerifyRequest) -> dict[str, Any]:
        """Check a receipt against the registry's keys: 200 with its claims, or 422 if it is not genuine."""
        try:
            return {"valid": True, "claims": registry.verify_receipt(request.receipt)}
        except InvalidReceiptError as exc:
            raise HTTPException(422, {"valid": False, "detail": str(exc)}) from None

    @router.get("/{consent_id}")
    def show(registry: Registry, caller: Caller, consent_id: str) -> dict[str, Any]:
        """One consent with its full history and its status now."""
        with _answers():
            return _shown(registry.get(consent_id))

    @router.post("/{consent_id}/renew", response_model=ConsentResult)
    def renew(registry: Registry, caller: Caller, consent_id: str, request: RenewRequest) -> ConsentResult:
        """Extend (or open-end) an active consent's period; issues a receipt."""
        with _answers():
            return registry.renew(consent_id, valid_until=request.valid_until, actor=actor_of(caller),
                                  reason=request.reason)

    @router.post("/{consent_id}/withdraw", response_model=ConsentResult)
    def withdraw(registry: Registry, caller: Caller, consent_id: str, request: WithdrawRequest) -> ConsentResult:
        """Withdraw a consent, effective at once for collection, use and sharing; issues a receipt."""
        with _answers():
            return registry.withdraw(consent_id, actor=actor_of(caller), reason=request.reason)

    @router.get("/{consent_id}/receipts")
    def receipts(registry: Registry, caller: Caller, consent_id: str) -> list[dict[str, Any]]:
        """Every receipt issued for the consent (grant, renewals, withdrawal), oldest first."""
        with _answers():
            registry.get(consent_id, history=False)
        with registry.engine.connect() as conn:
            rows = conn.execute(
                select(_EVENT.c.seq, _EVENT.c.event, _EVENT.c.at, _EVENT.c.receipt_id, _EVENT.c.receipt)
                .where(_EVENT.c.consent_id == consent_id).order_by(_EVENT.c.seq)
            ).all()
        return [{"seq": r.seq, "event": r.event, "at": _iso(r.at), "receipt_id": r.receipt_id, "receipt": r.receipt}
                for r in rows]

    @router.get("/{consent_id}/receipts/{receipt_id}")
    def receipt(registry: Registry, caller: Caller, consent_id: str, receipt_id: str) -> dict[str, Any]:
        """One receipt (compact JWS)."""
        with registry.engine.connect() as conn:
            row = conn.execute(
                select(_EVENT.c.seq, _EVENT.c.event, _EVENT.c.receipt)
                .where(_EVENT.c.consent_id == consent_id, _EVENT.c.receipt_id == receipt_id)
            ).first()
        if row is None:
            raise HTTPException(404, f"no receipt {receipt_id!r} for consent {consent_id!r}")
        return {"consent_id": consent_id, "receipt_id": receipt_id, "seq": row.seq, "event": row.event,
                "receipt": row.receipt}

    return router


def _iso(value: datetime) -> str:
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()
