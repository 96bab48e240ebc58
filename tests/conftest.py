"""Shared fixtures: a store on SQLite and on PostgreSQL, settings in a temporary data directory.

Set ``CITYGOV_REQUIRE_SERVICES=1`` (CI does) to make a missing PostgreSQL or MQTT broker fail the run
instead of skipping the tests that need it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import pytest
from sqlalchemy import Engine, create_engine, text

from governance.config import Settings
from governance.store.db import create_db_engine, init_schema, scratch_schema

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

POSTGRES_URL = os.environ.get("CITYGOV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MQTT_URL = os.environ.get("CITYGOV_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
REQUIRE_SERVICES = os.environ.get("CITYGOV_REQUIRE_SERVICES", "") not in ("", "0", "false")

FIXED_NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)


def _unavailable(what: str, why: str) -> None:
    message = f"{what} unavailable ({why})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; CITYGOV_REQUIRE_SERVICES is set, so this is a failure, not a skip")
    pytest.skip(message)


def postgres_available() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        return str(exc).splitlines()[0]
    return None


def mqtt_available() -> str | None:
    parsed = urlparse(MQTT_URL)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 1883), timeout=2):
            return None
    except OSError as exc:
        return str(exc)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "citygov-data"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    problem = postgres_available()
    if problem:
        _unavailable("PostgreSQL", problem)
    with scratch_schema(POSTGRES_URL, "t") as url:
        yield url


@pytest.fixture
def settings(data_dir: Path, database_url: str) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, batch_size=500)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = create_db_engine(settings.resolved_database_url())
    init_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def mqtt_url() -> str:
    problem = mqtt_available()
    if problem:
        _unavailable("MQTT broker", problem)
    return MQTT_URL
