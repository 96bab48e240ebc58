"""The repositories on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from governance.errors import NotFoundError
from governance.store import entities, ledger, quarantine
from tests.conftest import FIXED_NOW


def _entity_row(n: int, fingerprint: str = "f" * 64) -> dict[str, object]:
    return {
        "entity_id": f"urn:ngsi-ld:Streetlight:L-{n}",
        "entity_type": "Streetlight",
        "dataset": "lighting.streetlight",
        "observed_at": FIXED_NOW + timedelta(minutes=n),
        "data": {"id": f"urn:ngsi-ld:Streetlight:L-{n}", "type": "Streetlight", "powerState": "on", "n": n},
        "adapter": "streetlight-json",
        "adapter_version": "1.0.0",
        "source": "test",
        "received_at": FIXED_NOW,
        "stored_at": FIXED_NOW,
        "raw_sha256": "a" * 64,
        "message_fingerprint": fingerprint,
        "removed_fields": ["plate"] if n == 0 else [],
    }


def _quarantine_row(reason: str, payload: bytes = b"\xff{") -> dict[str, object]:
    return {
        "fingerprint": reason.ljust(64, "0")[:64],
        "adapter": "care-hub",
        "adapter_version": "1.0.0",
        "config_ref": None,
        "source": "hubs.jsonl:3",
        "topic": "care/H-1",
        "context": {"line": 3},
        "received_at": FIXED_NOW,
        "quarantined_at": FIXED_NOW,
        "step": "parse",
        "reason": reason,
        "detail": "why",
        "field": None,
        "payload": payload,
        "payload_size": len(payload),
        "payload_sha256": "b" * 64,
        "payload_truncated": False,
        "status": "open",
        "attempts": 1,
    }


def test_ledger_knows_what_it_has_seen(engine: Engine) -> None:
    with engine.begin() as conn:
        ledger.add_messages(conn, [
            {"fingerprint": f"{i:064d}", "adapter": "a", "status": "stored", "received_at": FIXED_NOW,
             "entity_count": 1}
            for i in range(2000)
        ])
    with engine.connect() as conn:
        found = ledger.known_fingerprints(conn, [f"{i:064d}" for i in range(1990, 2010)])
    assert sorted(found) == [f"{i:064d}" for i in range(1990, 2000)]
    assert set(found.values()) == {"stored"}


def test_ledger_refuses_a_second_row_for_a_fingerprint(engine: Engine) -> None:
    row = {"fingerprint": "1" * 64, "adapter": "a", "status": "stored", "received_at": FIXED_NOW, "entity_count": 0}
    with engine.begin() as conn:
        ledger.add_messages(conn, [row])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        ledger.add_messages(conn, [row])


def test_entities_round_trip_with_json_and_utc(engine: Engine) -> None:
    with engine.begin() as conn:
        entities.add_entities(conn, [_entity_row(n) for n in range(5)])
    rows = list(entities.iter_entities(engine, entity_type="Streetlight", page=2))
    assert [r["data"]["n"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["removed_fields"] == ["plate"]
    assert rows[3]["observed_at"] == FIXED_NOW + timedelta(minutes=3)
    assert entities.count_entities(engine, "Streetlight") == 5
    assert entities.counts_by_type(engine) == {"Streetlight": 5}


def test_quarantine_keeps_raw_bytes_and_filters(engine: Engine) -> None:
    with engine.begin() as conn:
        quarantine.add_quarantined(conn, [_quarantine_row("invalid_json"), _quarantine_row("unknown_event")])
    rows = quarantine.list_quarantined(engine, quarantine.QuarantineFilter(reason="invalid_json"))
    assert len(rows) == 1
    assert rows[0]["payload"] == b"\xff{"
    assert rows[0]["context"] == {"line": 3}
    assert quarantine.counts_by_reason(engine) == {"invalid_json": 1, "unknown_event": 1}
    pk = rows[0]["pk"]
    with engine.begin() as conn:
        quarantine.mark_failed_again(conn, pk, step="validate", reason="schema_violation", detail="d", field="x")
    again = quarantine.get_quarantined(engine, pk)
    assert (again["reason"], again["attempts"], again["status"]) == ("schema_violation", 2, "open")
    with engine.begin() as conn:
        quarantine.mark_resolved(conn, pk, FIXED_NOW)
    assert quarantine.get_quarantined(engine, pk)["status"] == "resolved"
    assert quarantine.counts_by_reason(engine) == {"unknown_event": 1}


def test_missing_quarantine_record_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFoundError, match="#999"):
        quarantine.get_quarantined(engine, 999)
