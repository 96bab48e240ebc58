"""Access and erasure for one data subject, on SQLite and PostgreSQL, with real keys and sealed rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from governance.audit.entries import AuditEvent
from governance.audit.query import EntryFilter, find_entries
from governance.catalog import default_catalog
from governance.config import Settings
from governance.protect.errors import SubjectErasedError
from governance.protect.fieldcrypt import ProtectionPlan
from governance.subject.rights import ENTITY, QUARANTINE, SubjectRights
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import Clock, observation, observed
from tests.governance.retention.support import entity_row, insert, quarantine_row

RESIDENT, OTHER = "urn:ngsi-ld:Person:R-55812", "urn:ngsi-ld:Person:R-60344"
SEALED_FIELDS = ("numValue", "confidence", "observationType", "dateObserved")


@pytest.fixture
def rights(engine: Engine, settings: Settings) -> SubjectRights:
    return SubjectRights(engine, settings, clock=Clock(FIXED_NOW + timedelta(days=1)))


def store_observations(
    rights: SubjectRights, engine: Engine, resident: str, hub: str, ns: range
) -> list[dict[str, Any]]:
    plan = ProtectionPlan.from_schema(default_catalog().get("ResidentObservation"))
    assert plan is not None
    originals = [observation(n, resident=resident.rsplit(":", 1)[1], hub=hub, value=60 + n) for n in ns]
    times = [observed(n) for n in ns]
    sealed = rights.protector.protect(originals, plan, observed_at=times)
    insert(engine, [entity_row(n, dataset="care.observation", entity_type="ResidentObservation", entity_id=s["id"],
                               observed_at=t, data=s, subject=s["refResident"], retain_until=t + timedelta(days=30))
                    for n, s, t in zip(ns, sealed, times, strict=True)])
    return originals


def store_quarantine(rights: SubjectRights, engine: Engine) -> dict[str, int]:
    """Rows that name the resident (sealed JSON, a plain CSV line) and rows that do not; pk by label."""
    labels: dict[int, str] = {}
    rows = []
    for n, (label, payload, sealed, adapter) in enumerate([
        ("sealed-mine", b'{"hub": "H-1029", "resident": "R-55812", "event": "medication_taken"}', True, "care-hub"),
        ("plain-mine", b"R-55812;72;2026-11-20T08:00", False, "department-csv"),
        ("sealed-other", b'{"hub": "H-2201", "resident": "R-60344", "event": "x"}', True, "care-hub"),
        ("broken-other", b'{"hub":"H-2201","resident":"R-60344","ev', True, "care-hub"),
        ("no-subject", b'{"hub": "H-1029", "event": "door_open"}', True, "care-hub"),
    ]):
        row = quarantine_row(n, adapter=adapter, sealed=sealed, retain_until=FIXED_NOW + timedelta(days=30))
        if sealed:  # the resident's own message under their key (as the pipeline seals it), the rest shared
            hint = "urn:ngsi-ld:Person:R-55812" if label == "sealed-mine" else None
            result = rights.vault.seal(payload, row["fingerprint"], subject_id=hint)
            row["payload"], row["subject"] = result.blob, result.subject
        else:
            row["payload"], row["subject"] = payload, None
        rows.append(row)
        labels[n] = label
    insert(engine, quarantined=rows)
    with engine.connect() as conn:
        pks = conn.execute(select(QUARANTINE.c.pk).order_by(QUARANTINE.c.pk)).scalars().all()
    return {labels[i]: pk for i, pk in enumerate(pks)}


def grant(rights: SubjectRights, subject: str, purpose: str = "care.monitoring") -> str:
    result = rights.consents.grant({"subject_id": subject, "controller": "City Social Care", "purposes": [purpose],
                                    "collection_method": "paper form"}, actor="clerk:anna")
    return result.consent.consent_id


@pytest.fixture
def world(rights: SubjectRights, engine: Engine) -> dict[str, Any]:
    mine = store_observations(rights, engine, RESIDENT, "H-1029", range(5))
    theirs = store_observations(rights, engine, OTHER, "H-2201", range(10, 13))
    active, withdrawn = grant(rights, RESIDENT), grant(rights, RESIDENT, "care.alerting")
    rights.consents.withdraw(withdrawn, actor="clerk:anna")
    grant(rights, OTHER)
    quarantine = store_quarantine(rights, engine)
    return {"mine": mine, "theirs": theirs, "active": active, "withdrawn": withdrawn, "quarantine": quarantine}


def test_export_is_everything_about_the_subject_decrypted_and_audited(
    rights: SubjectRights, engine: Engine, world: dict[str, Any]
) -> None:
    rights.audit.append([rights_event(RESIDENT)])
    exported = rights.export("R-55812", actor="clerk:anna")
    pseudonym = rights.pseudonyms.of(RESIDENT)
    assert exported["subject"]["pseudonym"] == pseudonym and exported["subject"]["key"]["destroyed_at"] is None

    entities = exported["entities"]
    assert len(entities) == len(world["mine"]) and all(e["readable"] for e in entities)
    for entity, original in zip(entities, world["mine"], strict=True):
        assert {k: entity["data"][k] for k in SEALED_FIELDS} == {k: original[k] for k in SEALED_FIELDS}
        assert entity["data"]["refResident"] == pseudonym and entity["dataset"] == "care.observation"
    assert "enc:v1:" not in orjson.dumps(entities).decode()

    consents = {c["consent_id"]: c for c in exported["consents"]}
    assert set(consents) == {world["active"], world["withdrawn"]}
    assert consents[world["withdrawn"]]["status_now"] == "withdrawn"
    for consent in consents.values():
        assert len(consent["receipts"]) == len(consent["history"])
        for receipt in consent["receipts"]:
            assert rights.consents.verify_receipt(receipt["receipt"])["sub"] == pseudonym

    assert sorted(q["id"] for q in exported["quarantine"]) == sorted(
        world["quarantine"][k] for k in ("sealed-mine", "plain-mine"))
    assert "payload" not in exported["quarantine"][0]
    assert [e["action"] for e in exported["access_history"]["entries"]][-1] == "data.request"

    by_pseudonym = rights.export(pseudonym, actor="clerk:anna")
    assert by_pseudonym["counts"] == {**exported["counts"], "audit_entries": exported["counts"]["audit_entries"] + 1}
    assert by_pseudonym["subject"]["id"] is None  # the first export is in the subject's history now
    with engine.connect() as conn:
        audited = find_entries(conn, EntryFilter(action="subject.export"))
    assert [e.fields["subjects"] for e in audited] == [[pseudonym]] * 2
    assert audited[0].fields["refs"]["entities"] == len(world["mine"])
    assert all(b"R-55812" not in e.data for e in audited)


def test_erasure_shreds_deletes_withdraws_and_audits_once_without_the_id(
    rights: SubjectRights, engine: Engine, settings: Settings, world: dict[str, Any]
) -> None:
    pseudonym = rights.pseudonyms.of(RESIDENT)
    report = rights.erase(RESIDENT, actor="dpo:maria", batch_size=2)
    assert report.subject == pseudonym and report.key_destroyed and report.secret_destroyed
    assert report.entities == {"care.observation": len(world["mine"])}
    assert report.quarantine == {"care-hub": 1, "department-csv": 1} and report.consents_withdrawn == 1

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ENTITY).where(ENTITY.c.subject == pseudonym)).scalar() == 0
        left = set(conn.execute(select(QUARANTINE.c.pk)).scalars())
        erasures = find_entries(conn, EntryFilter(action="erasure"))
    assert left == {world["quarantine"][k] for k in ("sealed-other", "broken-other", "no-subject")}
    assert all(c.status == "withdrawn" for c in rights.consents.find(subject_id=RESIDENT))
    [entry] = erasures
    assert entry.fields["subjects"] == [pseudonym] and entry.fields["refs"]["entities"] == dict(report.entities)
    assert b"R-55812" not in entry.data and b"H-1029" not in entry.data

    others = rights.export(OTHER, actor="clerk:anna")  # everyone else is untouched and still opens
    assert others["counts"]["entities"] == len(world["theirs"]) and all(e["readable"] for e in others["entities"])
    assert [e["data"]["numValue"] for e in others["entities"]] == [o["numValue"] for o in world["theirs"]]

    with pytest.raises(SubjectErasedError):
        rights.protector.protect([world["mine"][0]], ProtectionPlan.from_schema(  # type: ignore[arg-type]
            default_catalog().get("ResidentObservation")), observed_at=[observed(0)])

    again = SubjectRights(engine, settings).erase("R-55812", actor="dpo:maria")
    assert (again.total, again.key_destroyed, again.consents_withdrawn) == (0, False, 0)
    after = rights.export(RESIDENT, actor="dpo:maria")
    assert after["counts"]["entities"] == 0 and after["counts"]["quarantine"] == 0
    assert after["subject"]["key"]["destroyed_at"] is not None


def test_rows_left_under_a_destroyed_key_are_listed_unreadable_never_as_ciphertext(
    rights: SubjectRights, world: dict[str, Any]
) -> None:
    rights.protector.shred(RESIDENT)  # e.g. a batch that committed just after an erasure's delete
    exported = rights.export(RESIDENT, actor="clerk:anna")
    assert exported["counts"]["unreadable"] == len(world["mine"])
    assert not any(e["readable"] for e in exported["entities"])
    assert "enc:v1:" not in orjson.dumps(exported).decode()


def rights_event(subject: str) -> AuditEvent:
    return AuditEvent(actor="department:social-care", action="data.request", stage="use", dataset="care.observation",
                      purpose="care.monitoring", decision="allow", subjects=[subject])
