"""The one audit entry of each API request: what was asked, by whom, what was decided and released.

Entries hold references only — counts, field names, hashes, ids — never records, token contents or
query values (a query string can hold a subject id). A request that failed authentication is an
``auth.failed`` entry with the precise reason; everything else is a ``data.request`` entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from governance.api.auth import Caller, SignedRequestError
from governance.api.errors import ErrorReply
from governance.audit.entries import Action, AuditEvent

ANONYMOUS = "anonymous"
_MAX_NAME = 128


@dataclass(frozen=True)
class RequestFacts:
    """Where a request went: its id, method and path (the query string is left out on purpose)."""

    request_id: str
    method: str
    path: str

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> RequestFacts:
        return cls(scope["state"]["request_id"], scope["method"], scope["path"][:256])

    def refs(self, status: int, body: bytes, body_sha256: str | None = None) -> dict[str, Any]:
        """``body_sha256``: the body's hex SHA-256 when the caller already has it."""
        return {"request_id": self.request_id, "method": self.method, "path": self.path, "status": status,
                "response_sha256": body_sha256 or hashlib.sha256(body).hexdigest(), "response_bytes": len(body)}


def auth_failed_event(facts: RequestFacts, failure: SignedRequestError, status: int, body: bytes) -> AuditEvent:
    refs = facts.refs(status, body)
    refs["detail"] = failure.detail
    if failure.claimed.kid:
        refs["kid"] = failure.claimed.kid
    if failure.claimed.key_owner:
        refs["key_owner"] = failure.claimed.key_owner
    return AuditEvent(actor=ANONYMOUS, action=Action.AUTH_FAILED, decision="unauthenticated",
                      reasons=[failure.reason], refs=refs)


def rejection_event(facts: RequestFacts, reply: ErrorReply, body: bytes) -> AuditEvent:
    """A request refused before anyone was authenticated (a body over the limit)."""
    return AuditEvent(actor=ANONYMOUS, action=Action.DATA_REQUEST, decision=reply.decision, reasons=[reply.code],
                      refs=facts.refs(reply.status, body))


def request_event(
    facts: RequestFacts,
    caller: Caller,
    *,
    status: int,
    body: bytes,
    body_sha256: str | None = None,
    query: Any | None = None,
    result: Any | None = None,
    reply: ErrorReply | None = None,
    stage: str | None = None,
    dataset: str | None = None,
    purpose: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """The ``data.request`` entry of an authenticated request: allowed (``result``) or not (``reply``)."""
    refs = facts.refs(status, body, body_sha256)
    refs.update({"kid": caller.kid, "jti": caller.jti})
    if query is not None:
        refs.update({
            "format": getattr(query, "format", None),
            "aggregate": getattr(query, "aggregate", None) is not None,
            "agreement": _name(getattr(query, "agreement", None)),
            "break_glass": bool(getattr(query, "break_glass", False)),
            "requested_fields": list(getattr(query, "fields", []) or []),
            "page_size": getattr(query, "page_size", None),
            "cursor": getattr(query, "cursor", None) is not None,
        })
        dataset = _name(getattr(query, "dataset", None))
        purpose = _name(getattr(query, "purpose", None))
    policy_revision = None
    if result is not None:
        refs.update({
            "records": len(result.records), "fields": list(result.fields), "decision_id": result.decision_id,
            "obligations": list(result.obligations), "suppressed": result.suppressed,
            "epsilon_spent": result.epsilon_spent, "next_page": result.next_cursor is not None,
        })
        stage, policy_revision = result.stage, result.policy_revision
    else:
        refs["records"] = 0
    if reply is not None and reply.decision_id is not None:
        refs["decision_id"] = reply.decision_id
    refs.update(extra or {})
    return AuditEvent(
        actor=caller.actor, action=Action.DATA_REQUEST, stage=stage, dataset=dataset, purpose=purpose,
        decision="allow" if reply is None else reply.decision,
        reasons=list(reply.reasons or (reply.code,)) if reply is not None else [],
        policy_revision=policy_revision, refs=refs,
    )


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_NAME else None
