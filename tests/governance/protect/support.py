"""Shared helpers of the protection and consent tests: fixed master keys, a keyring, sample entities."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, event

from governance.config import Settings
from governance.consent import tables as consent_tables  # noqa: F401  (registers consent tables)
from governance.protect import tables as protect_tables  # noqa: F401  (registers protect tables)
from governance.protect.keyring import Keyring
from governance.protect.masterkey import MasterKeys
from governance.store.db import create_db_engine, init_schema
from tests.conftest import FIXED_NOW

KEY_V1 = bytes(range(32))
KEY_V2 = bytes(range(100, 132))
KEY_OTHER = bytes(range(200, 232))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def master(*versions: tuple[int, bytes]) -> MasterKeys:
    return MasterKeys(dict(versions or [(1, KEY_V1)]), source="test")


def keyring(engine: Engine, *versions: tuple[int, bytes]) -> Keyring:
    return Keyring(master(*versions), engine, clock=lambda: FIXED_NOW)


def settings_with_key(settings: Settings, key: str | None = None, **changes: Any) -> Settings:
    """The fixture's settings with a master key (a fresh object: Settings is immutable in spirit)."""
    return settings.model_copy(update={"master_key": SecretStr(key or b64(KEY_V1)), **changes})


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """For tests about keys and formats rather than storage: SQLite only, fast."""
    eng = create_db_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    init_schema(eng)
    yield eng
    eng.dispose()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = FIXED_NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now = self.now + timedelta(**delta)
        return self.now


def observation(n: int, resident: str = "R-55812", hub: str = "H-1029", value: float = 72) -> dict[str, Any]:
    """A ResidentObservation as the care-hub adapter makes it (real ids, plaintext)."""
    return {
        "id": f"urn:ngsi-ld:ResidentObservation:{hub}-heartRate-{n}",
        "type": "ResidentObservation",
        "observationType": "heartRate",
        "numValue": value,
        "unitCode": "5K",
        "confidence": 0.98,
        "refResident": f"urn:ngsi-ld:Person:{resident}",
        "refDevice": f"urn:ngsi-ld:Device:{hub}",
        "dateObserved": (FIXED_NOW + timedelta(minutes=n)).isoformat(),
    }


def observed(n: int) -> datetime:
    return FIXED_NOW + timedelta(minutes=n)


def keystore_dir(settings: Settings) -> Path:
    return settings.keystore_dir or settings.data_dir / "keys" / "subjects"


@contextmanager
def statements(engine: Engine, containing: str = "") -> Iterator[list[str]]:
    """The SQL statements (containing ``containing``) that run on ``engine`` while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if containing in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
