"""Sealing a batch column by column, and the subject keys of a batch read once.

The batch path of ``FieldProtector.protect`` must produce, value by value, exactly the documented format
(``enc:v1:`` + base64url(nonce ‖ AES-256-GCM(JSON, AAD))), which every reader opens with ``open_value`` and
``field_aad``; it must raise the same errors, for the same first entity, as the entity-by-entity path; and
``SubjectKeys.lookup`` reads a batch's keys once without creating any, so the storage step needs one
``subject_key`` query per batch however many groups (types, field sets) the batch has.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from adapters.care_hub import CareHubAdapter
from governance.assembly import build_pipeline
from governance.config import Settings
from governance.errors import InvalidRecordError
from governance.ingest.sources import read_capture_lines
from governance.protect import fieldcrypt
from governance.protect.errors import ProtectionError, SubjectErasedError
from governance.protect.fieldcrypt import NONCE_BYTES, PREFIX, FieldProtector, ProtectionPlan, field_aad, open_value
from governance.protect.tables import SubjectKey
from tests.conftest import FIXED_NOW
from tests.governance.ingest.test_pipeline import capture, care_event
from tests.governance.protect.support import keystore_dir, observation, observed, statements
from tests.governance.protect.test_step import _consent, _rows

_TOKEN = re.compile(r"^enc:v1:[A-Za-z0-9_-]+$")
_SUBJECT_KEY = SubjectKey.__table__  # type: ignore[attr-defined]


def _raw(token: str) -> bytes:
    body = token[len(PREFIX):]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def _mixed_batch(count: int) -> tuple[list[dict[str, Any]], list[datetime | None]]:
    """Entities that take every branch of the batch path: fields absent, odd JSON values, no time, two ids."""
    entities: list[dict[str, Any]] = []
    times: list[datetime | None] = []
    values: list[Any] = [72, 0.5, -3, "heartRate", "Zürich ✓ \"quoted\"", [1, "two", None], {"a": {"b": 1}},
                         True, None, ""]
    for n in range(count):
        entity = observation(n, resident=f"R-{n % 7}", hub=f"H-{n % 5}")
        entity["numValue"] = values[n % len(values)]
        if n % 3 == 0:
            del entity["confidence"]  # some rows of a column lack the field
        if n % 11 == 4:
            del entity["refDevice"]  # an identifier absent ...
        if n % 13 == 6:
            entity["refDevice"] = None  # ... or null: both stay as they are
        entities.append(entity)
        times.append(None if n % 17 == 0 else observed(n) + timedelta(microseconds=n))
    return entities, times


def test_every_value_of_a_batch_opens_with_the_documented_format(
    protector: FieldProtector, plan: ProtectionPlan
) -> None:
    count = 2 * fieldcrypt._BLOCK + 5  # several blocks, the last one short
    entities, times = _mixed_batch(count)
    originals = orjson.dumps(entities)
    stored = protector.protect(entities, plan, observed_at=times)
    assert orjson.dumps(entities) == originals  # inputs untouched
    keys = protector.subject_keys.data_keys({row["refResident"] for row in stored}, create=False)
    nonces: set[bytes] = set()
    sealed = 0
    for original, row, when in zip(entities, stored, times, strict=True):
        assert row["refResident"] == protector.pseudonyms.of(original["refResident"])
        assert row["id"] == protector.pseudonyms.of(original["id"])
        if "refDevice" not in original:
            assert "refDevice" not in row
        elif original["refDevice"] is None:
            assert row["refDevice"] is None
        else:
            assert row["refDevice"] == protector.pseudonyms.of(original["refDevice"])
        assert set(row) == set(original)
        for name in plan.encrypt & original.keys():
            token = row[name]
            assert isinstance(token, str) and _TOKEN.match(token), token  # url-safe alphabet, no padding
            raw = _raw(token)
            assert len(raw) == NONCE_BYTES + len(orjson.dumps(original[name])) + 16
            aad = field_aad(row["id"], when, name, row["refResident"])  # the reference associated data
            assert open_value(keys[row["refResident"]], token, aad) == original[name]
            nonces.add(raw[:NONCE_BYTES])
            sealed += 1
    assert sealed > 2 * count and len(nonces) == sealed  # a fresh nonce for every value


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        ([("refDevice", 7), ("refResident", None)], "not_an_identifier", "refDevice must be a string"),
        ([("refResident", None), ("refDevice", 7)], "missing_subject", "entity 1 has no refResident"),
        ([("refResident", ""), ("id", ["a"])], "missing_subject", "entity 1 has no refResident"),
        ([("id", {"x": 1}), ("refResident", 3)], "not_an_identifier", "id must be a string"),
        ([("refDevice", None), ("refResident", 3)], "missing_subject", "entity 2 has no refResident"),
    ],
)
def test_the_first_bad_entity_in_order_decides_the_error(
    protector: FieldProtector, plan: ProtectionPlan, bad: list[tuple[str, Any]], reason: str, detail: str
) -> None:
    entities = [observation(0), observation(1), observation(2)]
    for index, (name, value) in enumerate(bad, start=1):
        if value is None and name == "refResident":
            del entities[index][name]
        else:
            entities[index][name] = value
    with pytest.raises(InvalidRecordError) as caught:
        protector.protect(entities, plan, observed_at=[observed(i) for i in range(3)])
    assert caught.value.reason == reason
    assert caught.value.detail.startswith(detail)


def test_a_naive_time_anywhere_in_a_batch_is_refused(protector: FieldProtector, plan: ProtectionPlan) -> None:
    times: list[datetime | None] = [observed(i) for i in range(5)]
    times[3] = FIXED_NOW.replace(tzinfo=None)
    with pytest.raises(ProtectionError):
        protector.protect([observation(i) for i in range(5)], plan, observed_at=times)


def test_a_lookup_reads_the_keys_of_a_batch_once_and_creates_none(
    engine: Engine, settings: Settings, protector: FieldProtector, plan: ProtectionPlan
) -> None:
    live, erased, lost = (f"urn:ngsi-ld:Person:R-{n}" for n in (1, 2, 3))
    protector.protect([observation(0, resident="R-1"), observation(1, resident="R-2"),
                       observation(2, resident="R-3")], plan, observed_at=[observed(0), observed(1), observed(2)])
    protector.shred(erased)
    pseudonym = protector.pseudonyms.of
    (keystore_dir(settings) / f"{_secret_name(settings, pseudonym(lost))}").unlink()  # a lost keystore secret
    fresh = pseudonym("urn:ngsi-ld:Person:R-4")
    with engine.connect() as conn:
        rows_before = conn.execute(select(func.count()).select_from(_SUBJECT_KEY)).scalar_one()
    files_before = sorted(keystore_dir(settings).iterdir())
    with statements(engine, "subject_key") as seen:
        found = protector.subject_keys.lookup({pseudonym(live), pseudonym(erased), pseudonym(lost), fresh})
    assert len(seen) == 1 and seen[0].lstrip().upper().startswith("SELECT")
    assert set(found.keys) == {pseudonym(live)}
    assert found.erased == {pseudonym(erased)}
    assert found.unusable == {pseudonym(lost)}
    assert found.missing == {fresh}
    assert "psn:v1:" not in repr(found)  # counts only
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(_SUBJECT_KEY)).scalar_one() == rows_before
    assert sorted(keystore_dir(settings).iterdir()) == files_before
    with pytest.raises(ProtectionError):
        protector.subject_keys.lookup({"urn:ngsi-ld:Person:R-1"})  # by pseudonym only


def _secret_name(settings: Settings, subject: str) -> str:
    from governance.protect.keystore import SubjectKeystore

    return SubjectKeystore.from_settings(settings).path(subject).name


def test_known_keys_are_used_and_only_missing_subjects_are_looked_up(
    engine: Engine, protector: FieldProtector, plan: ProtectionPlan
) -> None:
    entities = [observation(i, resident=f"R-{i % 3}") for i in range(30)]
    times = [observed(i) for i in range(30)]
    first = protector.protect(entities, plan, observed_at=times)  # creates the three keys
    subjects = {row["refResident"] for row in first}
    found = protector.subject_keys.lookup(subjects)
    with statements(engine, "subject_key") as seen:
        again = protector.protect(entities, plan, observed_at=times, known=found.keys)
    assert seen == []  # every key was handed in: no query at all
    opened = protector.reveal(again, fields={"numValue"}, subject_property="refResident", observed_at=times)
    assert [row["numValue"] for row in opened] == [e["numValue"] for e in entities]
    newcomer = [observation(99, resident="R-99")]
    with statements(engine, "subject_key") as seen:
        protector.protect(entities + newcomer, plan, observed_at=[*times, observed(99)], known=found.keys)
    assert any("INSERT" in s.upper() for s in seen)  # the new subject's key is made
    assert sum(1 for s in seen if s.lstrip().upper().startswith("SELECT")) == 1  # for it alone
    protector.shred("urn:ngsi-ld:Person:R-5")
    with pytest.raises(SubjectErasedError):  # a subject not handed in is checked as ever
        protector.protect([observation(0, resident="R-5")], plan, observed_at=[observed(0)], known=found.keys)


def test_the_storage_step_reads_subject_keys_once_per_batch(engine: Engine, settings: Settings,
                                                            tmp_path: Path) -> None:
    _consent(settings, engine, 1, 2)
    pipeline = build_pipeline(engine, settings, clock=lambda: FIXED_NOW)

    def ingest(name: str, minute: int) -> None:
        events = [care_event(1, at=f"2026-11-20T03:{minute:02d}:00+01:00"),
                  care_event(2, at=f"2026-11-20T03:{minute + 1:02d}:00+01:00"),
                  care_event(1, event="fall_detected", value=None, at=f"2026-11-20T03:{minute + 2:02d}:00+01:00"),
                  care_event(2, confidence=None, at=f"2026-11-20T03:{minute + 3:02d}:00+01:00")]
        path = capture(tmp_path / name, events)
        report = pipeline.ingest(CareHubAdapter(), read_capture_lines(path, received_at=FIXED_NOW, max_bytes=100_000))
        assert report.accepted == 4, report

    ingest("first.jsonl", 10)  # the residents' keys are made here
    with statements(engine, "subject_key") as seen:
        ingest("second.jsonl", 20)  # three groups: observations with and without confidence, an alert
    assert len(seen) == 1, seen
    rows = _rows(engine)
    assert len(rows) == 8 and len({r["entity_type"] for r in rows}) == 2
    assert len({frozenset(r["data"]) for r in rows}) >= 3  # type: ignore[arg-type]


def test_in_place_protection_gives_what_a_copy_gives_and_copies_on_the_slow_path(
    protector: FieldProtector, plan: ProtectionPlan
) -> None:
    """``copy=False`` (the storage step) changes the batch's own dicts; a batch the fast path does not take,
    or one that raises, is worked on copies as before."""
    entities = [observation(n, resident=f"R-{n % 3}", value=60 + n) for n in range(7)]
    originals = [dict(entity) for entity in entities]
    times = [observed(n) for n in range(7)]
    out = protector.protect(entities, plan, observed_at=times, copy=False)
    assert all(a is b for a, b in zip(out, entities, strict=True))
    keys = protector.subject_keys.data_keys({row["refResident"] for row in out}, create=False)
    for row, original, when in zip(out, originals, times, strict=True):
        assert row["refResident"] == protector.pseudonyms.of(original["refResident"])
        assert row["id"] == protector.pseudonyms.of(original["id"])
        for name in plan.encrypt & original.keys():
            aad = field_aad(row["id"], when, name, row["refResident"])
            assert open_value(keys[row["refResident"]], row[name], aad) == original[name]
    bad = [observation(0), observation(1)]
    bad[1]["refDevice"] = 7
    originals = orjson.dumps(bad)
    with pytest.raises(InvalidRecordError):
        protector.protect(bad, plan, observed_at=[observed(0), observed(1)], copy=False)
    assert orjson.dumps(bad) == originals  # the entity-by-entity path raised on copies
