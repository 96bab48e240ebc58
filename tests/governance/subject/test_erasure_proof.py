"""Proof of erasure: the care-hub sample feed through the governed pipeline, one resident erased, then

(a) the raw bytes of the SQLite database file and its write-ahead log, and
(b) a dump of every PostgreSQL table (``COPY … TO STDOUT``)

hold neither the resident's id nor any of their values in plaintext; and (c) a copy of the database taken
*before* the erasure, opened with the current keystore and master key, decrypts nothing of theirs.

The resident's "values" are taken from the feed itself: their ids, the times of their events (as sent and as
a database writes a UTC instant) and each number they sent, as a JSON member or as a validation message
quotes it.
"""

from __future__ import annotations

import base64
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, MetaData, Table, select, text
from sqlmodel import SQLModel

from adapters.base import adapter_class
from governance.assembly import build_pipeline
from governance.catalog import default_catalog
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.ingest.message import entity_urn
from governance.protect.errors import DecryptionError
from governance.protect.fieldcrypt import FieldProtector, is_sealed
from governance.protect.keyring import Keyring
from governance.protect.pseudonym import Pseudonyms
from governance.protect.quarantine import QuarantineVault
from governance.retention.wipe import truncate_wal
from governance.store.db import create_db_engine, init_schema, scratch_schema
from governance.store.entities import as_utc
from governance.subject.rights import erase
from tests.conftest import FIXED_NOW, POSTGRES_URL

FEED = Path(__file__).resolve().parents[3] / "adapters" / "samples" / "care-hub" / "messages.jsonl"
VICTIM = "R-55812"
RESIDENTS = ("R-55812", "R-60344", "R-41907")
INGESTED_AT = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
ERASED_AT = INGESTED_AT + timedelta(days=1)


def feed_messages() -> list[dict[str, Any]]:
    """The feed's payloads that are JSON objects, with their envelope."""
    out = []
    for line in FEED.read_bytes().splitlines():
        try:
            envelope = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        payload = envelope.get("payload")
        if "payload_b64" in envelope:
            try:
                payload = orjson.loads(base64.b64decode(envelope["payload_b64"]))
            except (orjson.JSONDecodeError, ValueError):
                payload = None
        if isinstance(payload, dict):
            out.append({**envelope, "payload": payload})
    return out


def victim_needles() -> set[bytes]:
    """Byte strings that would give the erased resident away, all computed from what their hub sent."""
    needles = {VICTIM, entity_urn("Person", VICTIM)}
    mine = [m["payload"] for m in feed_messages() if m["payload"].get("resident") == VICTIM]
    assert len(mine) >= 5
    for payload in mine:
        at = payload.get("at")
        if isinstance(at, str):
            needles.add(at)
            instant = datetime.fromisoformat(at).astimezone(UTC)
            needles |= {instant.strftime("%Y-%m-%dT%H:%M:%S"), instant.strftime("%Y-%m-%d %H:%M:%S")}
        for key, value in payload.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                for name in {key, "numValue"} if key == "value" else {key}:
                    needles |= {f'"{name}": {value}', f'"{name}":{value}', f"'{name}' is {value}"}
    return {n.encode() for n in needles}


def ingest(engine: Engine, settings: Settings) -> None:
    registry = ConsentRegistry.from_settings(settings, engine, clock=lambda: FIXED_NOW - timedelta(days=30))
    for resident in RESIDENTS:
        registry.grant({"subject_id": entity_urn("Person", resident), "controller": "City Social Care",
                        "purposes": ["care.monitoring"], "legal_basis": "explicit-consent",
                        "special_categories": ["health"], "collection_method": "paper form"}, actor="clerk:anna")
    pipeline = build_pipeline(engine, settings, clock=lambda: INGESTED_AT)
    feed = adapter_class("care-hub").from_config_file(None)
    report = pipeline.ingest(feed, feed.read(FEED, received_at=INGESTED_AT, max_bytes=settings.max_payload_bytes))
    assert report.accepted >= 6 and report.by_type.get("ResidentObservation", 0) >= 2


def victim_rows(engine: Engine, settings: Settings) -> list[dict[str, Any]]:
    pseudonym = Pseudonyms(Keyring.from_settings(settings, engine)).of(entity_urn("Person", VICTIM))
    entity = SQLModel.metadata.tables["entity"]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(entity).where(entity.c.subject == pseudonym))]


def sealed_fields(rows: list[dict[str, Any]]) -> set[str]:
    return {k for row in rows for k, v in row["data"].items() if is_sealed(v)}


def reveal(protector: FieldProtector, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return protector.reveal([r["data"] for r in rows], fields=sealed_fields(rows), subject_property="refResident",
                            observed_at=[as_utc(r["observed_at"]) for r in rows])


def found(dump: bytes, needles: set[bytes]) -> set[bytes]:
    return {n for n in needles if n in dump}


@pytest.fixture
def proof_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"quality_checks": False})


@pytest.fixture
def sqlite_store(tmp_path: Path, data_dir: Path) -> Iterator[tuple[Engine, Settings, Path]]:
    path = tmp_path / "city.db"
    config = Settings(data_dir=data_dir, database_url=f"sqlite:///{path}", quality_checks=False)
    engine = create_db_engine(config.resolved_database_url())
    init_schema(engine)
    yield engine, config, path
    engine.dispose()


def sqlite_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def test_a_sqlite_file_keeps_no_trace_and_an_older_copy_opens_nothing(
    sqlite_store: tuple[Engine, Settings, Path], tmp_path: Path
) -> None:
    engine, config, path = sqlite_store
    ingest(engine, config)
    needles = victim_needles()
    before = victim_rows(engine, config)
    assert before and sealed_fields(before)
    assert found(sqlite_bytes(path), needles), "the dump must be able to see plaintext (times are columns)"

    backup = tmp_path / "backup-before-erasure.db"
    with sqlite3.connect(path) as source, sqlite3.connect(backup) as target:
        source.backup(target)  # an operator's backup, taken the day before the erasure
    report = erase(engine, config, VICTIM, actor="dpo:maria", clock=lambda: ERASED_AT)
    assert report.key_destroyed and sum(report.entities.values()) == len(before)

    engine.dispose()
    assert found(sqlite_bytes(path), needles) == set()  # (a)

    old = create_db_engine(f"sqlite:///{backup}")
    try:
        old_rows = victim_rows(old, config)
        assert len(old_rows) == len(before)
        with pytest.raises(DecryptionError):  # (c)
            reveal(FieldProtector.from_settings(config, old), old_rows)
        others = [r for r in _all_entities(old) if r["subject"] and r["subject"] != old_rows[0]["subject"]]
        assert reveal(FieldProtector.from_settings(config, old), others)  # the copy itself is sound
    finally:
        old.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_postgresql_dump_keeps_no_trace_and_an_older_copy_opens_nothing(
    engine: Engine, proof_settings: Settings
) -> None:
    ingest(engine, proof_settings)
    needles = victim_needles()
    before = victim_rows(engine, proof_settings)
    assert before and found(pg_dump(engine), needles)
    with scratch_schema(POSTGRES_URL, "bk") as backup_url:
        old = create_db_engine(backup_url)
        try:
            init_schema(old)
            copy_tables(engine, old)  # a dump restored elsewhere, taken before the erasure
            erase(engine, proof_settings, VICTIM, actor="dpo:maria", clock=lambda: ERASED_AT)
            assert found(pg_dump(engine), needles) == set()  # (b)
            old_rows = victim_rows(old, proof_settings)
            assert len(old_rows) == len(before)
            with pytest.raises(DecryptionError):  # (c)
                reveal(FieldProtector.from_settings(proof_settings, old), old_rows)
        finally:
            old.dispose()


def test_an_older_copy_opens_none_of_their_quarantined_messages(
    sqlite_store: tuple[Engine, Settings, Path], tmp_path: Path
) -> None:
    engine, config, path = sqlite_store
    ingest(engine, config)
    backup = tmp_path / "backup.db"
    truncate_wal(engine)
    shutil.copyfile(path, backup)
    erase(engine, config, VICTIM, actor="dpo:maria", clock=lambda: ERASED_AT)
    old = create_db_engine(f"sqlite:///{backup}")
    try:
        # the strongest holder: the old copy, the master key and today's keystore
        keyring = Keyring.from_settings(config, old)
        vault = QuarantineVault(keyring, default_catalog(), retention_days=config.quarantine_retention_days,
                                protector=FieldProtector.from_settings(config, old, keyring=keyring))
        quarantine = Table("quarantine", MetaData(), autoload_with=old)
        with old.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(quarantine).where(quarantine.c.sealed.is_(True)))]
        victim = keyring_pseudonym(keyring, VICTIM)
        theirs = [row for row in rows if row["subject"] == victim]
        assert theirs, "the copy holds quarantined messages of the resident, sealed under their key"
        opened = []
        for row in rows:
            try:
                opened.append(vault.open_row(row)["payload"])
            except DecryptionError:
                continue
        assert len(opened) == len(rows) - len(theirs)  # everyone else's still open: the test can fail
        assert not [p for p in opened if VICTIM.encode() in p]
    finally:
        old.dispose()


def test_their_hub_id_is_gone_too(sqlite_store: tuple[Engine, Settings, Path]) -> None:
    engine, config, path = sqlite_store
    ingest(engine, config)
    hubs = {m["payload"]["hub"] for m in feed_messages() if m["payload"].get("resident") == VICTIM}
    erase(engine, config, VICTIM, actor="dpo:maria", clock=lambda: ERASED_AT)
    engine.dispose()
    assert found(sqlite_bytes(path), {h.encode() for h in hubs}) == set()


def keyring_pseudonym(keyring: Keyring, subject: str) -> str:
    from governance.protect.pseudonym import Pseudonyms

    return Pseudonyms(keyring).subject_ref(subject_urn_of(subject))


def subject_urn_of(subject: str) -> str:
    return subject if subject.startswith("urn:") else f"urn:ngsi-ld:Person:{subject}"


def _all_entities(engine: Engine) -> list[dict[str, Any]]:
    entity = SQLModel.metadata.tables["entity"]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(entity))]


def pg_dump(engine: Engine) -> bytes:
    """Every table of the store's schema, as ``COPY … TO STDOUT`` writes it (times in UTC)."""
    out = bytearray()
    with engine.connect() as conn:
        conn.execute(text("SET TIME ZONE 'UTC'"))
        tables = conn.execute(text("SELECT table_name FROM information_schema.tables "
                                   "WHERE table_schema = current_schema() ORDER BY table_name")).scalars().all()
        assert "entity" in tables and "quarantine" in tables and "audit_entry" in tables
        cursor: Any = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for table in tables:
            with cursor.copy(f'COPY "{table}" TO STDOUT') as copy:
                for chunk in copy:
                    out += bytes(chunk)
        cursor.close()
    return bytes(out)


def copy_tables(source: Engine, target: Engine) -> None:
    with source.connect() as read, target.begin() as write:
        for table in SQLModel.metadata.sorted_tables:
            rows = [dict(r._mapping) for r in read.execute(select(table))]
            if rows:
                write.execute(table.insert(), rows)
