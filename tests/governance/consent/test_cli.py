"""``citygov consent`` end to end: JSON output, receipts on disk, verification and exit codes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from governance.cli.main import app
from tests.governance.protect.support import KEY_V1, b64

runner = CliRunner()
RESIDENT = "urn:ngsi-ld:Person:R-55812"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Path:
    monkeypatch.setenv("CITYGOV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CITYGOV_DATABASE_URL", database_url)
    monkeypatch.setenv("CITYGOV_MASTER_KEY", b64(KEY_V1))
    monkeypatch.setenv("CITYGOV_DEV_MODE", "false")
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["consent", *args])
    return result.exit_code, result.stdout, result.stderr


GRANT = ("grant", "--subject", RESIDENT, "--controller", "City Social Care", "--purpose", "care.alerting",
         "--purpose", "care.wellbeing", "--recipient", "dept:emergency", "--collection-method", "paper form",
         "--legal-basis", "explicit-consent", "--special-category", "health", "--days", "365")


def test_grant_withdraw_show_list_with_json_and_receipts(env: Path) -> None:
    receipt = env / "grant.jws"
    code, out, _ = invoke(*GRANT, "--actor", "clerk:anna", "--receipt-out", str(receipt), "--json")
    assert code == 0
    granted = json.loads(out)
    consent_id = granted["consent"]["consent_id"]
    assert granted["consent"]["subject"].startswith("psn:v1:") and "R-55812" not in out
    assert granted["consent"]["purposes"] == ["care.alerting", "care.wellbeing"]
    assert receipt.read_text().strip() == granted["receipt"]
    assert stat.S_IMODE(receipt.stat().st_mode) == 0o600

    code, out, _ = invoke("verify-receipt", str(receipt), "--json")
    assert code == 0
    verified = json.loads(out)
    assert verified["valid"] and verified["claims"]["citygov"]["consentId"] == consent_id

    code, out, _ = invoke("withdraw", consent_id, "--reason", "moved away", "--receipt-out",
                          str(env / "withdraw.jws"), "--json")
    assert code == 0 and json.loads(out)["consent"]["status"] == "withdrawn"

    code, out, _ = invoke("show", consent_id, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["status_now"] == "withdrawn"
    assert [e["event"] for e in shown["history"]] == ["grant", "withdraw"]
    assert shown["history"][1]["reason"] == "moved away" and shown["history"][1]["actor"].startswith("cli:")

    code, out, _ = invoke("list", "--subject", RESIDENT, "--json")
    assert code == 0 and [c["consent_id"] for c in json.loads(out)] == [consent_id]
    code, out, _ = invoke("list", "--status", "active", "--json")
    assert code == 0 and json.loads(out) == []

    code, out, _ = invoke("show", consent_id)
    assert code == 0 and "withdraw" in out and "moved away" in out


def test_renew_and_text_output(env: Path) -> None:
    code, out, _ = invoke(*GRANT, "--json")
    consent_id = json.loads(out)["consent"]["consent_id"]
    code, out, _ = invoke("renew", consent_id, "--days", "730", "--reason", "annual review")
    assert code == 0 and "renewed consent" in out
    code, _, err = invoke("renew", consent_id)
    assert code == 2 and "--open-ended" in err
    code, out, _ = invoke("list")
    assert code == 0 and consent_id[:8] in out


def test_a_tampered_receipt_exits_5_and_a_pem_verifies_offline(env: Path) -> None:
    receipt = env / "grant.jws"
    assert invoke(*GRANT, "--receipt-out", str(receipt))[0] == 0
    code, out, _ = invoke("public-key", "--json")
    assert code == 0
    [(kid, pem)] = json.loads(out).items()
    assert kid.startswith("citygov-receipt-v1-") and pem.startswith("-----BEGIN PUBLIC KEY-----")
    pem_file = env / "receipts.pem"
    pem_file.write_text(pem)
    code, out, _ = invoke("verify-receipt", str(receipt), "--public-key", str(pem_file))
    assert code == 0 and "valid" in out

    head, body, signature = receipt.read_text().strip().split(".")
    tampered = env / "tampered.jws"
    tampered.write_text(f"{head}.{body[:-3]}xyz.{signature}")
    code, _, err = invoke("verify-receipt", str(tampered))
    assert code == 5 and "VERIFICATION FAILED" in err
    code, _, err = invoke("verify-receipt", str(env / "missing.jws"))
    assert code == 2


def test_usage_errors_exit_2(env: Path) -> None:
    code, _, err = invoke("grant", "--subject", RESIDENT, "--controller", "c", "--purpose", "care.alerting",
                          "--collection-method", "app", "--special-category", "health")
    assert code == 2 and "explicit-consent" in err
    code, _, err = invoke("grant", "--subject", RESIDENT, "--controller", "c", "--purpose", "care.alerting",
                          "--collection-method", "app", "--valid-until", "2027-01-01T00:00:00")
    assert code == 2 and "time zone" in err
    code, _, err = invoke("withdraw", "no-such-consent")
    assert code == 2 and "no consent" in err


def test_without_a_master_key_outside_dev_mode_nothing_starts(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYGOV_MASTER_KEY")
    code, _, err = invoke(*GRANT)
    assert code == 2 and "no master key" in err
    assert not (env / "data" / "keys" / "master.key").exists()
