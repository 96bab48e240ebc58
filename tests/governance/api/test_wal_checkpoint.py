"""The server checkpoints SQLite's WAL in a thread of its own (``governance.api.checkpoint``), so that no request's
commit runs a whole checkpoint on the event loop; nothing of it on PostgreSQL. (SQLite and PostgreSQL.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from governance.api.app import create_app
from governance.api.checkpoint import WalCheckpointer, needs_checkpointer
from governance.audit.verify import verify_log
from governance.config import Settings
from governance.store.db import SQLITE_CHECKPOINT_BYTES, create_db_engine
from tests.governance.api.support import audit_entries, register, stand_in_backend
from tests.governance.protect.support import Clock

BODY = b'{"dataset":"lighting.streetlight","purpose":"energy","fields":["id"],"page_size":3}'
ROWS, ROW_BYTES = 64, 4000
"""What the test writes (256 KB): far less than ``wal_autocheckpoint`` (64 MiB), so no commit checkpoints it."""
GROWN = ROWS * ROW_BYTES


def _database_file(engine: Engine) -> Path:
    return Path(str(engine.url.database))


def _grow(engine: Engine) -> None:
    """Commit ``GROWN`` new bytes: their pages go to the WAL; the database file grows only once they are copied."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS wal_probe (payload BLOB)"))
        for _ in range(ROWS):
            conn.execute(text("INSERT INTO wal_probe (payload) VALUES (randomblob(:n))"), {"n": ROW_BYTES})


def _wait_until(condition: object, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_the_server_checkpoints_the_wal_while_it_runs_and_stops_with_it(
        api_settings: Settings, engine: Engine, clock: Clock) -> None:
    app = create_app(api_settings, backend=stand_in_backend(), engine=engine, clock=clock)
    state = app.state.api
    if engine.dialect.name != "sqlite":
        assert state.checkpointer is None  # PostgreSQL checkpoints by itself, off every connection
        return
    checkpointer = state.checkpointer
    assert checkpointer is not None and not checkpointer.running
    assert GROWN < SQLITE_CHECKPOINT_BYTES // 16
    checkpointer.interval = 0.02
    database = _database_file(engine)
    with TestClient(app) as client:
        assert checkpointer.running
        energy = register(state.registry, "energy", clock=clock)
        size = database.stat().st_size
        _grow(engine)
        # the pages reach the database file without any commit having crossed wal_autocheckpoint
        assert _wait_until(lambda: database.stat().st_size >= size + GROWN)
        # requests answered meanwhile are whole and audited, the log verifies
        for _ in range(5):
            signed = energy.signer.headers("POST", "http://testserver/v1/data/query", BODY)
            assert client.post("/v1/data/query", content=BODY, headers=signed).status_code == 200
    assert not checkpointer.running  # stopped with the app
    entries = audit_entries(state.audit)
    assert verify_log(engine, state.audit.public_key).entries == entries[-1]["seq"] + 1


def test_without_the_checkpointer_the_same_pages_stay_in_the_wal(api_settings: Settings, engine: Engine) -> None:
    """The other side of the test above: what the thread changes (the pages would wait for a commit's
    checkpoint, on the event loop)."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    database = _database_file(engine)
    size = database.stat().st_size
    _grow(engine)
    assert database.stat().st_size < size + GROWN
    checkpointer = WalCheckpointer(engine)
    try:
        busy, frames, copied = checkpointer.checkpoint()
    finally:
        checkpointer.close()
    assert busy == 0 and frames > 0 and copied == frames
    assert database.stat().st_size >= size + GROWN


def test_only_a_sqlite_file_gets_a_checkpointer(api_settings: Settings, engine: Engine) -> None:
    assert needs_checkpointer(engine) is (engine.dialect.name == "sqlite")
    memory = create_db_engine("sqlite://")
    try:
        assert not needs_checkpointer(memory)
    finally:
        memory.dispose()
