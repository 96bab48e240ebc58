"""Fixtures of the API tests: an app over the test store (SQLite and PostgreSQL) with a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from governance.config import Settings
from governance.store.db import create_db_engine, init_schema
from tests.governance.api.support import ApiHarness, StandInQueryService, harness
from tests.governance.protect.support import Clock, settings_with_key


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings_with_key(settings, dev_mode=False)


@pytest.fixture
def api(api_settings: Settings, engine: Engine, clock: Clock) -> Iterator[ApiHarness]:
    yield from harness(api_settings, engine, clock, StandInQueryService())


@pytest.fixture
def second_engine(api_settings: Settings) -> Iterator[Engine]:
    """Another engine (its own connection pool) on the same database: what a second server process has."""
    eng = create_db_engine(api_settings.resolved_database_url())
    init_schema(eng)
    yield eng
    eng.dispose()
