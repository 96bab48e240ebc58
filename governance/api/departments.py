"""The registry of who may call the data API: departments and external recipients, and their public keys.

A privacy officer registers each caller once with a first public key, adds keys (several may be active,
for rotation) and revokes them; keys are named by their RFC 7638 thumbprint (``kid``) and never deleted,
so an old audit entry's ``kid`` still names a known key. Every change is one audit entry
(``department.change``), appended in the change's own transaction.

Verification asks for one thing per request, :meth:`DepartmentRegistry.lookup_key`: the key with that
``kid``, its owner and whether it is still active — read from the database each time, so a revocation
holds at once in every server process. Parsed key objects are cached by ``kid`` (a thumbprint names
exactly one key, so the cache can never go stale).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, bindparam, exists, select, update
from sqlalchemy.exc import IntegrityError

from governance.api.jose import Algorithm, PublicJwk, PublicKeyType, parse_jwk
from governance.api.tables import DEPARTMENT, DEPARTMENT_KEY, REQUEST_ID, ensure_tables
from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from governance.errors import InvalidRequestError, NotFoundError
from governance.sharing.driver import DriverStatement
from governance.sharing.reader import reading

DEPARTMENT_CHANGE = "department.change"
"""The audit action of every registry change (``refs.change`` says which)."""
Kind = Literal["department", "external"]
KINDS: tuple[Kind, ...] = ("department", "external")
NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")
TOKEN = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,63}$")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyView:
    kid: str
    alg: str
    status: str
    created_at: datetime
    revoked_at: datetime | None
    jwk: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"kid": self.kid, "alg": self.alg, "status": self.status, "created_at": _iso(self.created_at),
                "revoked_at": _iso(self.revoked_at) if self.revoked_at else None, "jwk": self.jwk}


@dataclass(frozen=True)
class DepartmentView:
    name: str
    kind: str
    purposes: tuple[str, ...]
    roles: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    keys: tuple[KeyView, ...]

    @property
    def active_keys(self) -> tuple[KeyView, ...]:
        return tuple(k for k in self.keys if k.status == "active")

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "purposes": list(self.purposes), "roles": list(self.roles),
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
                "keys": [k.as_json() for k in self.keys]}


@dataclass(frozen=True)
class RegisteredKey:
    """What verification needs: the key, its one algorithm, its owner as registered, and its status."""

    kid: str
    alg: Algorithm
    key: PublicKeyType
    status: str
    department: str
    kind: Kind
    purposes: tuple[str, ...]
    roles: tuple[str, ...]
    jti_seen: bool = False
    """Whether the owner's request id asked about in the lookup is recorded already (see ``lookup_key``)."""


_LOOKUP_KEY = (
    select(DEPARTMENT_KEY.c.alg, DEPARTMENT_KEY.c.jwk, DEPARTMENT_KEY.c.status, DEPARTMENT.c.name,
           DEPARTMENT.c.kind, DEPARTMENT.c.purposes, DEPARTMENT.c.roles)
    .join(DEPARTMENT, DEPARTMENT.c.name == DEPARTMENT_KEY.c.department)
    .where(DEPARTMENT_KEY.c.kid == bindparam("kid"))
)
"""A key with its owner, by kid (built once: every request looks its key up)."""
_LOOKUP_KEY_AND_JTI = _LOOKUP_KEY.add_columns(
    exists().where(REQUEST_ID.c.iss == DEPARTMENT.c.name, REQUEST_ID.c.jti == bindparam("jti")).label("jti_seen"))
"""The same, and whether the key's owner has used the request id ``jti`` (one statement for both)."""
_LOOKUP_KEY_RUN = DriverStatement(_LOOKUP_KEY)
_LOOKUP_KEY_AND_JTI_RUN = DriverStatement(_LOOKUP_KEY_AND_JTI)
"""Run on the driver's cursor (every request runs one: ``governance.sharing.driver``)."""


class DepartmentRegistry:
    """Departments, recipients and their keys in the store; changes audited in their own transaction."""

    def __init__(self, engine: Engine, audit: AuditLog, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.audit = audit
        self.clock = clock
        self._parsed: dict[str, PublicJwk] = {}
        self._lock = threading.Lock()
        ensure_tables(engine)

    # --- changes ------------------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        key: PublicJwk,
        *,
        kind: str = "department",
        purposes: Sequence[str] = (),
        roles: Sequence[str] = (),
        actor: str,
    ) -> DepartmentView:
        """Register a department or recipient with its first public key."""
        _check_name(name)
        if kind not in KINDS:
            raise InvalidRequestError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        purposes, roles = _tokens(purposes, "purpose"), _tokens(roles, "role")
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                conn.execute(DEPARTMENT.insert().values(name=name, kind=kind, purposes=list(purposes),
                                                        roles=list(roles), created_at=now, updated_at=now))
                self._insert_key(conn, name, key, now)
                self.audit.append([self._event(actor, "add", name, kind=kind, purposes=list(purposes),
                                               roles=list(roles), kid=key.kid, alg=key.alg)], conn=conn)
        except IntegrityError:
            self._explain_conflict(name, key)
            raise
        return self.get(name)

    def add_key(self, name: str, key: PublicJwk, *, actor: str) -> KeyView:
        """Add another active key (rotation: add the new key, move the caller over, revoke the old one)."""
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(DEPARTMENT.c.name).where(DEPARTMENT.c.name == name)).first() is None:
                    raise NotFoundError(f"no department or recipient named {name!r}")
                self._insert_key(conn, name, key, now)
                conn.execute(update(DEPARTMENT).where(DEPARTMENT.c.name == name).values(updated_at=now))
                self.audit.append([self._event(actor, "key.add", name, kid=key.kid, alg=key.alg)], conn=conn)
        except IntegrityError:
            self._explain_conflict(None, key)
            raise
        return next(k for k in self.get(name).keys if k.kid == key.kid)

    def revoke_key(self, name: str, kid: str, *, actor: str) -> KeyView:
        """Revoke a key at once, for every server process; revocation is final (the key cannot come back)."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(select(DEPARTMENT_KEY.c.status).where(
                DEPARTMENT_KEY.c.kid == kid, DEPARTMENT_KEY.c.department == name)).first()
            if row is None:
                raise NotFoundError(f"{name!r} has no key {kid!r}")
            if row.status != "active":
                raise InvalidRequestError(f"key {kid} of {name!r} is already revoked")
            conn.execute(update(DEPARTMENT_KEY).where(DEPARTMENT_KEY.c.kid == kid)
                         .values(status="revoked", revoked_at=now))
            conn.execute(update(DEPARTMENT).where(DEPARTMENT.c.name == name).values(updated_at=now))
            self.audit.append([self._event(actor, "key.revoke", name, kid=kid)], conn=conn)
        return next(k for k in self.get(name).keys if k.kid == kid)

    # --- reading ------------------------------------------------------------------------------------------

    def get(self, name: str) -> DepartmentView:
        found = self._views([name])
        if not found:
            raise NotFoundError(f"no department or recipient named {name!r}")
        return found[0]

    def all(self) -> list[DepartmentView]:
        return self._views(None)

    def lookup_key(self, kid: str, *, jti: str | None = None) -> RegisteredKey | None:
        """The registered key named ``kid`` with its owner (active or not); None when unknown. With ``jti``,
        ``jti_seen`` tells whether the owner's request id ``jti`` is in the replay store (a read)."""
        with reading(self.engine) as conn:
            if jti is None:
                row = _LOOKUP_KEY_RUN.first(conn, {"kid": kid})
            else:
                row = _LOOKUP_KEY_AND_JTI_RUN.first(conn, {"kid": kid, "jti": jti})
        if row is None:
            return None
        alg, jwk, status, name, kind, purposes, roles = row[:7]
        parsed = self._parsed.get(kid)
        if parsed is None:
            parsed = parse_jwk(dict(jwk))
            if parsed.kid != kid or parsed.alg != alg:
                raise InvalidRequestError(f"registered key {kid} does not match its JWK (the registry was altered)")
            with self._lock:
                self._parsed[kid] = parsed
        return RegisteredKey(kid=kid, alg=parsed.alg, key=parsed.key, status=status, department=name,
                             kind=kind, purposes=tuple(purposes), roles=tuple(roles),
                             jti_seen=bool(jti is not None and row[7]))

    # --- internals ----------------------------------------------------------------------------------------

    def _insert_key(self, conn: Connection, name: str, key: PublicJwk, now: datetime) -> None:
        conn.execute(DEPARTMENT_KEY.insert().values(kid=key.kid, department=name, alg=key.alg, jwk=key.jwk,
                                                    status="active", created_at=now, revoked_at=None))

    def _explain_conflict(self, name: str | None, key: PublicJwk) -> None:
        with self.engine.connect() as conn:
            if name is not None and conn.execute(
                    select(DEPARTMENT.c.name).where(DEPARTMENT.c.name == name)).first() is not None:
                raise InvalidRequestError(f"{name!r} is already registered (add keys with `department key add`)")
            owner = conn.execute(select(DEPARTMENT_KEY.c.department, DEPARTMENT_KEY.c.status)
                                 .where(DEPARTMENT_KEY.c.kid == key.kid)).first()
        if owner is not None:
            raise InvalidRequestError(
                f"this key (kid {key.kid}) is already registered to {owner.department!r} ({owner.status}); "
                "a key belongs to one caller, and a revoked key cannot come back: generate a new one"
            )

    def _event(self, actor: str, change: str, name: str, **refs: Any) -> AuditEvent:
        return AuditEvent(actor=actor, action=DEPARTMENT_CHANGE, refs={"change": change, "department": name, **refs})

    def _views(self, names: Sequence[str] | None) -> list[DepartmentView]:
        departments = select(DEPARTMENT).order_by(DEPARTMENT.c.name)
        keys = select(DEPARTMENT_KEY).order_by(DEPARTMENT_KEY.c.created_at, DEPARTMENT_KEY.c.kid)
        if names is not None:
            departments = departments.where(DEPARTMENT.c.name.in_(names))
            keys = keys.where(DEPARTMENT_KEY.c.department.in_(names))
        with self.engine.connect() as conn:
            rows = conn.execute(departments).all()
            key_rows = conn.execute(keys).all()
        by_department: dict[str, list[KeyView]] = {}
        for k in key_rows:
            by_department.setdefault(k.department, []).append(KeyView(
                kid=k.kid, alg=k.alg, status=k.status, created_at=_aware(k.created_at),
                revoked_at=_aware(k.revoked_at) if k.revoked_at else None, jwk=dict(k.jwk)))
        return [DepartmentView(name=r.name, kind=r.kind, purposes=tuple(r.purposes), roles=tuple(r.roles),
                               created_at=_aware(r.created_at), updated_at=_aware(r.updated_at),
                               keys=tuple(by_department.get(r.name, ()))) for r in rows]


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidRequestError(
            f"name {name!r} is not valid: lower-case letters, digits, '.' and '-', starting with a letter or digit, "
            "at most 64 characters (it is the 'iss' of the caller's requests)"
        )


def _tokens(values: Sequence[str], what: str) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        if not isinstance(value, str) or not TOKEN.match(value):
            raise InvalidRequestError(f"{what} {value!r} is not valid: lower-case letters, digits, '.', '_', ':', "
                                      "'-', at most 64 characters")
        if value not in out:
            out.append(value)
    return tuple(out)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
