"""Rows as the pipeline stores them, for retention and subject-rights tests (written through the repositories)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from governance.store.entities import add_entities
from governance.store.quarantine import add_quarantined
from tests.conftest import FIXED_NOW


def entity_row(
    n: int,
    *,
    dataset: str = "lighting.streetlight",
    entity_type: str = "Streetlight",
    entity_id: str | None = None,
    observed_at: datetime | None = None,
    retain_until: datetime | None = None,
    data: dict[str, Any] | None = None,
    subject: str | None = None,
    source: str = "capture.jsonl",
) -> dict[str, Any]:
    observed = observed_at or FIXED_NOW + timedelta(minutes=n)
    return {
        "entity_id": entity_id or f"urn:ngsi-ld:{entity_type}:L-{n % 3}",
        "entity_type": entity_type,
        "dataset": dataset,
        "observed_at": observed,
        "data": data if data is not None else {"id": f"urn:ngsi-ld:{entity_type}:L-{n % 3}", "type": entity_type,
                                                "powerConsumption": 10.0 + n, "status": "ok"},
        "adapter": "streetlight-json",
        "adapter_version": "1.0.0",
        "source": f"{source}:{n}",
        "received_at": observed + timedelta(seconds=1),
        "stored_at": observed + timedelta(seconds=2),
        "raw_sha256": hashlib.sha256(str(n).encode()).hexdigest(),
        "message_fingerprint": hashlib.sha256(f"m{n}".encode()).hexdigest(),
        "removed_fields": [],
        "subject": subject,
        "retain_until": retain_until,
        "policy_revision": "r-test",
    }


def quarantine_row(
    n: int, *, adapter: str = "care-hub", retain_until: datetime | None = None, payload: bytes = b"{}",
    sealed: bool = False, status: str = "open",
) -> dict[str, Any]:
    return {
        "fingerprint": hashlib.sha256(f"q{n}".encode()).hexdigest(),
        "adapter": adapter,
        "adapter_version": "1.0.0",
        "config_ref": None,
        "source": f"capture.jsonl:{n}",
        "topic": None,
        "context": {"line": n},
        "received_at": FIXED_NOW,
        "quarantined_at": FIXED_NOW,
        "step": "parse",
        "reason": "invalid_json",
        "detail": "payload is not valid JSON",
        "field": None,
        "payload": payload,
        "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_truncated": False,
        "status": status,
        "attempts": 1,
        "resolved_at": None,
        "sealed": sealed,
        "retain_until": retain_until,
    }


def insert(engine: Engine, entities: Sequence[dict[str, Any]] = (), quarantined: Sequence[dict[str, Any]] = ()) -> None:
    with engine.begin() as conn:
        add_entities(conn, list(entities))
        add_quarantined(conn, list(quarantined))
