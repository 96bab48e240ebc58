"""``citygov retention``, ``citygov subject`` and ``citygov keys`` end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from governance.catalog import default_catalog
from governance.cli.main import app
from governance.config import Settings
from governance.protect.fieldcrypt import FieldProtector, ProtectionPlan
from governance.protect.masterkey import MasterKeys
from governance.store.db import create_db_engine, init_schema
from tests.governance.protect.support import KEY_V1, b64, observation, observed
from tests.governance.retention.support import entity_row, insert

runner = CliRunner()
RESIDENT = "urn:ngsi-ld:Person:R-55812"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "master.keys"
    path.write_text(f"v1:{b64(KEY_V1)}\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, key_file: Path) -> Settings:
    monkeypatch.setenv("CITYGOV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CITYGOV_DATABASE_URL", database_url)
    monkeypatch.setenv("CITYGOV_MASTER_KEY_FILE", str(key_file))
    monkeypatch.delenv("CITYGOV_MASTER_KEY", raising=False)
    monkeypatch.setenv("CITYGOV_DEV_MODE", "false")
    return Settings()


@pytest.fixture
def cli_engine(env: Settings) -> Iterator[Engine]:
    engine = create_db_engine(env.resolved_database_url())
    init_schema(engine)
    yield engine
    engine.dispose()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def stored_observations(env: Settings, engine: Engine, resident: str, ns: range) -> list[dict[str, Any]]:
    plan = ProtectionPlan.from_schema(default_catalog().get("ResidentObservation"))
    assert plan is not None
    originals = [observation(n, resident=resident) for n in ns]
    sealed = FieldProtector.from_settings(env, engine).protect(originals, plan, observed_at=[observed(n) for n in ns])
    insert(engine, [entity_row(n, dataset="care.observation", entity_type="ResidentObservation", entity_id=s["id"],
                               observed_at=observed(n), data=s, subject=s["refResident"],
                               retain_until=datetime.now(UTC) + timedelta(days=30))
                    for n, s in zip(ns, sealed, strict=True)])
    return originals


def test_retention_status_dry_run_and_sweep(env: Settings, cli_engine: Engine) -> None:
    past, future = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=2)
    insert(cli_engine, [entity_row(n, retain_until=past) for n in range(4)]
           + [entity_row(10 + n, retain_until=future) for n in range(3)])

    code, out, _ = run("retention", "status", "--json")
    assert code == 0
    assert json.loads(out)["entities"]["lighting.streetlight"] | {"next": None, "last": None} == {
        "rows": 7, "no_deadline": 0, "expired": 4, "within_1d": 0, "within_7d": 3, "within_30d": 3,
        "within_365d": 3, "later": 0, "next": None, "last": None}

    code, out, _ = run("retention", "sweep", "--dry-run", "--json")
    planned = json.loads(out)
    assert code == 0 and planned["dry_run"] and planned["entities"] == {"lighting.streetlight": 4}
    assert planned["summarized"] == {"lighting.streetlight": 4}  # the shipped policy keeps streetlight aggregates

    code, out, _ = run("retention", "sweep", "--json", "--batch-size", "3")
    done = json.loads(out)
    assert code == 0 and done["entities"] == {"lighting.streetlight": 4} and done["batches"] == 2 + 1 + 1
    assert isinstance(done["audit_seq"], int)
    code, out, _ = run("retention", "sweep")
    assert code == 0 and "0 rows deleted" in out
    code, out, _ = run("audit", "log", "--action", "retention.sweep", "--json")
    assert [e["decision"] for e in json.loads(out)] == ["deleted", "nothing_expired"]


def test_subject_export_and_erase(env: Settings, cli_engine: Engine, tmp_path: Path) -> None:
    mine = stored_observations(env, cli_engine, "R-55812", range(3))
    stored_observations(env, cli_engine, "R-60344", range(10, 12))
    code, out, _ = run("consent", "grant", "--subject", RESIDENT, "--controller", "City Social Care", "--purpose",
                       "care.monitoring", "--collection-method", "paper form", "--json")
    assert code == 0

    target = tmp_path / "export.json"
    code, out, _ = run("subject", "export", "R-55812", "--out", str(target), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["counts"]["entities"] == 3 and summary["counts"]["consents"] == 1
    assert "R-55812" not in out  # stdout names the pseudonym only; the file is the subject's
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    document = json.loads(target.read_text())
    assert [e["data"]["numValue"] for e in document["entities"]] == [o["numValue"] for o in mine]

    code, _, err = run("subject", "erase", "R-55812")
    assert code == 2 and "--yes" in err  # no terminal to ask: refused
    code, out, _ = run("subject", "erase", "R-55812", "--yes", "--json")
    erased = json.loads(out)
    assert code == 0 and erased["entities"] == {"care.observation": 3} and erased["consents_withdrawn"] == 1
    assert erased["key_destroyed"] and erased["subject"] == summary["subject"] and "R-55812" not in out

    code, out, _ = run("subject", "export", "R-55812")
    assert code == 0 and "destroyed" in out and "R-55812" not in out
    code, out, _ = run("audit", "subject", "R-55812", "--json")
    assert code == 0 and {"erasure", "subject.export"} <= {e["action"] for e in json.loads(out)["entries"]}


def test_keys_status_rotate_rewrap(env: Settings, cli_engine: Engine, key_file: Path) -> None:
    originals = stored_observations(env, cli_engine, "R-55812", range(2)) + stored_observations(
        env, cli_engine, "R-60344", range(10, 11))
    FieldProtector.from_settings(env, cli_engine).shred("urn:ngsi-ld:Person:R-60344")

    code, out, _ = run("keys", "status", "--json")
    usage = json.loads(out)
    assert code == 0 and usage["subject_keys"] == {"1": 1} and usage["erased_subjects"] == 1
    assert usage["master"]["current"] == 1 and usage["to_rewrap"] == 0

    code, out, _ = run("keys", "rotate", "--json")
    rotated = json.loads(out)
    assert code == 0 and rotated["version"] == 2 and rotated["active"]
    assert MasterKeys.from_settings(env).versions == (1, 2) and b64(KEY_V1) in key_file.read_text()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and b64(KEY_V1) not in out

    code, out, _ = run("keys", "status", "--json")
    usage = json.loads(out)
    assert usage["master"]["current"] == 2 and usage["to_rewrap"] == sum(usage["stored_keys"].values()) + 1

    code, out, _ = run("keys", "rewrap", "--json")
    report = json.loads(out)
    assert code == 0 and report["rewrapped"] == 1 and report["unusable"] == 0
    assert set(report["remaining"]) == {"2"}
    code, out, _ = run("keys", "status", "--json")
    assert json.loads(out)["retirable"] == [1]

    key_file.write_text("".join(line + "\n" for line in key_file.read_text().splitlines() if line.startswith("v2:")))
    retired = Settings()
    plan = ProtectionPlan.from_schema(default_catalog().get("ResidentObservation"))
    assert plan is not None
    exported = json.loads(run("subject", "export", "R-55812", "--json")[1])
    assert [e["data"]["numValue"] for e in exported["entities"]] == [o["numValue"] for o in originals[:2]]
    assert MasterKeys.from_settings(retired).versions == (2,)
    code, out, _ = run("audit", "log", "--json")
    assert {"keys.rotate", "keys.rewrap"} <= {e["action"] for e in json.loads(out)}


def test_rotating_an_environment_key_needs_a_place_for_the_entry(
    env: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CITYGOV_MASTER_KEY_FILE")
    monkeypatch.setenv("CITYGOV_MASTER_KEY", b64(KEY_V1))
    code, _, err = run("keys", "rotate")
    assert code == 2 and "--out" in err
    entry_file = tmp_path / "entry"
    code, out, _ = run("keys", "rotate", "--out", str(entry_file), "--json")
    assert code == 0 and json.loads(out)["version"] == 2 and not json.loads(out)["active"]
    entry = entry_file.read_text().strip()
    assert entry.startswith("v2:") and entry not in out and stat.S_IMODE(entry_file.stat().st_mode) == 0o600
    monkeypatch.setenv("CITYGOV_MASTER_KEY", f"{entry},v1:{b64(KEY_V1)}")
    assert MasterKeys.from_settings(Settings()).current == 2
