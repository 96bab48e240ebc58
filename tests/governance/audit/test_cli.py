"""``citygov audit``: the auditor's commands, their output and their exit codes (5 = verification failed)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from governance.audit.log import AuditLog
from governance.audit.tables import ENTRY
from governance.cli.audit import app
from governance.cli.common import EXIT_VERIFICATION_FAILED
from governance.config import Settings
from tests.governance.audit.conftest import AppendBatches, request


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CITYGOV_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CITYGOV_DATABASE_URL", settings.resolved_database_url())
    return CliRunner()


def run(cli: CliRunner, *args: str, code: int = 0) -> str:
    """Standard output (JSON stays parseable: progress and errors go to standard error)."""
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout


def said(cli: CliRunner, *args: str, code: int = 0) -> str:
    """Everything the command printed, with rich's line wrapping undone."""
    result = cli.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return " ".join((result.stdout + result.stderr).split())


def test_log_lists_and_filters_entries(cli: CliRunner, fill: AppendBatches) -> None:
    fill([12])
    listed = orjson.loads(run(cli, "log", "--json", "--actor", "department:energy", "--decision", "allow"))
    assert [e["seq"] for e in listed] == [3, 6, 9]
    by_subject = orjson.loads(run(cli, "log", "--json", "--subject", "R-1"))
    assert [e["seq"] for e in by_subject] == [5]
    by_dataset = orjson.loads(run(cli, "log", "--json", "--dataset", "care.observation", "--since", "2026-11-20"))
    assert [e["seq"] for e in by_dataset] == [2, 5, 8, 11]
    assert "audit log (3 entries)" in said(cli, "log", "--limit", "3")
    assert "give a zone" in said(cli, "log", "--since", "2026-11-20T10:00:00", code=2)


def test_verify_checkpoint_and_since(cli: CliRunner, fill: AppendBatches, audit_log: AuditLog,
                                     tmp_path: Path) -> None:
    fill([5, 5])
    assert "log OK: 10 entries, 2 signed tree heads" in said(cli, "verify")
    saved = tmp_path / "checkpoint.json"
    run(cli, "checkpoint", "--out", str(saved))
    assert orjson.loads(saved.read_bytes())["tree_head"]["tree_size"] == 10
    fill([3])
    out = orjson.loads(run(cli, "verify", "--since", str(saved), "--json"))
    assert out["entries"] == 13 and out["since"]["checkpoint_size"] == 10
    fresh = tmp_path / "fresh.json"
    run(cli, "checkpoint", "--out", str(fresh), "--sign")
    assert orjson.loads(fresh.read_bytes())["tree_head"]["tree_size"] == 13


def test_a_tampered_log_exits_5_and_names_the_entry(cli: CliRunner, fill: AppendBatches, audit_log: AuditLog) -> None:
    fill([8])
    with audit_log.engine.begin() as conn:
        conn.execute(update(ENTRY).where(ENTRY.c.seq == 6).values(entry=b'{"seq":6}'))
    out = said(cli, "verify", code=EXIT_VERIFICATION_FAILED)
    assert "VERIFICATION FAILED" in out and "entry #6 does not match its leaf hash" in out


def test_export_and_verify_bundles(cli: CliRunner, fill: AppendBatches, audit_log: AuditLog, tmp_path: Path) -> None:
    fill([10, 10])
    bundle = tmp_path / "bundle.json"
    run(cli, "export", "--out", str(bundle), "--from", "4", "--to", "12")
    assert "entries #4..#12 are in the signed tree of 20 entries" in said(cli, "verify", "--bundle", str(bundle))
    key = tmp_path / "log.pem"
    key.write_text(run(cli, "key"))
    run(cli, "verify", "--bundle", str(bundle), "--key", str(key))
    document = orjson.loads(bundle.read_bytes())
    document["entries"][1], document["entries"][2] = document["entries"][2], document["entries"][1]
    bundle.write_bytes(orjson.dumps(document))
    out = said(cli, "verify", "--bundle", str(bundle), code=EXIT_VERIFICATION_FAILED)
    assert "the bundle entry at #5 says it is #6: entries were moved, removed or reordered" in out


def test_an_old_bundle_against_a_newer_checkpoint_exits_5(cli: CliRunner, fill: AppendBatches, tmp_path: Path) -> None:
    fill([6])
    old = tmp_path / "old.json"
    run(cli, "export", "--out", str(old))
    fill([2])
    saved = tmp_path / "checkpoint.json"
    run(cli, "checkpoint", "--out", str(saved))
    out = said(cli, "verify", "--bundle", str(old), "--since", str(saved), code=EXIT_VERIFICATION_FAILED)
    assert "an old bundle replayed" in out


def test_subject_report_and_key(cli: CliRunner, audit_log: AuditLog) -> None:
    audit_log.append([request(2, subjects=["urn:ngsi-ld:Person:R-9"]), request(3),
                      request(4, subjects=["urn:ngsi-ld:Person:R-9"], actor="department:emergency")])
    report = orjson.loads(run(cli, "subject", "R-9", "--json"))
    assert report["subject"] == audit_log.pseudonymize("urn:ngsi-ld:Person:R-9")
    assert [e["seq"] for e in report["entries"]] == [0, 2]
    assert report["by_actor"] == {"department:emergency": 1, "department:social-care": 1}
    text = said(cli, "subject", "urn:ngsi-ld:Person:R-9")
    assert "2 events" in text and "R-9" in text
    key = orjson.loads(run(cli, "key", "--json"))
    assert key["key_id"] == audit_log.key_id and key["pem"].startswith("-----BEGIN PUBLIC KEY-----")
