"""Tables of the signed data API: registered departments and recipients, their public keys, used request ids.

``department`` and ``department_key`` are the registry a privacy officer keeps (``citygov department``);
keys are never deleted, only revoked, so an audit entry's ``kid`` always names a known key. ``api_request_id``
holds the ``jti`` of every accepted request until it expires: the insert that fails is the replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Engine, Index, Table
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")


def _utc(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


class Department(SQLModel, table=True):
    """A city department or an external recipient allowed to call the data API."""

    __tablename__ = "department"

    name: str = Field(primary_key=True, max_length=64, description="The 'iss' of its signed requests.")
    kind: str = Field(max_length=16, description="department | external")
    purposes: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    """Purposes it may name in a request; empty means no restriction beyond the policies."""
    roles: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    created_at: datetime = _utc()
    updated_at: datetime = _utc()


class DepartmentKey(SQLModel, table=True):
    """One public key of a department, by its RFC 7638 thumbprint. Revoked keys stay (revocation is final)."""

    __tablename__ = "department_key"
    __table_args__ = (Index("ix_department_key_department", "department"),)

    kid: str = Field(primary_key=True, max_length=64, description="RFC 7638 JWK thumbprint (SHA-256, base64url).")
    department: str = Field(foreign_key="department.name", max_length=64)
    alg: str = Field(max_length=16, description="EdDSA | ES256: the only algorithm this key verifies.")
    jwk: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    """The public JWK (required members only)."""
    status: str = Field(max_length=16, description="active | revoked")
    created_at: datetime = _utc()
    revoked_at: datetime | None = _utc(nullable=True)


class ApiRequestId(SQLModel, table=True):
    """A request id (``jti``) already used by an issuer, kept until the request could no longer be valid."""

    __tablename__ = "api_request_id"

    iss: str = Field(primary_key=True, max_length=64)
    jti: str = Field(primary_key=True, max_length=128)
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    """Unix seconds after which the token is expired even with clock skew: then the row may go."""


DEPARTMENT: Table = Department.__table__  # type: ignore[attr-defined]
DEPARTMENT_KEY: Table = DepartmentKey.__table__  # type: ignore[attr-defined]
REQUEST_ID: Table = ApiRequestId.__table__  # type: ignore[attr-defined]
API_TABLES = (DEPARTMENT, DEPARTMENT_KEY, REQUEST_ID)


def ensure_tables(engine: Engine) -> None:
    """Create the API's tables if missing (``open_store`` does it too once ``governance.store.db`` imports this)."""
    SQLModel.metadata.create_all(engine, tables=list(API_TABLES))
