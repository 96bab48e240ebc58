"""The `citygov` command end to end: JSON output, exit codes, quarantine round trip, exports."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from governance.cli.main import app
from tests.governance.ingest.test_pipeline import SAMPLES, capture, care_event

runner = CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Path:
    monkeypatch.setenv("CITYGOV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CITYGOV_DATABASE_URL", database_url)
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def grant_monitoring_consent(*residents: str) -> None:
    """Care observations are collected only with the resident's consent (the collection policy)."""
    for resident in residents:
        code, _ = invoke("consent", "grant", "--subject", f"urn:ngsi-ld:Person:{resident}", "--controller",
                         "social-care", "--purpose", "care.monitoring", "--collection-method", "signed form",
                         "--json")
        assert code == 0


def test_adapters_lists_all_six_with_json() -> None:
    code, out = invoke("adapters", "--json")
    assert code == 0
    names = {row["name"] for row in json.loads(out)}
    assert names == {"streetlight-json", "traffic-counter", "ultralight", "ttn-v3", "department-csv", "care-hub"}


def test_ingest_json_counts_and_strict_exit_code(env: Path) -> None:
    grant_monitoring_consent("R-00001")
    path = capture(env / "care.jsonl", [care_event(1), care_event(2, value="x"), b"\xff"])
    code, out = invoke("ingest", "--adapter", "care-hub", str(path), "--json")
    assert code == 0
    report = json.loads(out)
    assert {k: report[k] for k in ("read", "accepted", "quarantined", "duplicates")} == {
        "read": 3, "accepted": 1, "quarantined": 2, "duplicates": 0}
    assert report["by_reason"] == {"wrong_type": 1, "not_utf8": 1}
    code, out = invoke("ingest", "--adapter", "care-hub", str(path), "--json", "--strict")
    assert code == 0  # everything is a duplicate now: nothing newly quarantined
    assert json.loads(out)["duplicates"] == 3
    other = capture(env / "more.jsonl", [care_event(3, value="y")])
    code, _ = invoke("ingest", "--adapter", "care-hub", str(other), "--strict", "--json")
    assert code == 3


def test_usage_errors_exit_2_with_a_clear_message(env: Path) -> None:
    path = capture(env / "care.jsonl", [care_event(1)])
    result = runner.invoke(app, ["ingest", "--adapter", "nope", str(path)])
    assert result.exit_code == 2
    assert "no adapter named 'nope'" in result.output and "care-hub" in result.output
    bad = env / "bad-config.json"
    bad.write_text('{"sources": {"TC-1": {"zone": "Mars/Base"}}}')
    result = runner.invoke(app, ["ingest", "--adapter", "traffic-counter", "--config", str(bad), str(path)])
    assert result.exit_code == 2
    assert "Mars/Base" in result.output


def test_unreachable_database_exits_4(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CITYGOV_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    path = capture(tmp_path / "care.jsonl", [care_event(1)])
    result = runner.invoke(app, ["ingest", "--adapter", "care-hub", str(path)])
    assert result.exit_code == 4
    assert "unavailable" in result.output


def test_quarantine_list_show_and_retry(env: Path) -> None:
    config = json.loads((SAMPLES / "traffic-counter" / "config.json").read_text())
    config["sources"].pop("TC-18")
    config_path = env / "zones.json"
    config_path.write_text(json.dumps(config))
    message = {"sensor": "TC-18", "from": "2026-11-20T08:00:00", "to": "2026-11-20T08:15:00",
               "pedestrians": {"in": 3, "out": 4}, "vehicles": {"car": 10}, "avg_speed_kmh": 31.0}
    path = capture(env / "tc.jsonl", [message], topic="city/traffic/TC-18")
    code, out = invoke("ingest", "--adapter", "traffic-counter", "--config", str(config_path), str(path), "--json")
    assert json.loads(out)["quarantined"] == 1

    code, out = invoke("quarantine", "list", "--json")
    (row,) = json.loads(out)
    assert row["adapter"] == "traffic-counter" and "payload" not in row
    code, out = invoke("quarantine", "show", str(row["pk"]), "--json")
    shown = json.loads(out)
    assert json.loads(shown["payload"]) == message  # the raw payload, as received

    config_path.write_text((SAMPLES / "traffic-counter" / "config.json").read_text())
    code, out = invoke("quarantine", "retry", "--json")
    assert code == 0 and json.loads(out)["accepted"] == 1
    code, out = invoke("quarantine", "list", "--json")
    assert json.loads(out) == []
    code, out = invoke("quarantine", "list", "--status", "resolved", "--json")
    assert len(json.loads(out)) == 1
    code, _ = invoke("quarantine", "show", "9999")
    assert code == 2


def test_entities_export_in_both_forms(env: Path) -> None:
    grant_monitoring_consent("R-00001")
    path = capture(env / "care.jsonl", [care_event(1), care_event(2, event="fall_detected", value=None)])
    invoke("ingest", "--adapter", "care-hub", str(path))
    code, out = invoke("entities", "--type", "Alert")
    (alert,) = [orjson.loads(line) for line in out.splitlines()]
    assert alert["type"] == "Alert" and alert["category"].startswith("enc:v1:")  # stored sealed
    assert alert["refResident"].startswith("psn:v1:") and "R-00001" not in out
    code, out = invoke("entities", "--type", "Alert", "--reveal")
    (alert,) = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and alert["category"] == "health" and alert["refResident"].startswith("psn:v1:")
    code, out = invoke("entities", "--format", "ngsi-ld")
    normalized = [orjson.loads(line) for line in out.splitlines()]
    assert len(normalized) == 2
    for entity in normalized:
        assert entity["id"].startswith(f"urn:ngsi-ld:{entity['type']}:")
        assert "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld" in entity["@context"]
        assert entity["refResident"]["type"] == "Relationship"
    code, out = invoke("entities", "--provenance", "--type", "ResidentObservation")
    (wrapped,) = [orjson.loads(line) for line in out.splitlines()]
    assert wrapped["provenance"]["adapter"] == "care-hub" and len(wrapped["provenance"]["rawSha256"]) == 64
    code, _ = invoke("entities", "--type", "Unicorn")
    assert code == 2


def test_every_ingest_batch_is_audited_without_personal_values(env: Path) -> None:
    grant_monitoring_consent("R-00001")
    path = capture(env / "care.jsonl", [care_event(1), care_event(2, value="x"), care_event(3, value="y"), b"\xff",
                                        care_event(4), care_event(5)])
    invoke("ingest", "--adapter", "care-hub", str(path))
    code, out = invoke("audit", "log", "--json")
    assert code == 0
    entries = json.loads(out)
    actions = [e["action"] for e in entries]
    # the consent, one policy decision per stage for the batch's one scope (not one per record: collection,
    # then storage), one entry for the batch and one per quarantine reason (wrong_type twice → one entry;
    # no_legal_basis for the two residents without consent → one entry)
    stages = sorted(e["stage"] for e in entries if e["action"] == "policy.decision")
    assert stages == ["collection", "storage"], actions
    assert actions.count("ingest.batch") == 1, actions
    quarantine_reasons = sorted(e["reasons"][0] for e in entries if e["action"] == "ingest.quarantine")
    assert quarantine_reasons == ["no_legal_basis", "not_utf8", "wrong_type"], entries
    text = json.dumps(entries)
    assert "R-00001" not in text and "H-0001" not in text  # residents and hubs never appear in clear
    code, _ = invoke("audit", "verify")
    assert code == 0


def test_a_logged_policy_decision_replays_against_its_revision(env: Path) -> None:
    path = capture(env / "care.jsonl", [care_event(1, event="fall_detected", value=None), care_event(2)])
    invoke("ingest", "--adapter", "care-hub", str(path))
    code, out = invoke("audit", "log", "--json")
    decisions = [e for e in json.loads(out) if e["action"] == "policy.decision"]
    assert decisions and all(e["policy_revision"] for e in decisions)
    assert {e["decision"] for e in decisions} >= {"allow"}
    for entry in decisions:
        code, out = invoke("policy", "replay", str(entry["seq"]), "--json")
        assert code == 0, out
        replay = json.loads(out)
        assert replay["matches"] is True and replay["revision"] == entry["policy_revision"]
    batch = next(e for e in json.loads(invoke("audit", "log", "--json")[1]) if e["action"] == "ingest.batch")
    code, _ = invoke("policy", "replay", str(batch["seq"]))
    assert code == 2  # not a decision: a clear refusal, not a crash
    code, _ = invoke("policy", "replay", "99999")
    assert code == 2


def test_consent_changes_are_audited_without_the_subject_id(env: Path) -> None:
    code, out = invoke("consent", "grant", "--subject", "urn:ngsi-ld:Person:R-77", "--controller", "social-care",
                       "--purpose", "care.monitoring", "--collection-method", "signed form", "--json")
    assert code == 0
    consent_id = json.loads(out)["consent"]["consent_id"]
    code, _ = invoke("consent", "withdraw", consent_id, "--json")
    assert code == 0
    code, out = invoke("audit", "log", "--json")
    changes = [e for e in json.loads(out) if e["action"] == "consent.change"]
    assert [e["decision"] for e in changes] == ["grant", "withdraw"]
    assert all(e["refs"]["consent_id"] == consent_id for e in changes)
    assert "R-77" not in out
    code, _ = invoke("audit", "verify")
    assert code == 0


def test_sealed_quarantine_payloads_are_shown_only_with_reveal_which_is_audited(env: Path) -> None:
    path = capture(env / "care.jsonl", [care_event(1, value="x")])
    invoke("ingest", "--adapter", "care-hub", str(path))
    code, out = invoke("quarantine", "list", "--json")
    (listed,) = json.loads(out)
    code, out = invoke("quarantine", "show", str(listed["pk"]), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["sealed"] is True and shown["payload"] is None and "R-00001" not in out
    code, out = invoke("quarantine", "show", str(listed["pk"]), "--reveal", "--json")
    assert code == 0 and json.loads(json.loads(out)["payload"])["resident"] == "R-00001"
    code, out = invoke("audit", "log", "--json")
    reveals = [e for e in json.loads(out) if e["action"] == "quarantine.reveal"]
    assert len(reveals) == 1 and "R-00001" not in json.dumps(reveals)
