"""One pseudonym per person across the layer: the log names subjects as the keyring, the registry and the store do."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from governance.audit.entries import AuditEvent
from governance.audit.keys import LogKeys
from governance.audit.log import AuditLog
from governance.audit.observer import ConsentAuditor
from governance.audit.query import EntryFilter, find_entries, subject_report
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.errors import ConfigurationError
from governance.protect.keyring import Keyring
from governance.protect.pseudonym import Pseudonyms, is_pseudonym
from tests.governance.audit.conftest import StepClock, request
from tests.governance.protect.support import KEY_V1, b64

RESIDENT = "urn:ngsi-ld:Person:R-55812"


def test_subjects_are_the_keyrings_pseudonyms_given_raw_or_pseudonymized(
    engine: Engine, settings: Settings, clock: StepClock
) -> None:
    keyring = Keyring.from_settings(settings, engine)
    log = AuditLog.open(engine, settings.data_dir, clock=clock, keyring=keyring)
    pseudonym = Pseudonyms(keyring).of(RESIDENT)
    log.append([request(1, subjects=[RESIDENT]), request(2, subjects=[pseudonym]),
                request(3, subjects=[RESIDENT, pseudonym])])
    with engine.connect() as conn:
        entries = find_entries(conn, EntryFilter(subject=pseudonym))
    assert [e.fields["subjects"] for e in entries] == [[pseudonym]] * 3
    assert all(RESIDENT.encode() not in e.data and b"R-55812" not in e.data for e in entries)
    legacy = LogKeys.load(settings.data_dir).pseudonymize(RESIDENT)
    assert all(legacy.encode() not in e.data for e in entries)  # the log's own subject key is no longer used
    assert log.pseudonymize(RESIDENT) == log.pseudonymize(pseudonym) == pseudonym


def test_a_log_opened_from_settings_agrees_with_the_keyring_of_those_settings(
    engine: Engine, settings: Settings
) -> None:
    keyed = settings.model_copy(update={"master_key": SecretStr(b64(KEY_V1)), "dev_mode": False})
    expected = Pseudonyms(Keyring.from_settings(keyed, engine)).of(RESIDENT)
    log = AuditLog.open(engine, settings.data_dir, settings=keyed)
    assert log.pseudonymize(RESIDENT) == expected


def test_without_a_master_key_pseudonyms_are_found_but_raw_ids_cannot_be_named(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = AuditLog.open(engine, settings.data_dir, settings=settings)
    writer.append([request(2, subjects=[RESIDENT]), request(3)])
    pseudonym = writer.pseudonymize(RESIDENT)
    monkeypatch.delenv("CITYGOV_MASTER_KEY", raising=False)
    no_key = settings.model_copy(update={"dev_mode": False})
    auditor = AuditLog.open(engine, settings.data_dir, settings=no_key)  # opening needs no master key
    assert auditor.pseudonymize(pseudonym) == pseudonym
    with engine.connect() as conn:
        assert subject_report(conn, auditor.pseudonymize(pseudonym))["events"] == 1
    with pytest.raises(ConfigurationError) as caught:
        auditor.pseudonymize(RESIDENT)
    assert "master key" in str(caught.value)
    auditor.append([request(4)])  # entries without subjects still go in


def test_one_lookup_finds_a_persons_consent_changes_and_other_entries(
    engine: Engine, settings: Settings, data_dir: Path, clock: StepClock
) -> None:
    keyring = Keyring.from_settings(settings, engine)
    log = AuditLog.open(engine, data_dir, clock=clock, keyring=keyring)
    registry = ConsentRegistry(engine, keyring, on_change=ConsentAuditor(log))
    granted = registry.grant({"subject_id": RESIDENT, "controller": "City Social Care", "purposes": ["care.alerting"],
                              "collection_method": "paper form"}, actor="clerk:anna")
    registry.withdraw(granted.consent.consent_id, actor="clerk:anna")
    log.append([AuditEvent(actor="adapter:care-hub", action="ingest.batch", stage="collection",
                           subjects=[RESIDENT])])
    with engine.connect() as conn:
        report = subject_report(conn, log.pseudonymize(RESIDENT))
    assert [e["action"] for e in report["entries"]] == ["consent.change", "consent.change", "ingest.batch"]
    assert [e["decision"] for e in report["entries"][:2]] == ["grant", "withdraw"]
    assert is_pseudonym(report["subject"]) and report["subject"] == granted.consent.subject
    assert b"R-55812" not in orjson.dumps(report)
