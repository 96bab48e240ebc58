"""Fixtures of the consent tests: a registry over the test store with a clock the test moves."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from governance.consent.registry import ConsentRegistry
from tests.governance.protect.support import Clock, keyring, sqlite_engine  # noqa: F401  (a fixture)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(engine: Engine, clock: Clock) -> ConsentRegistry:
    return ConsentRegistry(engine, keyring(engine), clock=clock)
