"""Fixtures of the protection tests: a keyring over the test store, a field protector, a plain SQLite store."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from governance.catalog import default_catalog
from governance.config import Settings
from governance.protect.fieldcrypt import FieldProtector, ProtectionPlan
from governance.protect.keyring import Keyring
from governance.protect.keystore import SubjectKeystore
from governance.protect.pseudonym import Pseudonyms
from governance.protect.subject_keys import SubjectKeys
from tests.governance.protect.support import Clock, keyring, sqlite_engine  # noqa: F401  (a fixture)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ring(engine: Engine) -> Keyring:
    return keyring(engine)


@pytest.fixture
def protector(engine: Engine, settings: Settings, ring: Keyring, clock: Clock) -> FieldProtector:
    keys = SubjectKeys(engine, ring.master, SubjectKeystore.from_settings(settings), clock=clock)
    return FieldProtector(Pseudonyms(ring), keys)


@pytest.fixture
def plan() -> ProtectionPlan:
    found = ProtectionPlan.from_schema(default_catalog().get("ResidentObservation"))
    assert found is not None
    return found
