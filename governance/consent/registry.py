"""The consent registry: grant, renew, withdraw, read, and the lookup every stage's policy relies on.

Subjects are stored as pseudonyms only. Every change is one transaction that appends an event (with
its signed receipt) and updates the consent's current row, guarded by the event sequence number, so two
concurrent changes cannot both win. Withdrawal is effective from the instant it is recorded: a lookup
at or after that instant — for collection, use or sharing alike — is denied.

``has_consent`` and ``consents_for`` answer "as of ``at``" from the event history (only what had been
recorded by ``at`` counts), which makes a decision replayable, and fail closed: any error is a "no".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError

from governance.config import Settings
from governance.consent.errors import (
    ConsentConflictError,
    ConsentNotFoundError,
    ConsentStateError,
    InvalidConsentError,
)
from governance.consent.models import ConsentEventView, ConsentGrant, ConsentResult, ConsentView, Status
from governance.consent.receipt import receipt_claims, sign_receipt, verify_receipt
from governance.consent.tables import ConsentEvent, ConsentRecord
from governance.protect.keyring import Clock, Keyring, utc_now
from governance.protect.pseudonym import Pseudonyms
from governance.sharing.reader import reading

log = logging.getLogger(__name__)

_CONSENT = ConsentRecord.__table__  # type: ignore[attr-defined]
_EVENT = ConsentEvent.__table__  # type: ignore[attr-defined]


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _must_utc(value: datetime) -> datetime:
    result = _utc(value)
    assert result is not None
    return result


class ConsentObserver(Protocol):
    """Told of every grant, renewal and withdrawal inside its transaction (the audit log hooks in here)."""

    def __call__(self, conn: Connection, consent: ConsentView, kind: str, actor: str, receipt_id: str, /) -> None: ...


class ConsentRegistry:
    """Consent records of data subjects, keyed by pseudonym; satisfies the policy layer's ``ConsentLookup``."""

    lookup_chunk = 500
    """Subjects per query of a batch lookup (bounded IN lists)."""

    def __init__(self, engine: Engine, keyring: Keyring, *, clock: Clock = utc_now, issuer: str = "citygov",
                 on_change: ConsentObserver | None = None) -> None:
        self.engine = engine
        self.on_change = on_change
        self.keyring = keyring
        self.pseudonyms = Pseudonyms(keyring)
        self.clock = clock
        self.issuer = issuer

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, *, clock: Clock = utc_now) -> ConsentRegistry:
        return cls(engine, Keyring.from_settings(settings, engine, clock=clock), clock=clock,
                   issuer=settings.receipt_issuer)

    # -- changes -----------------------------------------------------------------------------------

    def grant(self, request: ConsentGrant | dict[str, Any], *, actor: str) -> ConsentResult:
        """Record a new consent and issue its receipt."""
        grant = _grant(request)
        actor = _actor(actor)
        at = self._now()
        valid_from = grant.valid_from or at
        if grant.valid_until is not None and grant.valid_until <= max(valid_from, at):
            raise InvalidConsentError("valid_until must be in the future and after valid_from")
        row: dict[str, Any] = {
            "consent_id": str(uuid.uuid4()),
            "subject": self.pseudonyms.subject_ref(grant.subject_id),
            "controller": grant.controller,
            "on_behalf": grant.on_behalf,
            "purposes": list(grant.purposes),
            "recipients": list(grant.recipients),
            "legal_basis": grant.legal_basis,
            "collection_method": grant.collection_method,
            "jurisdiction": grant.jurisdiction,
            "language": grant.language,
            "policy_url": grant.policy_url,
            "special_categories": list(grant.special_categories),
            "valid_from": valid_from,
            "valid_until": grant.valid_until,
            "status": "active",
            "granted_at": at,
            "updated_at": at,
            "withdrawn_at": None,
            "seq": 1,
        }
        view = ConsentView(**row)
        event, receipt_id, receipt = self._event(view, "grant", at, actor, None)
        with self.engine.begin() as conn:
            conn.execute(_CONSENT.insert().values(**row))
            conn.execute(_EVENT.insert().values(**event))
            if self.on_change is not None:
                self.on_change(conn, view, "grant", actor, receipt_id)
        return ConsentResult(consent=view, receipt_id=receipt_id, receipt=receipt)

    def renew(
        self, consent_id: str, *, valid_until: datetime | None, actor: str, reason: str | None = None
    ) -> ConsentResult:
        """Extend (or open-end, with ``None``) an active consent's period; a withdrawn one needs a new grant."""
        at = self._now()
        current = self.get(consent_id, history=False)
        if current.status != "active":
            raise ConsentStateError(f"consent {consent_id} was withdrawn; record a new grant instead")
        if valid_until is not None:
            if valid_until.tzinfo is None:
                raise InvalidConsentError("valid_until must carry a time zone")
            valid_until = valid_until.astimezone(UTC)
            if valid_until <= max(at, current.valid_from):
                raise InvalidConsentError("a renewal must end in the future and after valid_from")
        return self._change(current, "renew", at, _actor(actor), reason,
                            {"valid_until": valid_until, "status": "active"})

    def withdraw(self, consent_id: str, *, actor: str, reason: str | None = None) -> ConsentResult:
        """Withdraw a consent, effective from now for collection, use and sharing."""
        at = self._now()
        current = self.get(consent_id, history=False)
        if current.status == "withdrawn":
            raise ConsentStateError(f"consent {consent_id} was already withdrawn at {current.withdrawn_at}")
        return self._change(current, "withdraw", at, _actor(actor), reason,
                            {"status": "withdrawn", "withdrawn_at": at})

    # -- reading -----------------------------------------------------------------------------------

    def get(self, consent_id: str, *, history: bool = True) -> ConsentView:
        with reading(self.engine) as conn:
            row = conn.execute(select(_CONSENT).where(_CONSENT.c.consent_id == consent_id)).first()
        if row is None:
            raise ConsentNotFoundError(f"no consent {consent_id!r}")
        events: list[Any] = []
        if history:
            with reading(self.engine) as conn:
                events = list(conn.execute(
                    select(_EVENT).where(_EVENT.c.consent_id == consent_id).order_by(_EVENT.c.seq)).all())
        view = _view(row._mapping)
        view.history = [_event_view(e._mapping) for e in events]
        return view

    def find(
        self, *, subject_id: str | None = None, status: Status | None = None, purpose: str | None = None,
        limit: int = 100,
    ) -> list[ConsentView]:
        """Consents, oldest grant first; ``subject_id`` may be a real id or a pseudonym."""
        query = select(_CONSENT).order_by(_CONSENT.c.granted_at, _CONSENT.c.consent_id)
        if subject_id is not None:
            query = query.where(_CONSENT.c.subject == self.pseudonyms.subject_ref(subject_id))
        if status is not None:
            query = query.where(_CONSENT.c.status == status)
        if purpose is None:
            query = query.limit(limit)
        with reading(self.engine) as conn:
            views = [_view(r._mapping) for r in conn.execute(query)]
        if purpose is not None:
            views = [v for v in views if purpose in v.purposes][:limit]
        return views

    def receipt_public_keys(self) -> dict[str, Ed25519PublicKey]:
        return self.keyring.receipt_public_keys()

    def verify_receipt(self, token: str) -> dict[str, Any]:
        """The claims of a receipt this registry's keys signed (``InvalidReceiptError`` otherwise)."""
        return verify_receipt(token, self.receipt_public_keys())

    # -- the lookup policies use -------------------------------------------------------------------

    def has_consent(self, subject_id: str, purpose: str, at: datetime, *, recipient: str | None = None) -> bool:
        """Did ``subject_id`` (real id or pseudonym) consent to ``purpose`` at ``at``? Any error: False."""
        return subject_id in self.consents_for([subject_id], purpose, at, recipient=recipient)

    def consents_for(
        self, subject_ids: Iterable[str], purpose: str, at: datetime, *, recipient: str | None = None
    ) -> set[str]:
        """Those of ``subject_ids`` (as given) with consent to ``purpose`` at ``at``; one query per 500 subjects.

        With ``recipient``, the consent must also name that recipient (sharing). Any error: empty set.
        """
        try:
            return self._consents_for(subject_ids, purpose, at, recipient)
        except Exception as exc:  # fail closed: a broken lookup is a "no", and says so in the log
            log.error("consent lookup failed, denying: %s", type(exc).__name__,
                      extra={"purpose": purpose, "error": type(exc).__name__})
            return set()

    def _consents_for(
        self, subject_ids: Iterable[str], purpose: str, at: datetime, recipient: str | None
    ) -> set[str]:
        if at.tzinfo is None:
            raise ValueError("a consent lookup needs an aware time")
        at = at.astimezone(UTC)
        given: dict[str, set[str]] = {}
        for subject_id in set(subject_ids):
            given.setdefault(self.pseudonyms.subject_ref(subject_id), set()).add(subject_id)
        pseudonyms = sorted(given)
        latest: dict[str, Any] = {}
        for start in range(0, len(pseudonyms), self.lookup_chunk):
            query = (
                select(_EVENT.c.consent_id, _EVENT.c.seq, _EVENT.c.status, _EVENT.c.valid_from, _EVENT.c.valid_until,
                       _CONSENT.c.subject, _CONSENT.c.purposes, _CONSENT.c.recipients)
                .join(_CONSENT, _CONSENT.c.consent_id == _EVENT.c.consent_id)
                .where(_CONSENT.c.subject.in_(pseudonyms[start : start + self.lookup_chunk]), _EVENT.c.at <= at)
                .order_by(_EVENT.c.consent_id, _EVENT.c.seq)
            )
            # one statement, through the request's read connection inside its ``sharing_reads`` block: a lookup
            # never waits for a second pooled connection while the request holds one
            with reading(self.engine) as conn:
                for row in conn.execute(query):
                    latest[row.consent_id] = row  # ordered by seq: the last one is the state as of ``at``
        allowed: set[str] = set()
        for row in latest.values():
            valid_until = _utc(row.valid_until)
            if (
                row.status == "active"
                and _must_utc(row.valid_from) <= at
                and (valid_until is None or at < valid_until)
                and purpose in row.purposes
                and (recipient is None or recipient in row.recipients)
            ):
                allowed |= given.get(row.subject, set())
        return allowed

    # -- internals ---------------------------------------------------------------------------------

    def _now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None:
            raise InvalidConsentError("the registry's clock must return aware times")
        return now.astimezone(UTC)

    def _event(
        self, view: ConsentView, kind: str, at: datetime, actor: str, reason: str | None
    ) -> tuple[dict[str, Any], str, str]:
        receipt_id = str(uuid.uuid4())
        claims = receipt_claims(view, event=kind, seq=view.seq, at=at, receipt_id=receipt_id, issuer=self.issuer)
        receipt = sign_receipt(claims, self.keyring.receipt_key())
        event = {
            "consent_id": view.consent_id, "seq": view.seq, "event": kind, "at": at, "actor": actor,
            "reason": (reason or None) and reason[:1000], "status": view.status, "valid_from": view.valid_from,
            "valid_until": view.valid_until, "receipt_id": receipt_id, "receipt": receipt,
        }
        return event, receipt_id, receipt

    def _change(
        self, current: ConsentView, kind: str, at: datetime, actor: str, reason: str | None, changes: dict[str, Any]
    ) -> ConsentResult:
        values = {**changes, "updated_at": at, "seq": current.seq + 1}
        view = current.model_copy(update=values)
        event, receipt_id, receipt = self._event(view, kind, at, actor, reason)
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(_CONSENT)
                    .where(_CONSENT.c.consent_id == current.consent_id, _CONSENT.c.seq == current.seq)
                    .values(**values)
                )
                if result.rowcount != 1:
                    raise ConsentConflictError(f"consent {current.consent_id} changed meanwhile; try again")
                conn.execute(_EVENT.insert().values(**event))
                if self.on_change is not None:
                    self.on_change(conn, view, kind, actor, receipt_id)
        except IntegrityError:
            raise ConsentConflictError(f"consent {current.consent_id} changed meanwhile; try again") from None
        return ConsentResult(consent=view, receipt_id=receipt_id, receipt=receipt)


def _grant(request: ConsentGrant | dict[str, Any]) -> ConsentGrant:
    if isinstance(request, ConsentGrant):
        return request
    try:
        return ConsentGrant.model_validate(request)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'consent'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidConsentError(problems) from None


def _actor(actor: str) -> str:
    actor = actor.strip() if isinstance(actor, str) else ""
    if not actor or len(actor) > 256:
        raise InvalidConsentError("every consent change names who recorded it (actor, 1-256 characters)")
    return actor


def _view(row: Any) -> ConsentView:
    data = dict(row)
    for key in ("valid_from", "valid_until", "granted_at", "updated_at", "withdrawn_at"):
        data[key] = _utc(data[key])
    return ConsentView(**data)


def _event_view(row: Any) -> ConsentEventView:
    data = {k: row[k] for k in ConsentEventView.model_fields}
    for key in ("at", "valid_from", "valid_until"):
        data[key] = _utc(data[key])
    return ConsentEventView(**data)
