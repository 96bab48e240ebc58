"""The register of data-sharing agreements: add, replace, revoke, list — each change audited.

An agreement names a provider (the department that owns the data), a recipient (a department or an
external body), datasets, purposes, fields, a period and obligations; that part is the **policy
document** the sharing policy reads as ``data.city.agreements[id]``. The register adds the terms only
the sharing layer enforces: a request quota per UTC day and a privacy budget (epsilon) for
differentially private answers.

The agreements the policies decide with are the folder's ``policies/data/agreements.json`` overlaid by
this register (``governance.policy.bundle.overlay_agreements``): an active agreement adds or replaces
one of the same id, a revoked one removes it. A change to the register is therefore a new policy
revision; the audit entry of the change names it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal

import orjson
import rfc8785
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Engine, Table, select, update
from sqlalchemy.exc import IntegrityError

from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from governance.catalog import SchemaCatalog
from governance.config import Settings
from governance.errors import InvalidRequestError, NotFoundError
from governance.policy.bundle import (
    AGREEMENTS_DOCUMENT,
    AgreementOverlay,
    BundleStore,
    base_files,
    bundle_from_files,
    overlay_agreements,
)
from governance.policy.documents import Basis
from governance.policy.errors import PolicyBundleError
from governance.policy.model import Obligation
from governance.sharing.driver import DriverStatement
from governance.sharing.reader import reading
from governance.sharing.tables import AgreementRecord, ensure_tables

_TABLE: Table = AgreementRecord.__table__  # type: ignore[attr-defined]
_OVERLAY = select(_TABLE.c.agreement_id, _TABLE.c.status, _TABLE.c.document).order_by(_TABLE.c.agreement_id)
"""The whole register, read by every data request (built once)."""
_OVERLAY_RUN = DriverStatement(_OVERLAY)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$"
"""Parties: the same alphabet as per-recipient pseudonym keys (``governance.protect.pseudonym``)."""
_DOTTED = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_FIELD = r"^[A-Za-z_@][A-Za-z0-9_@:.-]{0,127}$"
Clock = Callable[[], datetime]


class Action:
    ADD = "agreement.add"
    REPLACE = "agreement.replace"
    REVOKE = "agreement.revoke"


def utc_now() -> datetime:
    return datetime.now(UTC)


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("entries must be unique")
    return values


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Dotted = Annotated[str, Field(pattern=_DOTTED)]
FieldName = Annotated[str, Field(pattern=_FIELD)]


class AgreementTerms(BaseModel):
    """One agreement as given (CLI, ODRL import): the policy document plus the sharing layer's terms."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    title: Annotated[str, Field(min_length=1, max_length=512)]
    provider: Name
    recipient: Name
    recipient_kind: Literal["department", "external"]
    datasets: Annotated[list[Dotted], Field(min_length=1, max_length=64), AfterValidator(_unique)]
    purposes: Annotated[list[Dotted], Field(min_length=1, max_length=64), AfterValidator(_unique)]
    fields: Annotated[list[FieldName], Field(min_length=1, max_length=256), AfterValidator(_unique)]
    valid_from: AwareDatetime
    valid_until: AwareDatetime
    basis: Basis
    obligations: Annotated[list[Obligation], Field(max_length=32)] = []
    quota_per_day: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    """Requests per UTC day under this agreement; none: no quota."""
    epsilon_budget: Annotated[float, Field(gt=0, le=100)] | None = None
    """Total epsilon of its differentially private answers; none: the configured default."""

    @model_validator(mode="after")
    def _period(self) -> AgreementTerms:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self

    def policy_document(self) -> dict[str, Any]:
        """What ``data.city.agreements[id]`` holds (instants in UTC with ``Z``)."""
        return {
            "title": self.title,
            "provider": self.provider,
            "recipient": self.recipient,
            "recipient_kind": self.recipient_kind,
            "datasets": list(self.datasets),
            "purposes": list(self.purposes),
            "fields": list(self.fields),
            "valid_from": instant_text(self.valid_from),
            "valid_until": instant_text(self.valid_until),
            "basis": self.basis,
            "obligations": [o.model_dump(mode="json") for o in self.obligations],
        }

    @classmethod
    def from_policy_document(cls, agreement_id: str, document: Mapping[str, Any], *,
                             quota_per_day: int | None = None, epsilon_budget: float | None = None) -> AgreementTerms:
        return parse_terms({**document, "id": agreement_id, "quota_per_day": quota_per_day,
                            "epsilon_budget": epsilon_budget})

    def document_sha256(self) -> str:
        return hashlib.sha256(rfc8785.dumps(self.policy_document())).hexdigest()


def parse_terms(value: Mapping[str, Any]) -> AgreementTerms:
    """Validate an agreement; ``InvalidRequestError`` naming the first problem."""
    try:
        return AgreementTerms.model_validate(dict(value))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "agreement"
        raise InvalidRequestError(f"agreement {where}: {first['msg']}") from None


def instant_text(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    text = moment.isoformat().replace("+00:00", "Z")
    return text


@dataclass(frozen=True)
class AgreementView:
    """An agreement as the policies and the sharing layer see it now."""

    terms: AgreementTerms
    status: Literal["active", "revoked"]
    source: Literal["register", "policies"]
    """``register``: in the database; ``policies``: only in the folder's agreements.json."""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def id(self) -> str:
        return self.terms.id

    def in_force(self, at: datetime) -> bool:
        return self.status == "active" and self.terms.valid_from <= at < self.terms.valid_until

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.terms.policy_document(),
            "quota_per_day": self.terms.quota_per_day,
            "epsilon_budget": self.terms.epsilon_budget,
            "status": self.status,
            "source": self.source,
            "created_at": instant_text(self.created_at) if self.created_at else None,
            "updated_at": instant_text(self.updated_at) if self.updated_at else None,
            "revoked_at": instant_text(self.revoked_at) if self.revoked_at else None,
        }


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AgreementRegistry:
    """The agreements register of one store; changes are validated against the policy bundle and audited."""

    def __init__(self, engine: Engine, settings: Settings, *, audit: AuditLog | None = None,
                 clock: Clock = utc_now, catalog: SchemaCatalog | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.audit = audit
        self.clock = clock
        self.catalog = catalog

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, *, clock: Clock = utc_now) -> AgreementRegistry:
        ensure_tables(engine)
        return cls(engine, settings, audit=AuditLog.open(engine, settings.data_dir), clock=clock)

    # -- what the policies see ---------------------------------------------------------------------

    @cached_property
    def base_files(self) -> dict[str, bytes]:
        """The policy files the register goes over (the folder's, or a pinned revision's)."""
        return base_files(self.settings, self.catalog)

    def folder_agreements(self) -> dict[str, dict[str, Any]]:
        raw = self.base_files.get(AGREEMENTS_DOCUMENT)
        if raw is None:
            return {}
        document = orjson.loads(raw)
        agreements = document.get("agreements", {}) if isinstance(document, dict) else {}
        return dict(agreements) if isinstance(agreements, dict) else {}

    def overlay(self) -> dict[str, dict[str, Any] | None]:
        """The register as the bundle takes it: active agreements by id, revoked ones as ``None``."""
        with reading(self.engine) as conn:
            return {agreement_id: (dict(document) if status == "active" else None)
                    for agreement_id, status, document in _OVERLAY_RUN.rows(conn, {})}

    def revision_with(self, overlay: AgreementOverlay, *, store: bool = False) -> str:
        """Check the documents with ``overlay`` (``InvalidRequestError`` naming the problem); the revision."""
        try:
            bundle = bundle_from_files(overlay_agreements(self.base_files, overlay), origin="agreements register")
        except PolicyBundleError as exc:
            raise InvalidRequestError(f"the agreement does not fit the policy documents: {exc}") from None
        if store:
            BundleStore.for_settings(self.settings).save(bundle)
        return bundle.revision

    # -- reading ------------------------------------------------------------------------------------

    def find(self, agreement_id: str) -> AgreementView | None:
        """The agreement as in force now (the register's row, else the folder's), or ``None``."""
        with reading(self.engine) as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.agreement_id == agreement_id)).first()
        if row is not None:
            return _view(row)
        document = self.folder_agreements().get(agreement_id)
        if document is None:
            return None
        return AgreementView(AgreementTerms.from_policy_document(agreement_id, document), "active", "policies")

    def get(self, agreement_id: str) -> AgreementView:
        found = self.find(agreement_id)
        if found is None:
            raise NotFoundError(f"no agreement {agreement_id!r}")
        return found

    def list(self, *, include_revoked: bool = False, recipient: str | None = None) -> list[AgreementView]:
        with self.engine.connect() as conn:
            rows = {row.agreement_id: _view(row) for row in conn.execute(select(_TABLE))}
        for agreement_id, document in self.folder_agreements().items():
            if agreement_id not in rows:
                rows[agreement_id] = AgreementView(AgreementTerms.from_policy_document(agreement_id, document),
                                                   "active", "policies")
        views = [v for v in rows.values() if (include_revoked or v.status == "active")
                 and (recipient is None or v.terms.recipient == recipient)]
        return sorted(views, key=lambda v: v.id)

    # -- changes ------------------------------------------------------------------------------------

    def add(self, terms: AgreementTerms, *, actor: str, replace: bool = False, origin: str = "register"
            ) -> AgreementView:
        """Register ``terms``. An id in use needs ``replace`` (a revoked id is never reused)."""
        existing = self.find(terms.id)
        if existing is not None and existing.status == "revoked":
            raise InvalidRequestError(f"agreement {terms.id} was revoked; an agreement id is never reused")
        if existing is not None and not replace:
            where = "the register" if existing.source == "register" else "the policies folder"
            raise InvalidRequestError(f"agreement {terms.id} already exists in {where}; pass replace to change it")
        overlay = self.overlay()
        overlay[terms.id] = terms.policy_document()
        revision = self.revision_with(overlay, store=True)
        now = self.clock()
        values = {
            "title": terms.title, "provider": terms.provider, "recipient": terms.recipient,
            "recipient_kind": terms.recipient_kind, "document": terms.policy_document(),
            "valid_from": terms.valid_from, "valid_until": terms.valid_until,
            "quota_per_day": terms.quota_per_day, "epsilon_budget": terms.epsilon_budget, "updated_at": now,
        }
        in_register = existing is not None and existing.source == "register"
        action = Action.REPLACE if existing is not None else Action.ADD
        try:
            with self.engine.begin() as conn:
                if in_register:
                    done = conn.execute(update(_TABLE).where(_TABLE.c.agreement_id == terms.id,
                                                             _TABLE.c.status == "active").values(**values))
                    if done.rowcount != 1:
                        raise InvalidRequestError(f"agreement {terms.id} changed meanwhile (revoked?); try again")
                else:
                    conn.execute(_TABLE.insert().values(agreement_id=terms.id, status="active", origin=origin,
                                                        created_at=now, revoked_at=None, **values))
                self._audit(conn, action, terms, actor, revision, now)
        except IntegrityError:
            raise InvalidRequestError(f"agreement {terms.id} was added meanwhile; try again") from None
        return self.get(terms.id)

    def revoke(self, agreement_id: str, *, actor: str) -> AgreementView:
        """Revoke an agreement (the register's or the folder's): the policies no longer see it."""
        existing = self.get(agreement_id)
        if existing.status == "revoked":
            raise InvalidRequestError(f"agreement {agreement_id} is already revoked")
        overlay = self.overlay()
        overlay[agreement_id] = None
        revision = self.revision_with(overlay, store=True)
        now = self.clock()
        terms = existing.terms
        try:
            with self.engine.begin() as conn:
                if existing.source == "register":
                    done = conn.execute(update(_TABLE).where(_TABLE.c.agreement_id == agreement_id,
                                                             _TABLE.c.status == "active")
                                        .values(status="revoked", revoked_at=now, updated_at=now))
                    if done.rowcount != 1:
                        raise InvalidRequestError(f"agreement {agreement_id} is already revoked")
                else:
                    conn.execute(_TABLE.insert().values(
                        agreement_id=agreement_id, title=terms.title, provider=terms.provider,
                        recipient=terms.recipient, recipient_kind=terms.recipient_kind,
                        document=terms.policy_document(), valid_from=terms.valid_from, valid_until=terms.valid_until,
                        quota_per_day=None, epsilon_budget=None, status="revoked", origin="folder", created_at=now,
                        updated_at=now, revoked_at=now))
                self._audit(conn, Action.REVOKE, terms, actor, revision, now)
        except IntegrityError:
            raise InvalidRequestError(f"agreement {agreement_id} changed meanwhile; try again") from None
        return self.get(agreement_id)

    def _audit(self, conn: Any, action: str, terms: AgreementTerms, actor: str, revision: str, now: datetime) -> None:
        if self.audit is None:
            return
        self.audit.append([AuditEvent(
            actor=actor[:256] or "unknown",
            action=action,
            stage="sharing",
            decision=action.split(".", 1)[1],
            policy_revision=revision,
            refs={
                "agreement": terms.id,
                "provider": terms.provider,
                "recipient": terms.recipient,
                "recipient_kind": terms.recipient_kind,
                "datasets": list(terms.datasets),
                "purposes": list(terms.purposes),
                "valid_from": instant_text(terms.valid_from),
                "valid_until": instant_text(terms.valid_until),
                "document_sha256": terms.document_sha256(),
                "quota_per_day": terms.quota_per_day,
                "epsilon_budget": terms.epsilon_budget,
            },
            time=now,
        )], conn=conn)


def _view(row: Any) -> AgreementView:
    terms = AgreementTerms.from_policy_document(row.agreement_id, row.document, quota_per_day=row.quota_per_day,
                                                epsilon_budget=row.epsilon_budget)
    status: Literal["active", "revoked"] = "revoked" if row.status == "revoked" else "active"
    return AgreementView(terms, status, "register", _utc(row.created_at), _utc(row.updated_at), _utc(row.revoked_at))


def is_agreement_id(value: str) -> bool:
    return re.match(ID_PATTERN, value) is not None
