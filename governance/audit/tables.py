"""Tables of the audit log. Rows are only ever inserted, except the single head row, which moves forward.

- ``audit_entry``: one row per entry — its canonical JSON bytes (the truth), its leaf hash, and a few
  columns copied out of it for queries (``audit verify`` checks they still match the bytes).
- ``audit_node``: roots of complete subtrees at every fourth level (16, 256, 4096… leaves), so that any
  proof needs at most 8 stored hashes per proof hash and never a scan of old entries.
- ``audit_head``: one row, locked by every append: next sequence number (= tree size), the frontier
  (roots of the right edge's complete subtrees) and the root. Appends cost O(k log n) hashing.
- ``audit_tree_head``: every signed tree head ever issued.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, SmallInteger, String
from sqlalchemy.dialects.postgresql import BYTEA
from sqlmodel import Field, SQLModel

BytesType = LargeBinary().with_variant(BYTEA(), "postgresql")
HEAD_ID = 1


class AuditEntryRow(SQLModel, table=True):
    """One audit entry: ``entry`` is the canonical JSON that the leaf hash covers."""

    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_actor_time", "actor", "time"),)

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    entry: bytes = Field(sa_column=Column(BytesType, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(BytesType, nullable=False))
    time: str = Field(sa_column=Column(String(27), nullable=False, index=True))
    actor: str = Field(sa_column=Column(String(256), nullable=False))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    decision: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))


class AuditNodeRow(SQLModel, table=True):
    """The root of the complete subtree ``index`` at ``level`` (2**level leaves)."""

    __tablename__ = "audit_node"

    level: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(BytesType, nullable=False))


class AuditHeadRow(SQLModel, table=True):
    """The single row every append locks: where the log ends and what its right edge hashes to."""

    __tablename__ = "audit_head"

    id: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    tree_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    frontier: bytes = Field(sa_column=Column(BytesType, nullable=False))
    root_hash: bytes = Field(sa_column=Column(BytesType, nullable=False))
    key_id: str = Field(sa_column=Column(String(64), nullable=False))
    appends: int = Field(sa_column=Column(BigInteger, nullable=False))
    """Count of append transactions; bumping it is how an append takes the lock."""
    tree_head_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    """Timestamp of the newest signed tree head, so that timestamps never go backwards."""


class AuditTreeHeadRow(SQLModel, table=True):
    """A signed tree head as issued."""

    __tablename__ = "audit_tree_head"

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    root_hash: bytes = Field(sa_column=Column(BytesType, nullable=False))
    timestamp_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    key_id: str = Field(sa_column=Column(String(64), nullable=False))
    signature: bytes = Field(sa_column=Column(BytesType, nullable=False))


ENTRY = AuditEntryRow.__table__  # type: ignore[attr-defined]
NODE = AuditNodeRow.__table__  # type: ignore[attr-defined]
HEAD = AuditHeadRow.__table__  # type: ignore[attr-defined]
TREE_HEAD = AuditTreeHeadRow.__table__  # type: ignore[attr-defined]
