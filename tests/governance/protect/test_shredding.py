"""Crypto-shredding and master key rotation, on SQLite and PostgreSQL.

The claim under test (docs/protection.md): once a subject is erased, nothing of theirs decrypts — not
from the live database, and not from a copy of the database taken before the erasure, even for someone
who also holds the master key and the current keystore.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from governance.config import Settings
from governance.protect.errors import DecryptionError, KeyConfigurationError, ProtectionError, SubjectErasedError
from governance.protect.fieldcrypt import FieldProtector, ProtectionPlan
from governance.protect.keystore import SubjectKeystore
from governance.protect.pseudonym import Pseudonyms
from governance.protect.rotation import rewrap_all, versions_in_use
from governance.protect.subject_keys import SubjectKeys
from governance.protect.tables import SubjectKey
from governance.store.db import create_db_engine, init_schema
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import KEY_V1, KEY_V2, keyring, observation, observed

TABLE = SubjectKey.__table__  # type: ignore[attr-defined]


def _protector(engine: Engine, settings: Settings, *versions: tuple[int, bytes]) -> FieldProtector:
    ring = keyring(engine, *versions)
    return FieldProtector(Pseudonyms(ring), SubjectKeys(engine, ring.master, SubjectKeystore.from_settings(settings)))


def _reveal(protector: FieldProtector, rows: list[dict[str, Any]], plan: ProtectionPlan, start: int) -> list[Any]:
    return protector.reveal(rows, fields=plan.encrypt, subject_property=plan.subject_property,
                            observed_at=[observed(start + i) for i in range(len(rows))])


def _store(protector: FieldProtector, plan: ProtectionPlan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    alice = protector.protect([observation(i, resident="R-A", hub="H-A") for i in range(3)], plan,
                              observed_at=[observed(i) for i in range(3)])
    bob = protector.protect([observation(i, resident="R-B", hub="H-B") for i in range(3, 5)], plan,
                            observed_at=[observed(i) for i in range(3, 5)])
    return alice, bob


def test_erasure_defeats_a_database_copy_taken_before_it(
    engine: Engine, settings: Settings, protector: FieldProtector, plan: ProtectionPlan
) -> None:
    alice, bob = _store(protector, plan)
    subject = protector.pseudonyms.of("urn:ngsi-ld:Person:R-A")
    with engine.connect() as conn:  # the backup: every key row as it was before the erasure
        backup = dict(conn.execute(select(TABLE).where(TABLE.c.subject == subject)).one()._mapping)
    assert backup["wrapped_key"] is not None
    assert len(_reveal(protector, alice, plan, 0)) == 3  # control: before erasure it all opens

    result = protector.shred("urn:ngsi-ld:Person:R-A", at=FIXED_NOW)
    assert result.had_key and result.had_secret

    with pytest.raises(DecryptionError):
        _reveal(protector, alice, plan, 0)
    assert [r["numValue"] for r in _reveal(protector, bob, plan, 3)] == [72, 72]  # others unaffected

    # restore the backed-up row into the database: the master key and current keystore still cannot open it
    with engine.begin() as conn:
        conn.execute(update(TABLE).where(TABLE.c.subject == subject)
                     .values(wrapped_key=backup["wrapped_key"], destroyed_at=None))
    fresh = _protector(engine, settings)  # a new process, nothing cached
    for reader in (protector, fresh):
        with pytest.raises(DecryptionError):
            _reveal(reader, alice, plan, 0)
        with pytest.raises(DecryptionError):
            _reveal(reader, alice[:1], plan, 0)
    # nor can anyone who unwraps by hand with the master key and no secret, or a guessed one
    for secret in (b"", b"\x00" * 32):
        with pytest.raises(DecryptionError):
            fresh.subject_keys.master.open(backup["key_version"], backup["wrapped_key"],
                                           f"citygov/subject-key|{subject}|kek-v1".encode(),
                                           label="citygov/v1/subject-key-wrap", secret=secret)


def test_a_sqlite_file_copied_before_erasure_stays_closed(tmp_path: Path, plan: ProtectionPlan) -> None:
    live = tmp_path / "live.db"
    engine = create_db_engine(f"sqlite:///{live}")
    init_schema(engine)
    settings = Settings(data_dir=tmp_path / "data")
    protector = _protector(engine, settings)
    alice, bob = _store(protector, plan)
    engine.dispose()  # checkpoint the WAL so that the file copy is complete
    shutil.copyfile(live, tmp_path / "backup.db")
    engine = create_db_engine(f"sqlite:///{live}")
    _protector(engine, settings).shred("urn:ngsi-ld:Person:R-A")
    engine.dispose()

    old = create_db_engine(f"sqlite:///{tmp_path / 'backup.db'}")
    try:
        from_backup = _protector(old, settings)
        status = from_backup.subject_keys.status(from_backup.pseudonyms.of("urn:ngsi-ld:Person:R-A"))
        assert status is not None and status["destroyed_at"] is None  # the copy predates the erasure
        with pytest.raises(DecryptionError):
            _reveal(from_backup, alice, plan, 0)
        assert len(_reveal(from_backup, bob, plan, 3)) == 2
    finally:
        old.dispose()


def test_after_erasure_nothing_new_is_written_and_a_tombstone_remains(
    engine: Engine, settings: Settings, protector: FieldProtector, plan: ProtectionPlan
) -> None:
    _store(protector, plan)
    subject = protector.pseudonyms.of("urn:ngsi-ld:Person:R-A")
    path = protector.subject_keys.keystore.path(subject)
    assert path.exists()
    protector.shred(subject, at=FIXED_NOW)
    assert not path.exists()
    status = protector.subject_keys.status(subject)
    assert status is not None and status["destroyed_at"] is not None
    with engine.connect() as conn:
        assert conn.execute(select(TABLE.c.wrapped_key).where(TABLE.c.subject == subject)).scalar_one() is None
    with pytest.raises(SubjectErasedError):
        protector.protect([observation(9, resident="R-A")], plan, observed_at=[observed(9)])
    again = protector.shred(subject)
    assert not again.had_key and not again.had_secret  # idempotent
    never = protector.shred("urn:ngsi-ld:Person:R-NEVER")
    assert not never.had_key
    with pytest.raises(SubjectErasedError):  # erased before any data: still nothing is written
        protector.protect([observation(9, resident="R-NEVER")], plan, observed_at=[observed(9)])


def test_a_lost_keystore_secret_fails_closed_and_is_never_replaced(
    engine: Engine, protector: FieldProtector, plan: ProtectionPlan
) -> None:
    alice, _ = _store(protector, plan)
    subject = protector.pseudonyms.of("urn:ngsi-ld:Person:R-A")
    protector.subject_keys.keystore.path(subject).unlink()
    with pytest.raises(DecryptionError):
        _reveal(protector, alice, plan, 0)
    with pytest.raises(ProtectionError, match="cannot be unwrapped"):
        protector.protect([observation(9, resident="R-A")], plan, observed_at=[observed(9)])
    assert not protector.subject_keys.keystore.path(subject).exists()


def test_a_keystore_file_readable_by_others_is_refused(
    protector: FieldProtector, plan: ProtectionPlan
) -> None:
    _store(protector, plan)
    path = protector.subject_keys.keystore.path(protector.pseudonyms.of("urn:ngsi-ld:Person:R-A"))
    path.chmod(0o644)
    with pytest.raises(KeyConfigurationError, match="readable by others"):
        protector.protect([observation(9, resident="R-A")], plan, observed_at=[observed(9)])


def test_rotation_new_writes_use_the_new_version_old_data_stays_readable_then_moves(
    engine: Engine, settings: Settings, plan: ProtectionPlan
) -> None:
    v1 = _protector(engine, settings)
    alice = v1.protect([observation(0, resident="R-A")], plan, observed_at=[observed(0)])
    ring = keyring(engine, (1, KEY_V1), (2, KEY_V2))
    both = FieldProtector(Pseudonyms(ring), SubjectKeys(engine, ring.master, SubjectKeystore.from_settings(settings)))
    bob = both.protect([observation(1, resident="R-B")], plan, observed_at=[observed(1)])
    assert versions_in_use(ring) == {1: 2, 2: 1}  # the pseudonym key and Alice on v1; Bob on v2
    assert _reveal(both, alice, plan, 0)[0]["numValue"] == 72  # old data readable under v1
    report = rewrap_all(ring, both.subject_keys)
    assert report["rewrapped"] == 1 and report["stored_keys"] == 1 and report["unusable"] == []
    assert report["remaining"] == {2: 3}
    v2_only = _protector(engine, settings, (2, KEY_V2))  # v1 retired
    assert _reveal(v2_only, alice, plan, 0)[0]["numValue"] == 72
    assert _reveal(v2_only, bob, plan, 1)[0]["numValue"] == 72
    assert alice[0]["refResident"] == v2_only.pseudonyms.of("urn:ngsi-ld:Person:R-A")  # pseudonyms unchanged


def test_rewrap_reports_keys_it_cannot_move_and_leaves_them(
    engine: Engine, settings: Settings, plan: ProtectionPlan
) -> None:
    v1 = _protector(engine, settings)
    v1.protect([observation(0, resident="R-A")], plan, observed_at=[observed(0)])
    subject = v1.pseudonyms.of("urn:ngsi-ld:Person:R-A")
    v1.subject_keys.keystore.path(subject).unlink()
    both = _protector(engine, settings, (1, KEY_V1), (2, KEY_V2))
    report = both.subject_keys.rewrap()
    assert report.rewrapped == 0 and report.unusable == [subject]
    assert both.subject_keys.status(subject)["key_version"] == 1  # type: ignore[index]
