"""``citygov policy …`` end to end: test, eval, revision, bundle, publish, replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from governance.cli.main import app
from governance.policy.bundle import PolicyBundle, load_bundle_dir
from governance.policy.embedded import EmbeddedEngine
from governance.policy.model import DecisionRecord
from governance.policy.point import DecisionPoint
from tests.policies.helpers import copy_policies, representative_inputs

runner = CliRunner()
ROOT = Path(__file__).parents[2]


@pytest.fixture
def data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("CITYGOV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CITYGOV_POLICY_DIR", raising=False)
    monkeypatch.delenv("CITYGOV_POLICY_ENGINE", raising=False)
    return tmp_path


def test_citygov_policy_test_runs_every_rego_test_and_passes() -> None:
    """What CI runs: the real command, in a fresh process."""
    done = subprocess.run([sys.executable, "-m", "governance.cli.main", "policy", "test"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CITYGOV_DATA_DIR": "/nonexistent-not-needed"})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("PASS citygov.collection_test.test_care_observations_need_each_residents_consent")
               for line in lines)
    assert "0 failed, 0 errors" in lines[-1]


def test_policy_test_exits_1_and_names_the_failing_test(data_env: Path) -> None:
    folder = copy_policies(data_env / "policies")
    test_file = folder / "citygov" / "storage" / "storage_test.rego"
    test_file.write_text(test_file.read_text().replace('"days": 30}', '"days": 31}'))
    result = runner.invoke(app, ["policy", "test", "--dir", str(folder), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    failed = [r["name"] for r in report["results"] if r["outcome"] != "pass"]
    assert failed == ["test_raw_care_observations_are_kept_30_days"]


def test_policy_test_refuses_a_test_that_builds_its_input_from_a_local_variable(data_env: Path) -> None:
    folder = copy_policies(data_env / "policies")
    (folder / "citygov" / "use" / "local_test.rego").write_text(
        'package citygov.use_test\n\nimport rego.v1\n\nimport data.citygov.use\n\n'
        'test_local_input if {\n\tinp := {"stage": "use"}\n\tnot use.allow with input as inp\n}\n')
    result = runner.invoke(app, ["policy", "test", "--dir", str(folder), "--json"])
    assert result.exit_code == 1
    [local] = [r for r in json.loads(result.stdout)["results"] if r["name"] == "test_local_input"]
    assert local["outcome"] == "error" and "local variables" in local["detail"]


def test_policy_test_catches_a_decision_the_embedded_engine_would_garble(data_env: Path) -> None:
    folder = copy_policies(data_env / "policies")
    policy = folder / "citygov" / "storage" / "storage.rego"
    source = policy.read_text()
    start = source.index('notes contains common.reason("retention"')
    # sprintf of a string that a builtin computed (object.get's default): regopy emits broken JSON
    policy.write_text(source[:start] + 'notes contains common.reason("retention", sprintf("%s records", [form]))\n')
    result = runner.invoke(app, ["policy", "test", "--dir", str(folder), "--json"])
    assert result.exit_code == 1
    errors = [r for r in json.loads(result.stdout)["results"] if r["outcome"] == "error"]
    assert errors and all("invalid JSON" in r["detail"] for r in errors)
    assert {r["package"] for r in errors} == {"citygov.storage_test"}


def test_policy_eval_prints_the_decision(data_env: Path) -> None:
    path = data_env / "input.json"
    path.write_text(json.dumps({
        "actor": {"kind": "external", "id": "university-mobility-lab"}, "purpose": "research.mobility",
        "dataset": "lighting.traffic-flow", "fields": ["intensity", "location"], "agreement": "dsa-2026-001",
        "context": {"time": "2026-11-20T12:00:00Z"}}))
    result = runner.invoke(app, ["policy", "eval", "--stage", "sharing", "--input", str(path), "--json"])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["allow"] and {"kind": "generalize_location", "field": "location", "grid_m": 250} in decision[
        "obligations"]
    text = runner.invoke(app, ["policy", "eval", "--stage", "sharing", "--input", str(path)])
    assert text.stdout.startswith("allow") and "generalize_location" in text.stdout
    wrong = runner.invoke(app, ["policy", "eval", "--stage", "use", "--input", str(path)])
    assert wrong.exit_code == 0 and wrong.stdout.startswith("deny") and "not_a_department" in wrong.stdout


def test_policy_eval_refuses_a_malformed_input(data_env: Path) -> None:
    path = data_env / "input.json"
    path.write_text(json.dumps({"stage": "use", "actor": {"kind": "robot", "id": "x"}, "dataset": "d",
                                "context": {"time": "2026-11-20T12:00:00Z"}}))
    result = runner.invoke(app, ["policy", "eval", "--stage", "use", "--input", str(path)])
    assert result.exit_code == 2 and "actor.kind" in result.output


def test_policy_revision_bundle_and_publish(data_env: Path, bundle: PolicyBundle) -> None:
    result = runner.invoke(app, ["policy", "revision"])
    assert result.exit_code == 0 and result.stdout.strip() == bundle.revision
    out = data_env / "bundle"
    result = runner.invoke(app, ["policy", "bundle", "--out", str(out)])
    assert result.exit_code == 0 and load_bundle_dir(out).revision == bundle.revision
    assert runner.invoke(app, ["policy", "bundle", "--out", str(out)]).exit_code == 2  # not empty
    result = runner.invoke(app, ["policy", "publish", "--json"])
    assert result.exit_code == 0, result.output
    published = json.loads(result.stdout)
    assert published["revision"] == bundle.revision and published["opa"] is None
    assert (data_env / "data" / "policy-bundles" / bundle.revision / "manifest.json").is_file()


def test_policy_replay_of_a_record_file(data_env: Path, embedded: EmbeddedEngine) -> None:
    assert runner.invoke(app, ["policy", "revision"]).exit_code == 0  # stores the active revision
    records: list[DecisionRecord] = []
    DecisionPoint(embedded, records.append).decide(representative_inputs()[1])
    path = data_env / "record.json"
    path.write_text(records[0].model_dump_json())
    result = runner.invoke(app, ["policy", "replay", "--record", str(path)])
    assert result.exit_code == 0 and result.stdout.startswith("matches")
    forged = json.loads(path.read_text())
    forged["decision"]["allow"] = False
    path.write_text(json.dumps(forged))
    result = runner.invoke(app, ["policy", "replay", "--record", str(path), "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["matches"] is False


def test_policy_replay_of_an_unknown_revision_is_a_usage_error(data_env: Path, embedded: EmbeddedEngine) -> None:
    records: list[DecisionRecord] = []
    DecisionPoint(embedded, records.append).decide(representative_inputs()[0])
    path = data_env / "record.json"
    path.write_text(records[0].model_dump_json())
    result = runner.invoke(app, ["policy", "replay", "--record", str(path)])
    assert result.exit_code == 2 and "no policy bundle" in result.output
