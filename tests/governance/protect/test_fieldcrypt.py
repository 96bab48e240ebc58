"""Field encryption on SQLite and PostgreSQL: round trips, binding to row and field, one key lookup a batch."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from governance.catalog import default_catalog
from governance.config import Settings
from governance.errors import InvalidRecordError
from governance.protect.errors import DecryptionError, ProtectionError
from governance.protect.fieldcrypt import PREFIX, FieldProtector, ProtectionPlan, field_aad, is_sealed
from governance.protect.keystore import SubjectKeystore
from governance.protect.pseudonym import Pseudonyms
from governance.protect.subject_keys import SubjectKeys
from governance.protect.tables import SubjectKey
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import keyring, observation, observed, statements


def _reveal(protector: FieldProtector, rows: list[dict[str, Any]], plan: ProtectionPlan,
            times: list[Any] | None = None, fields: Any = None) -> list[dict[str, Any]]:
    return protector.reveal(rows, fields=plan.encrypt if fields is None else fields,
                            subject_property=plan.subject_property,
                            observed_at=times if times is not None else [observed(i) for i in range(len(rows))])


def test_the_schema_plan_pseudonymizes_identifiers_and_encrypts_personal_fields(plan: ProtectionPlan) -> None:
    assert plan.subject_property == "refResident"
    assert plan.pseudonymize == {"id", "refDevice"}
    assert {"numValue", "observationType", "confidence"} <= plan.encrypt
    assert "unitCode" not in plan.encrypt and "type" not in plan.encrypt
    # the observation time is stored in the clear (the observed_at column holds it anyway), never sealed
    assert "dateObserved" not in plan.encrypt and "dateObserved" not in plan.pseudonymize
    alert = ProtectionPlan.from_schema(default_catalog().get("Alert"))
    assert alert is not None and {"severity", "category", "description"} <= alert.encrypt
    assert "dateIssued" not in alert.encrypt
    assert ProtectionPlan.from_schema(default_catalog().get("AirQualityObserved")) is None  # no data subject


def test_round_trip_leaves_no_personal_value_in_the_stored_form(
    protector: FieldProtector, plan: ProtectionPlan
) -> None:
    entities = [observation(i, value=60 + i) for i in range(3)]
    originals = json.dumps(entities)
    stored = protector.protect(entities, plan, observed_at=[observed(i) for i in range(3)])
    assert json.dumps(entities) == originals  # inputs untouched
    text = json.dumps(stored)
    for secret in ("R-55812", "H-1029", "heartRate"):
        assert secret not in text
    assert [row["dateObserved"] for row in stored] == [e["dateObserved"] for e in entities]  # in the clear
    for original, row in zip(entities, stored, strict=True):
        assert all(is_sealed(row[name]) for name in plan.encrypt & original.keys())
    assert all(is_sealed(row["numValue"]) and row["numValue"].startswith(PREFIX) for row in stored)
    assert stored[0]["unitCode"] == "5K" and stored[0]["type"] == "ResidentObservation"
    revealed = _reveal(protector, stored, plan)
    for original, back in zip(entities, revealed, strict=True):
        for name in plan.encrypt & original.keys():
            assert back[name] == original[name]
        assert back["refResident"] == protector.pseudonyms.of(original["refResident"])
        assert back["refDevice"] == protector.pseudonyms.of(original["refDevice"])
        assert back["id"] == protector.pseudonyms.of(original["id"])


def test_only_the_fields_asked_for_are_decrypted(protector: FieldProtector, plan: ProtectionPlan) -> None:
    stored = protector.protect([observation(0)], plan, observed_at=[observed(0)])
    [row] = _reveal(protector, stored, plan, fields={"numValue"})
    assert row["numValue"] == 72
    assert is_sealed(row["confidence"]) and is_sealed(row["observationType"])


def _swap(rows: list[dict[str, Any]], a: tuple[int, str], b: tuple[int, str]) -> list[dict[str, Any]]:
    out = [dict(r) for r in rows]
    out[a[0]][a[1]], out[b[0]][b[1]] = rows[b[0]][b[1]], rows[a[0]][a[1]]
    return out


def _flipped(token: str) -> str:
    """``token`` with its last two base64 characters changed (never to what they were: that would change nothing)."""
    tail = "AA" if token[-2:] != "AA" else "BA"
    return token[:-2] + tail


def test_values_cannot_be_moved_between_rows_fields_times_or_subjects(
    protector: FieldProtector, plan: ProtectionPlan
) -> None:
    entities = [observation(0), observation(1), observation(2, resident="R-2", hub="H-2")]
    times = [observed(0), observed(1), observed(2)]
    stored = protector.protect(entities, plan, observed_at=times)
    _reveal(protector, stored, plan, times)  # the untouched batch opens
    messages = set()
    tampered_cases: list[tuple[list[dict[str, Any]], list[Any]]] = [
        (_swap(stored, (0, "numValue"), (1, "numValue")), times),  # two rows of one subject
        (_swap(stored, (0, "numValue"), (0, "confidence")), times),  # two fields of one row
        (_swap(stored, (0, "numValue"), (2, "numValue")), times),  # two subjects
        (stored, [observed(1), observed(0), observed(2)]),  # same rows, other observation times
        ([{**stored[0], "id": stored[1]["id"]}, *stored[1:]], times),  # a row given another row's id
        ([{**stored[0], "numValue": _flipped(stored[0]["numValue"])}, *stored[1:]], times),  # bit flip
        ([{**stored[0], "numValue": 72}, *stored[1:]], times),  # plaintext slipped in where ciphertext belongs
        ([{**stored[0], "numValue": PREFIX + "!!"}, *stored[1:]], times),  # garbage
    ]
    for rows, when in tampered_cases:
        with pytest.raises(DecryptionError) as caught:
            _reveal(protector, rows, plan, when)
        messages.add(str(caught.value))
    assert messages == {"a protected value cannot be decrypted"}  # one opaque failure, whatever the cause


def test_one_key_lookup_per_batch_whatever_its_size(
    engine: Engine, protector: FieldProtector, plan: ProtectionPlan
) -> None:
    entities = [observation(i, resident=f"R-{i % 3}", hub=f"H-{i % 3}") for i in range(300)]
    times = [observed(i) for i in range(300)]
    protector.protect(entities[:3], plan, observed_at=times[:3])  # creates the 3 subject keys
    with statements(engine) as seen:
        stored = protector.protect(entities, plan, observed_at=times)
        revealed = _reveal(protector, stored, plan, times)
    key_queries = [s for s in seen if "subject_key" in s]
    assert len(key_queries) == 2, key_queries  # one SELECT for protect, one for reveal
    assert [r["numValue"] for r in revealed] == [e["numValue"] for e in entities]


def test_concurrent_first_writes_for_one_subject_agree_on_one_key(
    engine: Engine, settings: Settings, plan: ProtectionPlan
) -> None:
    results: list[list[dict[str, Any]]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def write(n: int) -> None:
        ring = keyring(engine)  # a keyring per worker, as separate processes would have
        keys = SubjectKeys(engine, ring.master, SubjectKeystore.from_settings(settings))
        mine = FieldProtector(Pseudonyms(ring), keys)
        barrier.wait()
        try:
            results.append(mine.protect([observation(n)], plan, observed_at=[observed(n)]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6
    ring = keyring(engine)
    reader = FieldProtector(Pseudonyms(ring), SubjectKeys(engine, ring.master, SubjectKeystore.from_settings(settings)))
    by_id = {row[0]["id"]: row[0] for row in results}
    rows = [by_id[reader.pseudonyms.of(observation(n)["id"])] for n in range(6)]
    # every worker's values open with the one key that was kept
    assert len(_reveal(reader, rows, plan, [observed(n) for n in range(6)])) == 6
    with engine.connect() as conn:
        assert len(conn.execute(select(SubjectKey.__table__)).all()) == 1  # type: ignore[attr-defined]


def test_an_entity_without_subject_is_refused_and_nothing_is_returned(
    protector: FieldProtector, plan: ProtectionPlan
) -> None:
    bad = {k: v for k, v in observation(1).items() if k != "refResident"}
    with pytest.raises(InvalidRecordError) as caught:
        protector.protect([observation(0), bad], plan, observed_at=[observed(0), observed(1)])
    assert caught.value.reason == "missing_subject" and caught.value.field == "refResident"


def test_times_must_be_aware_and_one_per_entity(protector: FieldProtector, plan: ProtectionPlan) -> None:
    with pytest.raises(ProtectionError):
        protector.protect([observation(0)], plan, observed_at=[])
    with pytest.raises(ProtectionError):
        protector.protect([observation(0)], plan, observed_at=[FIXED_NOW.replace(tzinfo=None)])
    assert field_aad("a", None, "f", "s") != field_aad("a", FIXED_NOW, "f", "s")
    assert field_aad("a", FIXED_NOW, "f", "s") == field_aad("a", FIXED_NOW.astimezone(), "f", "s")
    assert field_aad("a", FIXED_NOW, "f", "s") != field_aad("a", FIXED_NOW + timedelta(microseconds=1), "f", "s")
    assert field_aad("ab", None, "c", "s") != field_aad("a", None, "bc", "s")  # parts are length-prefixed


@pytest.mark.parametrize(
    ("subject", "encrypt", "pseudonymize"),
    [("refResident", {"refResident"}, set()), ("refResident", {"id"}, set()),
     ("refResident", {"a"}, {"a"}), ("refResident", {"type"}, set())],
)
def test_inconsistent_plans_are_refused(subject: str, encrypt: set[str], pseudonymize: set[str]) -> None:
    with pytest.raises(ProtectionError):
        ProtectionPlan(subject_property=subject, encrypt=frozenset(encrypt), pseudonymize=frozenset(pseudonymize))
