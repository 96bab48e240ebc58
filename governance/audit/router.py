"""The audit log over HTTP: entries, proofs, the latest signed tree head, the public key.

Authentication is the signed-API issue's job. The router takes it as a dependency, ``authenticate``,
so it cannot be mounted without a decision: the signed-API dependency in production, and
:func:`unsafe_no_authentication` (which warns) only in development and tests. Whatever ``authenticate``
returns is the caller's identity; the audit endpoints need only that it did not raise.

    app.include_router(audit_router(lambda: audit_log, authenticate=verified_auditor), prefix="/audit")
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route signatures at run time, and the
# ``Log`` dependency alias is local to ``audit_router``.
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from governance.audit.errors import AuditRangeError, VerificationError
from governance.audit.log import AuditLog, latest_tree_head
from governance.audit.proofs import consistency_proof, inclusion_proof
from governance.audit.query import MAX_LIMIT, EntryFilter, find_entries, get_entry


def unsafe_no_authentication() -> str:
    """Lets every caller in. For development and tests only, until the signed API provides the real check."""
    warnings.warn("the audit API is mounted without authentication", stacklevel=2)
    return "unauthenticated"


def audit_router(get_log: Callable[[], AuditLog], *, authenticate: Callable[..., Any]) -> APIRouter:
    """Build the audit API. ``authenticate`` is a FastAPI dependency that raises for unknown callers."""
    router = APIRouter(tags=["audit"], dependencies=[Depends(authenticate)])
    Log = Annotated[AuditLog, Depends(get_log)]  # noqa: N806  (a type alias, named as one)

    @router.get("/entries")
    def list_entries(
        log: Log,
        actor: str | None = None,
        action: str | None = None,
        decision: str | None = None,
        dataset: str | None = None,
        subject: Annotated[str | None, Query(description="A raw subject id; pseudonymized before matching.")] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> list[dict[str, Any]]:
        wanted = EntryFilter(actor=actor, action=action, decision=decision, dataset=dataset,
                             subject=log.pseudonymize(subject) if subject else None,
                             since=_aware(since), until=_aware(until), after_seq=after_seq, limit=limit)
        with log.engine.connect() as conn:
            return [{"seq": e.seq, **e.as_json()} for e in find_entries(conn, wanted)]

    @router.get("/entries/{seq}")
    def one_entry(log: Log, seq: int) -> dict[str, Any]:
        with log.engine.connect() as conn:
            entry = get_entry(conn, seq)
        if entry is None:
            raise HTTPException(404, f"no entry #{seq}")
        return {"seq": entry.seq, "entry": entry.data.decode("utf-8"), "leaf_hash": entry.leaf_hash.hex()}

    @router.get("/tree-head")
    def tree_head(log: Log) -> dict[str, Any]:
        with log.engine.connect() as conn:
            head = latest_tree_head(conn)
        if head is None:
            raise HTTPException(404, "the log has no signed tree head yet")
        return head.as_json()

    @router.get("/proofs/inclusion")
    def inclusion(log: Log, seq: int, tree_size: int | None = None) -> dict[str, Any]:
        with log.engine.connect() as conn:
            size = tree_size if tree_size is not None else _signed_size(conn)
            return _proof(lambda: inclusion_proof(conn, seq, size).as_json())

    @router.get("/proofs/consistency")
    def consistency(log: Log, first: int, second: int | None = None) -> dict[str, Any]:
        with log.engine.connect() as conn:
            size = second if second is not None else _signed_size(conn)
            return _proof(lambda: consistency_proof(conn, first, size).as_json())

    @router.get("/public-key")
    def public_key(log: Log) -> dict[str, str]:
        key = log.public_key
        return {"key_id": key.key_id, "public_key": key.b64, "pem": key.pem()}

    return router


def _signed_size(conn: Any) -> int:
    head = latest_tree_head(conn)
    return 0 if head is None else head.tree_size


def _proof(make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return make()
    except AuditRangeError as exc:
        raise HTTPException(404, str(exc)) from exc
    except VerificationError as exc:
        raise HTTPException(500, f"the stored log is damaged: {exc}") from exc


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise HTTPException(422, "times need a zone (e.g. 2026-11-20T12:00:00Z)")
    return moment
